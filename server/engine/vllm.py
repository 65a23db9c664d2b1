"""The one module that imports vLLM's runtime: an ``Engine`` over ``vllm.v1.engine.async_llm.AsyncLLM``.

Requests go through vLLM 0.32's supported input path (no deprecation warnings): ``parse_model_prompt`` →
``renderer.render_cmpl_async`` → ``AsyncLLM.generate``. vLLM's exceptions are mapped to ``server.errors`` here and nowhere
else, most specific first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from server.engine.base import LITERAL_MARKER, EngineRequest, EngineStep, ModelInfo, PromptCount, VisionSpec
from server.engine.tokens import inert_ids
from server.engine.vllm_options import ClientSlot, EngineOptions, engine_args, resolve_reasoning_parser
from server.engine.vllm_output import (
    ChoiceParser,
    OutputParsing,
    ParserNames,
    RequestOutputPlan,
    first_line,
    parse_step,
    validation_error,
)
from server.errors import (
    ContextLengthError,
    EngineError,
    EngineUnavailableError,
    InvalidRequestError,
    ServerError,
    describe_items,
)

logger = logging.getLogger(__name__)


class VllmEngine:
    """``Engine`` over an in-process ``AsyncLLM`` (its engine core runs in a child process unless told otherwise)."""

    def __init__(
        self, llm: Any, info: ModelInfo, wedged_after_s: float = 120.0, parsers: ParserNames | None = None
    ) -> None:
        self._llm = llm
        self._info = info
        # Progress watchdog: with requests in flight, the engine must produce output at least this often.
        self._wedged_after_s = wedged_after_s
        self._active: set[str] = set()
        self._last_progress = time.monotonic()
        self._tokenizer = llm.get_tokenizer()
        self._defaults: dict[str, Any] = dict(llm.model_config.get_diff_sampling_param())
        structured = getattr(getattr(llm, "vllm_config", None), "structured_outputs_config", None)
        compact = bool(getattr(structured, "disable_any_whitespace", False))
        self._output = OutputParsing(self._tokenizer, parsers or ParserNames(), llm.model_config, compact_json=compact)
        self._added_ids = frozenset(self._tokenizer.get_added_vocab().values())

    @classmethod
    def start(cls, options: EngineOptions, wedged_after_s: float = 120.0, slot: ClientSlot | None = None) -> VllmEngine:
        """Start vLLM (blocking: seconds on a CPU, minutes for a large checkpoint on GPUs). With a ``slot``, the engine
        core runs already (the supervisor started it) and this process becomes one of its API clients."""
        if not options.multiprocessing:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        options = resolve_reasoning_parser(options)
        args = engine_args(options)
        if slot is None:
            llm = AsyncLLM.from_engine_args(args)
        else:
            args._api_process_count, args._api_process_rank = slot.count, slot.index
            llm = AsyncLLM.from_vllm_config(
                args.create_engine_config(UsageContext.OPENAI_API_SERVER),
                usage_context=UsageContext.OPENAI_API_SERVER,
                disable_log_stats=args.disable_log_stats,
                client_addresses=dict(slot.addresses),
                client_count=slot.count,
                client_index=slot.index,
            )
        info = ModelInfo(
            name=options.served_model_name,
            path=options.model,
            max_model_len=int(llm.model_config.max_model_len),
            created=int(time.time()),
            is_demo=options.is_demo,
            vision=_vision_spec(llm),
            vocab_size=int(llm.model_config.get_vocab_size()),
            extra={"tool_call_parser": options.tool_call_parser, "reasoning_parser": options.reasoning_parser},
            added_tokens=tuple(llm.get_tokenizer().get_added_vocab()),
        )
        names = ParserNames(tool_call_parser=options.tool_call_parser, reasoning_parser=options.reasoning_parser)
        return cls(llm, info, wedged_after_s, names)

    @property
    def model(self) -> ModelInfo:
        return self._info

    @property
    def sampling_defaults(self) -> Mapping[str, Any]:
        return dict(self._defaults)

    def render_prompt(self, messages: Sequence[Mapping[str, Any]], **template_kwargs: Any) -> str:
        try:
            text = self._tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True, **template_kwargs
            )
        except Exception as exc:  # jinja errors from the checkpoint's template: the conversation cannot be rendered
            logger.info("chat template failed: %s", type(exc).__name__)
            raise InvalidRequestError(
                "the conversation could not be rendered with the model's chat template", param="messages"
            ) from exc
        return str(text)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineStep]:
        from vllm.exceptions import VLLMClientError, VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        started = False
        try:
            plan = self._output.plan(request.output, self._info.name)
            engine_input = await self._render(request)
            prompt_ids = list(engine_input["prompt_token_ids"])
            prompt_len = len(prompt_ids)
            params = self._sampling_params(request, prompt_len, plan)
            image_tokens, video_tokens = _placeholder_tokens(engine_input)
            parsers = [plan.choice_parser(prompt_ids) for _ in range(request.sampling.n)]
            stream = self._llm.generate(
                engine_input,
                params,
                request.request_id,
                priority=request.priority,
                **plan.reasoning_kwargs(prompt_ids),
            )
            if not self._active:
                self._last_progress = time.monotonic()
            self._active.add(request.request_id)
            try:
                async with contextlib.aclosing(stream):
                    async for out in stream:
                        self._last_progress = time.monotonic()
                        started = True
                        yield self._step(out, parsers, request, prompt_len, image_tokens, video_tokens)
            finally:
                self._active.discard(request.request_id)
        except ServerError:
            raise
        except EngineDeadError as exc:
            raise EngineUnavailableError("the inference engine has stopped; retry on another replica") from exc
        except VLLMValidationError as exc:
            raise validation_error(exc, request.output, request.prompt_param) from exc
        except VLLMClientError as exc:
            raise InvalidRequestError(str(exc)) from exc
        except EngineGenerateError as exc:
            raise EngineError("the inference engine failed on this request") from exc
        except (ValueError, TypeError) as exc:
            if started:
                raise EngineError("the inference engine failed on this request") from exc
            # vLLM's input processor validates the sampling parameters (e.g. a logit_bias token outside the vocabulary,
            # a schema the grammar compiler refuses) with plain ValueErrors before the request is queued.
            logger.info("vLLM refused the request: %s", exc)
            raise InvalidRequestError(f"the request was refused by the engine: {first_line(exc)}") from exc

    async def count_prompt(self, request: EngineRequest) -> PromptCount:
        """vLLM's renderer over the request, as ``generate`` runs it, but with its multimodal cache skipped (as vLLM's
        own ``/tokenize`` does): the front end's cache mirrors the engine core's, which never sees this request."""
        from vllm.exceptions import VLLMClientError, VLLMValidationError

        try:
            engine_input = await self._render(request, skip_mm_cache=True)
        except ServerError:
            raise
        except VLLMValidationError as exc:
            raise validation_error(exc, request.output, request.prompt_param) from exc
        except (VLLMClientError, ValueError, TypeError) as exc:
            logger.info("vLLM refused the prompt: %s", exc)
            raise InvalidRequestError(f"the request was refused by the engine: {first_line(exc)}") from exc
        image_tokens, video_tokens = _placeholder_tokens(engine_input)
        return PromptCount(len(engine_input["prompt_token_ids"]), image_tokens, video_tokens)

    def _step(
        self,
        out: Any,
        parsers: list[ChoiceParser],
        request: EngineRequest,
        prompt_len: int,
        image_tokens: int,
        video_tokens: int,
    ) -> EngineStep:
        choices = tuple(
            parse_step(parsers[int(o.index)], o, request.sampling.logprobs, self._tokenizer) for o in out.outputs
        )
        return EngineStep(
            prompt_tokens=prompt_len,
            choices=choices,
            finished=bool(out.finished),
            image_tokens=image_tokens,
            video_tokens=video_tokens,
            cached_tokens=out.num_cached_tokens or 0,
        )

    async def _render(self, request: EngineRequest, skip_mm_cache: bool = False) -> dict[str, Any]:
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        prompt: dict[str, Any] = {"prompt": request.prompt}
        if request.literals:  # tokenized here, so the literals stay text; the renderer then sees the token ids
            prompt = {"prompt_token_ids": await asyncio.to_thread(self._token_ids, request.prompt, request.literals)}
        mm: dict[str, Any] = {}
        if request.images:
            mm["image"] = list(request.images)
        if request.videos:
            mm["video"] = [(v.frames, v.metadata()) for v in request.videos]
        if mm:
            prompt["multi_modal_data"] = mm
        kwargs: dict[str, Any] = {}
        if request.images and request.images_resized:
            kwargs["images_kwargs"] = {"do_resize": False}  # already at their exact Qwen grid
        if request.videos and request.videos_resized:
            kwargs["videos_kwargs"] = {"do_resize": False}
        if kwargs:
            prompt["mm_processor_kwargs"] = kwargs
        uuids: dict[str, list[str]] = {}
        if request.images and len(request.image_uuids) == len(request.images):
            uuids["image"] = list(request.image_uuids)
        if request.videos and len(request.video_uuids) == len(request.videos):
            uuids["video"] = list(request.video_uuids)
        if uuids:
            prompt["multi_modal_uuids"] = uuids
        parsed = parse_model_prompt(self._llm.model_config, prompt)
        try:
            (engine_input,) = await self._llm.renderer.render_cmpl_async([parsed], skip_mm_cache=skip_mm_cache)
        except (ValueError, TypeError) as exc:
            from vllm.exceptions import VLLMClientError

            if isinstance(exc, VLLMClientError):
                raise
            # The HF processor refused the media (e.g. a degenerate size): the request's fault, not the server's.
            logger.info("multimodal processing failed: %s", exc)
            raise InvalidRequestError("the media could not be processed by the model's processor") from exc
        return dict(engine_input)

    def _token_ids(self, prompt: str, literals: Sequence[str]) -> list[int]:
        """The prompt's token ids: the rendered text between markers as the renderer would tokenize it (added tokens
        are the template's own), each literal as plain text (``inert_ids``)."""
        pieces = LITERAL_MARKER.split(prompt)  # text, index, text, index, ..., text
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                try:
                    ids += inert_ids(self._tokenizer, literals[int(piece)], self._added_ids)
                except ValueError as exc:  # a tokenizer whose added token is a single character: no plain form
                    raise InvalidRequestError("the messages spell a token that has no plain-text form") from exc
            elif piece:
                ids += self._tokenizer.encode(piece, add_special_tokens=False)
        return ids

    def _sampling_params(self, request: EngineRequest, prompt_len: int, plan: RequestOutputPlan) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        spec = request.sampling
        room = self._info.max_model_len - prompt_len
        media = f" (media: {describe_items(request.visual_items)})" if request.visual_items else ""
        used = f"the {request.prompt_param} {'uses' if request.prompt_param == 'prompt' else 'use'}"
        if room <= 0:
            raise ContextLengthError(
                f"this model's maximum context length is {self._info.max_model_len} tokens; {used} "
                f"{prompt_len} tokens{media}, leaving no room for a completion",
                param=request.prompt_param,
            )
        max_tokens = spec.max_tokens if spec.max_tokens is not None else room
        if max_tokens > room:
            raise ContextLengthError(
                f"this model's maximum context length is {self._info.max_model_len} tokens; {used} "
                f"{prompt_len} tokens{media} and max_tokens asks for {max_tokens}; at most {room} completion tokens fit",
                param="max_tokens",
            )
        kwargs: dict[str, Any] = {k: v for k, v in self._defaults.items() if k != "max_tokens"}
        for name in (
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "presence_penalty",
            "frequency_penalty",
            "repetition_penalty",
            "seed",
        ):
            value = getattr(spec, name)
            if value is not None:
                kwargs[name] = value
        if spec.stop:
            kwargs["stop"] = list(spec.stop)
        if spec.ignore_eos:
            kwargs["ignore_eos"] = True
        if spec.logprobs is not None:
            kwargs["logprobs"] = spec.logprobs
        if spec.logit_bias:
            vocab = self._info.vocab_size
            outside = [t for t in spec.logit_bias if vocab and not 0 <= t < vocab]
            if outside:
                raise InvalidRequestError(
                    f"logit_bias names token id {outside[0]}, outside the vocabulary (0 to {vocab - 1})",
                    param="logit_bias",
                )
            kwargs["logit_bias"] = dict(spec.logit_bias)
        if plan.structured_outputs is not None:
            kwargs["structured_outputs"] = plan.structured_outputs
        return SamplingParams(n=spec.n, max_tokens=max_tokens, output_kind=RequestOutputKind.DELTA, **kwargs)

    async def check_health(self) -> None:
        if self._llm.errored:
            raise EngineUnavailableError("the inference engine has stopped")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineUnavailableError("the inference engine has stopped") from exc
        stalled = time.monotonic() - self._last_progress
        if self._active and stalled > self._wedged_after_s:
            raise EngineUnavailableError(f"the inference engine made no progress for {stalled:.0f} s")

    async def abort_all(self) -> int:
        ids = list(self._active)
        if ids:
            await self._llm.abort(ids)
        return len(ids)

    async def shutdown(self) -> None:
        llm, self._llm = self._llm, _Closed()
        if not isinstance(llm, _Closed):
            # vLLM closes its engine client before it cancels the task reading the engine's outputs, which then
            # logs "AsyncLLM output_handler failed … EngineDeadError" on a clean stop (every time, for an API
            # process of --api-workers N, whose engine lives on): that task goes first.
            if (handler := getattr(llm, "output_handler", None)) is not None:
                handler.cancel()
                await asyncio.wait([handler], timeout=10)
            await asyncio.to_thread(llm.shutdown)  # blocking: it waits for the engine core process to exit
            # AsyncLLM.__del__ shuts down again when collected, maybe at exit with its modules gone (a TypeError
            # traceback on every Ctrl-C): done already, so that second call does nothing.
            llm.shutdown = lambda *_args, **_kwargs: None


