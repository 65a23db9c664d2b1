"""``create_app(settings, engine=None)``: the one place where concrete classes are wired together.

Nothing is created at import time. With no engine given, the app starts vLLM itself in the background during its
lifespan, so ``/health`` answers (200 "starting") while a large model loads and ``/ready`` turns 200 only after the
engine is up and the warm-up request has completed. A given engine (tests, fakes) is used as is and not shut down.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from server import lifecycle
from server.api import batches, chat, completions, files, health, metrics, models, playground, responses
from server.api import errors as error_handlers
from server.api.guard import GuardConfig, GuardMiddleware
from server.api.metrics import GatewayMetrics, MetricsMiddleware
from server.api.state import AppState
from server.config import Settings
from server.engine.base import Engine
from server.media import budget
from server.media.fetch import Fetcher, FetchPolicy, make_client
from server.media.limits import MediaLimits
from server.media.loader import MediaLoader
from server.media.netguard import parse_allowed_network
from server.media.pool import DecodePool, PoolConfig
from server.schemas import openapi
from server.schemas.chat import ShapeLimits
from server.schemas.chat_response import ChatCompletionChunk
from server.schemas.completions import CompletionChunk
from server.service.admission import Admission, AdmissionLimits
from server.service.chat import ChatService
from server.service.completions import CompletionService
from server.service.fleet import Phase, Seat
from server.service.response_store import ResponseStore, StoreConfig
from server.service.runner import GenerationRunner
from server.service.warmup import warm_up

if TYPE_CHECKING:
    from server.engine.vllm_options import ClientSlot, EngineOptions

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


@dataclass(frozen=True)
class Attached:
    """An API process among several in front of one engine core that a supervisor started (``--api-workers``): its
    seat in the fleet, its place among vLLM's clients, and the engine options the supervisor resolved (model path,
    served name, reasoning parser) so every process serves the same."""

    seat: Seat
    slot: ClientSlot
    options: EngineOptions


def create_app(settings: Settings, engine: Engine | None = None, attached: Attached | None = None) -> FastAPI:
    state = AppState(settings=settings, metrics=GatewayMetrics(), seat=attached.seat if attached else None)
    policy = fetch_policy(settings)  # a refused --media-allowed-networks entry fails the start here, not a request
    app = FastAPI(title="qwen3vl-server", version="0.1.0", lifespan=_lifespan(state, policy, engine, attached))
    app.state.qwen3vl = state
    routers = (chat.router, responses.router, completions.router, files.router, batches.router)
    for router in (*routers, models.router, health.router, metrics.router):
        app.include_router(router)
    if settings.playground_enabled:  # a page and its assets, open without a key; its API calls still need one
        app.include_router(playground.router)
    _add_middleware(app, state)
    error_handlers.install(app)

    def describe() -> dict[str, Any]:  # FastAPI's document, finished once: see server.schemas.openapi
        if app.openapi_schema is None:
            app.openapi_schema = openapi.finish(
                FastAPI.openapi(app), extra_models=[ChatCompletionChunk, CompletionChunk]
            )
        return app.openapi_schema

    app.openapi = describe  # type: ignore[method-assign]
    return app


def fetch_policy(settings: Settings) -> FetchPolicy:
    """Where media fetches may go. ``--media-allowed-networks`` was checked for CIDR form as it was read; the ranges
    that stay refused whatever the list says (loopback, link-local/metadata, unspecified) are the fetcher's own rule,
    checked here, so a bad entry fails the start with a ValueError that names the flag."""
    try:
        networks = tuple(parse_allowed_network(entry) for entry in settings.media_allowed_networks)
    except ValueError as exc:
        raise ValueError(f"--media-allowed-networks: {exc}") from exc
    return FetchPolicy(
        max_redirects=settings.media_max_redirects,
        allowed_networks=networks,
        allow_loopback=settings.media_allow_loopback,
        allowed_domains=tuple(settings.media_allowed_domains),
        denied_domains=tuple(settings.media_denied_domains),
        file_root=settings.media_file_root,
        max_concurrency=settings.media_max_concurrent_fetches,
    )


def decode_pool_config(settings: Settings) -> PoolConfig:
    return PoolConfig(
        workers=settings.media_decode_workers,
        job_timeout_s=settings.media_decode_timeout,
        memory_bytes=settings.media_decode_worker_memory_bytes,
        input_bytes=max(settings.media_max_image_bytes, settings.media_max_video_bytes),
        output_bytes=settings.media_decode_output_bytes,
        budget_bytes=settings.media_decode_budget_bytes,
        sandbox=settings.media_decode_sandbox,
    )


def media_limits(settings: Settings) -> MediaLimits:
    return MediaLimits(
        max_image_bytes=settings.media_max_image_bytes,
        max_video_bytes=settings.media_max_video_bytes,
        fetch_timeout_s=settings.media_fetch_timeout,
        max_video_frames=settings.media_max_video_frames,
        video_fps=settings.media_video_fps,
        max_images_per_request=settings.limit_mm_per_prompt.get("image", 8),
        max_videos_per_request=settings.limit_mm_per_prompt.get("video", 2),
        decode_threads=settings.media_decode_threads,
        fetches_per_request=settings.media_fetches_per_request,
        max_source_pixels=settings.media_max_image_source_pixels,
        max_video_duration_s=settings.media_max_video_duration,
        image_max_pixels=settings.media_image_max_pixels,
        video_total_pixels=settings.media_video_total_pixels,
        prepared_cache_bytes=settings.media_cache_bytes,
        fetch_cache_bytes=settings.media_fetch_cache_bytes,
        fetch_cache_ttl_s=settings.media_fetch_cache_ttl,
        max_video_frame_pixels=settings.media_max_video_frame_pixels,
        max_video_source_fps=settings.media_max_video_source_fps,
        max_video_source_frames=settings.media_max_video_source_frames,
    )


def _lifespan(state: AppState, policy: FetchPolicy, engine: Engine | None, attached: Attached | None) -> Lifespan:
    """Start-up and shutdown: the media stage, then the engine in the background (or the given one at once)."""
    settings = state.settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor = ThreadPoolExecutor(settings.media_decode_threads, thread_name_prefix="media-decode")
        client = make_client(settings.media_fetch_timeout)
        pool = DecodePool(decode_pool_config(settings), state.metrics.media)
        media = MediaLoader(media_limits(settings), Fetcher(policy, client), executor, pool, state.metrics.media)
        if engine is not None:  # a given engine serves from the first request; only the warm-up runs in the background
            _serve_with(state, engine, media)
        await asyncio.to_thread(budget.preload)
        state.responses_store = await _open_store(settings)
        batch_worker = await batches.start_batches(state)
        starter = asyncio.create_task(_bring_up(state, media, engine, attached), name="engine-start")
        guard_dog = asyncio.create_task(
            lifecycle.watchdog(state, settings.engine_health_interval), name="engine-watchdog"
        )
        try:
            yield
        finally:
            for task in (starter, guard_dog, *((batch_worker,) if batch_worker else ())):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            if engine is None and state.engine is not None:
                await state.engine.shutdown()
            await client.aclose()
            await pool.close()
            for store in (state.responses_store, state.batch_store):
                if store is not None:
                    await store.close()
            executor.shutdown(wait=False, cancel_futures=True)

    return lifespan


async def _open_store(settings: Settings) -> ResponseStore | None:
    """The stored-responses database, or None with ``--no-responses-store``; one that cannot open fails the start."""
    if not settings.responses_store:
        return None
    config = StoreConfig(
        path=settings.responses_store_file,
        retention_s=settings.responses_retention_hours * 3600,
        max_bytes=settings.responses_store_max_bytes,
        max_history_bytes=settings.max_body_bytes,  # a conversation replayed is no larger than one body sent whole
    )
    store = ResponseStore(config)
    try:
        await store.open()
    except (OSError, sqlite3.Error) as exc:
        await store.close()
        raise RuntimeError(f"--responses-store-path {config.path}: {exc} (or --no-responses-store)") from exc
    return store


def _add_middleware(app: FastAPI, state: AppState) -> None:
    """The guard (keys, sizes, shapes, draining), CORS if asked for, and metrics (outermost, with the JSON access log)."""
    settings = state.settings
    api_keys = settings.all_api_keys()
    log_exposure(settings, api_keys)
    guard = GuardConfig(
        api_keys=api_keys,
        open_paths=frozenset(settings.open_paths) | (playground.PATHS if settings.playground_enabled else frozenset()),
        max_body_bytes=settings.max_body_bytes,
        max_headers=settings.max_headers,
        max_header_bytes=settings.max_header_bytes,
        max_body_json_items=settings.max_body_json_items,
        shape=ShapeLimits(settings.max_messages, settings.max_content_parts_per_message, settings.max_content_parts),
        body_paths=frozenset(r.path for r in app.routes if isinstance(r, APIRoute) and "POST" in r.methods),
        # The multipart envelope around a batch file: its headers and boundaries, well under 64 KiB.
        upload_paths={files.FILES: settings.batch_max_file_bytes + 65536},
    )
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["authorization", "content-type", "x-request-id"],
        )
    app.add_middleware(
        GuardMiddleware, config=guard, is_draining=lambda: state.draining, engine_failed=lambda: state.failed
    )
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, access_log=settings.log_format == "json")


def log_exposure(settings: Settings, api_keys: tuple[str, ...]) -> None:
    """Warn at start about settings that open more than they should in production."""
    if not api_keys and not _is_loopback_host(settings.host):
        logger.warning(
            "listening on %s with no API keys: anyone who can reach it can use the model and read /metrics and "
            "/version; set --api-keys or --api-key-file",
            settings.host,
        )
    if settings.media_allow_loopback:
        logger.warning(
            "--media-allow-loopback is on: media URLs may reach this machine's loopback addresses "
            "(for development and tests only)"
        )


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name (it may resolve to anything), or an empty host: every interface


def _serve_with(state: AppState, engine: Engine, media: MediaLoader) -> None:
    settings = state.settings
    limits = AdmissionLimits(
        max_running=settings.admission_max_running,
        max_queued=settings.admission_max_queued,
        max_running_tokens=settings.admission_max_running_tokens or 16 * engine.model.max_model_len,
        max_wait_s=settings.admission_max_wait,
    )
    ledger = (
        state.seat.fleet.ledger if state.seat is not None else None
    )  # the whole server's limits, not this process's
    state.admission = Admission(limits, state.metrics.admission, ledger)
    state.engine = engine
    runner = state.runner = GenerationRunner(engine, state.admission, state.metrics.generation)
    state.chat = ChatService(runner, media, settings.max_tool_calls)
    state.completions = CompletionService(runner)


async def _bring_up(state: AppState, media: MediaLoader, given: Engine | None, attached: Attached | None) -> None:
    try:
        if given is None:
            # The decode workers first (a second or so): a kernel without seccomp fails the start, not a request.
            await media.pool.start()
            engine = await asyncio.to_thread(_start_vllm, state.settings, attached)
            _serve_with(state, engine, media)
        else:
            engine = given
        state.set_phase(Phase.STARTED)
        if state.settings.warmup:
            await warm_up(engine, with_video=media.limits.max_videos_per_request > 0)
        state.ready = True
        state.set_phase(Phase.READY)
        logger.info("ready: serving model '%s'", engine.model.name)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        state.start_error = type(exc).__name__
        state.set_phase(Phase.FAILED)
        logger.exception("the engine failed to start")
    finally:
        state.starting = False


def _start_vllm(settings: Settings, attached: Attached | None = None) -> Engine:
    from server.engine.vllm import VllmEngine

    if attached is not None:
        return VllmEngine.start(attached.options, wedged_after_s=settings.engine_wedged_after, slot=attached.slot)
    return VllmEngine.start(resolve_options(settings), wedged_after_s=settings.engine_wedged_after)


def resolve_options(settings: Settings) -> EngineOptions:
    """The engine options for these settings, the embedded demo checkpoint built (once, cached) if no model is given."""
    from offline import tiny

    if settings.model is None:
        path = tiny.cached_checkpoint(settings.cache_dir, moe=settings.tiny_moe, thinking=settings.tiny_thinking)
        model, is_demo = str(path), True
        logger.warning(
            "No --model given: serving the embedded tiny RANDOM-WEIGHT Qwen3-VL demo model (%s). Its answers are "
            "gibberish; pass --model with a real checkpoint for real answers.",
            path.name,
        )
    else:
        model, is_demo = settings.model, False
    return engine_options(settings, model, is_demo=is_demo)


def _default_name(model: str, *, is_demo: bool, settings: Settings) -> str:
    if is_demo:
        from offline.tiny import TinySpec

        return TinySpec(moe=settings.tiny_moe, thinking=settings.tiny_thinking).name
    local = Path(model)
    # A local checkpoint is named by its folder; a hub id keeps its full "org/name" form, as vLLM does.
    return local.resolve().name if local.exists() else model


def engine_options(settings: Settings, model: str, *, is_demo: bool = False) -> EngineOptions:
    """The engine arguments a Settings object asks for (also what the profile tests hand to vLLM's own parser)."""
    from server.engine.vllm_options import EngineOptions

    name = settings.served_model_name or _default_name(model, is_demo=is_demo, settings=settings)
    return EngineOptions(
        model=model,
        served_model_name=name,
        is_demo=is_demo,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
        tensor_parallel_size=settings.tensor_parallel_size,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        max_num_seqs=settings.max_num_seqs,
        kv_cache_memory_bytes=settings.kv_cache_memory_bytes,
        limit_mm_per_prompt=settings.limit_mm_per_prompt,
        enforce_eager=settings.enforce_eager,
        trust_remote_code=settings.trust_remote_code,
        seed=settings.seed,
        multiprocessing=settings.engine_multiprocessing,
        tool_call_parser=None if settings.tool_call_parser == "none" else settings.tool_call_parser,
        reasoning_parser=None if settings.reasoning_parser == "none" else settings.reasoning_parser,
        structured_outputs_backend=settings.structured_outputs_backend,
        compact_json=settings.structured_outputs_compact,
        extra=settings.engine_extra,
    )
