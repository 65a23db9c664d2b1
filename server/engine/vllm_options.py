"""What vLLM is started with: ``EngineOptions`` (built from Settings by the app), the ``AsyncEngineArgs`` they make, and
the reasoning parser ``auto`` resolves to. vLLM is imported only inside the functions (nothing at import time)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """What the adapter needs to start vLLM (built from Settings by the app)."""

    model: str
    served_model_name: str
    is_demo: bool = False
    max_model_len: int | None = None
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    kv_cache_memory_bytes: int | None = None
    limit_mm_per_prompt: Mapping[str, int] | None = None
    enforce_eager: bool = False
    trust_remote_code: bool = False
    seed: int = 0
    multiprocessing: bool = True
    tool_call_parser: str | None = "hermes"  # vLLM's name; Qwen3-VL writes hermes-style <tool_call> JSON blocks
    reasoning_parser: str | None = "auto"  # auto: qwen3 when the chat template opens <think> (Thinking checkpoints)
    structured_outputs_backend: str = "xgrammar"
    compact_json: bool = True  # grammars allow no free whitespace in JSON (a weak model cannot pad until max_tokens)
    extra: Mapping[str, Any] | None = None


def engine_args(options: EngineOptions) -> Any:
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    kwargs: dict[str, Any] = {
        "model": options.model,
        "served_model_name": [options.served_model_name],
        "dtype": options.dtype,
        "tensor_parallel_size": options.tensor_parallel_size,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "enforce_eager": options.enforce_eager,
        "trust_remote_code": options.trust_remote_code,
        "seed": options.seed,
        # Live requests (priority 0) are scheduled before batch lines (server.api.batch_lines.BATCH_PRIORITY).
        "scheduling_policy": "priority",
    }
    if options.max_model_len is not None:
        kwargs["max_model_len"] = options.max_model_len
    if options.max_num_seqs is not None:
        kwargs["max_num_seqs"] = options.max_num_seqs
    if options.kv_cache_memory_bytes is not None:
        kwargs["kv_cache_memory_bytes"] = options.kv_cache_memory_bytes
    if options.limit_mm_per_prompt is not None:
        kwargs["limit_mm_per_prompt"] = dict(options.limit_mm_per_prompt)
    if not options.multiprocessing:
        kwargs["distributed_executor_backend"] = "uni"
    structured: dict[str, Any] = {
        "backend": options.structured_outputs_backend,
        "disable_any_whitespace": options.compact_json,
    }
    if options.reasoning_parser not in (None, "auto"):
        # The grammar of a structured output starts after the reasoning, as vLLM decides with this parser.
        structured["reasoning_parser"] = options.reasoning_parser
    # An object, not a dict: vLLM writes a profile's engine-level reasoning_parser into it (a dict breaks engine start).
    kwargs["structured_outputs_config"] = StructuredOutputsConfig(**structured)
    kwargs.update(options.extra or {})
    return AsyncEngineArgs(**kwargs)


def resolve_reasoning_parser(options: EngineOptions) -> EngineOptions:
    """``auto``: vLLM's ``qwen3`` reasoning parser when the checkpoint's chat template opens a ``<think>`` block for
    the answer (the Qwen3-VL Thinking editions), none otherwise."""
    if options.reasoning_parser != "auto":
        return options
    from vllm.tokenizers import get_tokenizer

    tokenizer = get_tokenizer(options.model, trust_remote_code=options.trust_remote_code)
    try:
        prompt = str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
            )
        )
    except Exception:  # no usable chat template: nothing to detect
        prompt = ""
    thinking = prompt.rstrip().endswith("<think>")
    logger.info("reasoning parser: %s", "qwen3 (the chat template opens <think>)" if thinking else "none")
    return replace(options, reasoning_parser="qwen3" if thinking else None)


@dataclass(frozen=True)
class ClientSlot:
    """This process's place among several API processes in front of one engine core, as vLLM's own
    ``--api-server-count`` wires them (``vllm.v1.utils.APIServerProcessManager``): the transport it was handed
    (``input_address``, ``output_address``, their bound listeners, maybe ``stats_update_address``/``tensor_queue``)
    and ``client_count``/``client_index``."""

    addresses: Mapping[str, Any]
    count: int
    index: int