class _Closed:
    """Stands in for the AsyncLLM after shutdown: every use reports the engine as gone."""

    errored = True

    def __getattr__(self, name: str) -> Any:
        raise EngineUnavailableError("the inference engine has been shut down")


def _vision_spec(llm: Any) -> VisionSpec:
    """The checkpoint's vision geometry and default budgets, read from the HF processor vLLM itself uses."""
    try:
        processor = llm.renderer.get_mm_processor().info.get_hf_processor()
    except Exception:  # a text-only checkpoint: media are refused by vLLM anyway
        logger.warning("no multimodal processor found; using Qwen3-VL's default vision geometry")
        return VisionSpec()
    image, video = processor.image_processor, processor.video_processor
    return VisionSpec(
        patch_size=int(image.patch_size),
        merge_size=int(image.merge_size),
        temporal_patch_size=int(image.temporal_patch_size),
        image_min_pixels=int(image.size["shortest_edge"]),
        image_max_pixels=int(image.size["longest_edge"]),
        video_min_pixels=int(video.size["shortest_edge"]),
        video_max_pixels=int(video.size["longest_edge"]),
        video_cap_pixels_per_frame=bool(getattr(video, "cap_pixels_per_frame", False)),
        video_max_tokens_per_frame=int(getattr(video, "max_video_tokens", 768)),
    )


def _placeholder_tokens(engine_input: Mapping[str, Any]) -> tuple[int, int]:
    placeholders = engine_input.get("mm_placeholders") or {}
    counts = [sum(int(p.get_num_embeds()) for p in placeholders.get(kind, [])) for kind in ("image", "video")]
    return counts[0], counts[1]
