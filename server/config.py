"""The server's one typed settings object.

Every field is a CLI flag (``--max-model-len``) and a ``QWEN3VL_*`` environment variable (``QWEN3VL_MAX_MODEL_LEN``);
CLI flags win over the environment, the environment over defaults. The fields are flat on purpose: operators type them as
flags, and ``--max-model-len`` reads better than ``--engine.max-model-len``. They are grouped by prefix and comment, and
the composition root (``server.app``) hands each layer only its own frozen group built from them.

This module imports nothing from the rest of ``server`` (an import-linter contract): it describes the flags, and the
layers' own value types are built from it elsewhere. Profile defaults are merged in by ``server.settings_loader``.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "QWEN3VL_"


class Settings(BaseSettings):
    """qwen3vl-server: an OpenAI-compatible Qwen3-VL server on an in-process vLLM engine."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_hide_none_type=True,
        cli_avoid_json=True,
    )

    # --- HTTP ---------------------------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes in front of one engine core (vLLM's multi-client front end): each has its own event "
        "loop and media workers, and they share the listening socket, the admission limits and the metrics.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="text: human-readable; json: one JSON object per line, plus a JSON access line per request."
    )

    # --- Access and HTTP limits -------------------------------------------------------------------------------------
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys (Authorization: Bearer). Empty: no auth."
    )
    api_key_file: Path | None = Field(
        None,
        description="File with one API key per line (added to --api-keys); blank lines and # comment lines are skipped.",
    )
    open_paths: list[str] = Field(
        default_factory=lambda: ["/health", "/ready", "/startup"],
        description="Routes reachable without a key when auth is on (exact paths); /metrics and /version need a key.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest request body, enforced while reading (413)."
    )
    max_headers: int = Field(100, gt=0, description="Most request headers (431 beyond).")
    max_header_bytes: int = Field(
        32 * 1024, gt=0, description="Largest request head (request line and headers), in bytes (431 beyond)."
    )
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a whole request head, from connecting or from its first byte on a "
        "kept-alive connection (then 408 and close: slowloris).",
    )
    http_body_timeout: float = Field(
        30.0, gt=0, description="Seconds a request body may stall (no byte arriving) before the connection is closed."
    )
    http_max_connections: int = Field(
        1024,
        ge=1,
        description="Most open HTTP connections; a new one beyond gets 503 and is closed (admission's queue is far "
        "smaller: this bounds idle and slow connections).",
    )
    max_body_json_items: int = Field(
        1 << 18,
        gt=0,
        description="Most JSON separators (commas, objects, arrays; counted in the raw body, inside strings too) in a "
        "request body (413 beyond): bounds the JSON parsing done before any field is checked.",
    )
    max_messages: int = Field(1024, ge=1, description="Most messages in a chat request (400 beyond).")
    max_content_parts_per_message: int = Field(
        128, ge=1, description="Most content parts in one message (400 beyond); images and videos are capped apart."
    )
    max_content_parts: int = Field(
        2048,
        ge=1,
        description="Most content parts in a chat request, all messages and kinds together; a string content counts "
        "as one (400 beyond).",
    )
    cors_allow_origins: list[str] = Field(default_factory=list, description="CORS origins; empty: CORS off.")
    playground: bool | None = Field(
        None,
        description="Serve the browser playground at / (its page and assets open without a key). "
        "Unset: on for the embedded demo, off when a --model is given.",
    )

    # --- Admission and deadlines ----------------------------------------------------------------------------------
    admission_max_running: int = Field(64, ge=1, description="Requests admitted at once (the rest wait or get 429).")
    admission_max_queued: int = Field(256, ge=0, description="Requests waiting for admission (beyond: 429 at once).")
    admission_max_running_tokens: int | None = Field(
        None,
        gt=0,
        description="Estimated tokens (visual + prompt + max_tokens) admitted at once; default 16 × context.",
    )
    admission_max_wait: float = Field(30.0, gt=0, description="Seconds a request may wait for admission (then 429).")
    request_timeout: float | None = Field(
        600.0, gt=0, description="Deadline per request in seconds (504); X-Request-Timeout may ask for less."
    )
    drain_timeout: float = Field(30.0, ge=0, description="Seconds in-flight requests may finish after SIGTERM.")
    engine_health_interval: float = Field(1.0, gt=0, description="Seconds between engine health checks (watchdog).")
    engine_wedged_after: float = Field(
        120.0, gt=0, description="With requests in flight, seconds without engine output before it counts as wedged."
    )

    # --- Model --------------------------------------------------------------------------------------------------------
    profile: str | None = Field(
        None,
        description="A named H100 configuration (see `qwen3vl-offline profile list`); flags and env still override it.",
    )
    model: str | None = Field(
        None, description="Checkpoint directory or hub id. Unset: the embedded tiny random-weight demo model."
    )
    served_model_name: str | None = Field(None, description="Model id in the API (default: the model path's name).")
    tiny_moe: bool = Field(False, description="With no --model, serve the MoE variant of the tiny demo model.")
    tiny_thinking: bool = Field(
        False, description="With no --model, serve the Thinking variant of the tiny demo model (reasoning_content)."
    )
    cache_dir: Path | None = Field(
        None, description="Where the tiny demo model is built (default ~/.cache/qwen3vl-server)."
    )

    # --- Engine (passed through to vLLM) ------------------------------------------------------------------------------
    max_model_len: int | None = Field(None, gt=0, description="Context length (prompt + completion) in tokens.")
    dtype: str = Field("auto", description="Weights/activations dtype (auto, bfloat16, float16, float32).")
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int | None = Field(None, gt=0, description="Most sequences the engine schedules at once.")
    kv_cache_memory_bytes: int | None = Field(
        None,
        gt=0,
        description="KV cache size in bytes (overrides --gpu-memory-utilization; on CPU, VLLM_CPU_KVCACHE_SPACE).",
    )
    limit_mm_per_prompt: dict[str, int] = Field(
        default_factory=lambda: {"image": 8, "video": 2},
        description='Most images/videos per request, e.g. \'{"image": 8, "video": 2}\'.',
    )
    enforce_eager: bool = Field(False, description="Disable CUDA graphs / torch.compile.")
    trust_remote_code: bool = False
    seed: int = 0
    engine_multiprocessing: bool = Field(
        True, description="Run the engine core in its own process (keeps the event loop free). Off: one process."
    )
    engine_extra: dict[str, Any] = Field(
        default_factory=dict,
        description='Further vLLM AsyncEngineArgs, as JSON (e.g. \'{"mm_encoder_tp_mode": "data"}\').',
    )
    warmup: bool = Field(True, description="Run an image request at start-up before /ready answers 200.")

    # --- Output parsing and structured outputs (vLLM's own parsers and grammars) ------------------------------------
    tool_call_parser: str = Field(
        "hermes", description="vLLM tool-call parser for tools/tool_choice (Qwen3-VL: hermes); 'none' turns tools off."
    )
    reasoning_parser: str = Field(
        "auto",
        description="vLLM reasoning parser for reasoning_content; auto: qwen3 when the chat template opens <think>.",
    )
    structured_outputs_backend: Literal["xgrammar", "guidance"] = Field(
        "xgrammar", description="Grammar backend for response_format and forced tool calls."
    )
    structured_outputs_compact: bool = Field(
        True,
        description="Grammars allow no free whitespace in JSON, so a weak model cannot pad an answer until max_tokens.",
    )
    max_tool_calls: int = Field(
        8,
        ge=1,
        le=128,
        description="Most tool calls in one answer with parallel_tool_calls (tool_choice required: the grammar's bound).",
    )

    # --- Stored responses (the Responses API's store and previous_response_id) ------------------------------------
    responses_store: bool = Field(
        True,
        description="Keep responses created with store=true (the API's default) for GET /v1/responses/{id} and "
        "previous_response_id; off: nothing is written and previous_response_id is a 400.",
    )
    responses_store_path: Path | None = Field(
        None,
        description="The SQLite file of stored responses (default $XDG_STATE_HOME/qwen3vl-server/responses.sqlite3, "
        "i.e. ~/.local/state/...); API processes of one server share it.",
    )
    responses_retention_hours: float = Field(
        720, gt=0, description="Stored responses older than this are gone (OpenAI keeps them 30 days)."
    )
    responses_store_max_bytes: int = Field(
        1 << 30, ge=1 << 20, description="Most bytes of stored responses; the oldest go first beyond it."
    )

    # --- Files and batches (OpenAI's Files and Batch APIs, run beside live traffic) ---------------------------------
    batches: bool = Field(
        True, description="Serve /v1/files and /v1/batches and run batch lines at a lower engine priority."
    )
    batch_store_path: Path | None = Field(
        None,
        description="The SQLite file of files, batches and their lines (default "
        "$XDG_STATE_HOME/qwen3vl-server/batches.sqlite3); API processes of one server share it.",
    )
    batch_database_url: SecretStr | None = Field(
        None,
        description="postgresql://... : files and batches in PostgreSQL, shared by every replica (lines claimed with "
        "FOR UPDATE SKIP LOCKED and leases), instead of the SQLite file. Never logged.",
    )
    batch_max_running: int = Field(
        4, ge=1, le=1024, description="Most batch lines in the engine at once, server-wide (live requests go first)."
    )
    batch_lease: float = Field(
        60,
        ge=2,
        le=3600,
        description="Seconds a running batch line stays its worker's without a renewal; a line whose worker died "
        "(a killed process) is taken again after this.",
    )
    batch_max_file_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="Largest batch input file upload.")
    batch_max_lines: int = Field(50_000, ge=1, description="Most lines (requests) in one batch input file.")
    batch_retention_hours: float = Field(
        720, gt=0, description="Files, and batches that have ended, older than this are removed."
    )
    batch_storage_per_key_bytes: int = Field(
        10 << 30,
        ge=1 << 20,
        description="Most bytes of files (uploads and batch outputs) one API key keeps; an upload beyond it is a 400.",
    )

    # --- Media --------------------------------------------------------------------------------------------------------
    media_max_image_bytes: int = Field(20 * 1024 * 1024, gt=0, description="Largest image accepted, in bytes.")
    media_max_video_bytes: int = Field(200 * 1024 * 1024, gt=0, description="Largest video accepted, in bytes.")
    media_fetch_timeout: float = Field(10.0, gt=0, description="Seconds allowed for one media fetch.")
    media_video_fps: float = Field(2.0, gt=0, description="Frames sampled per second of video (Qwen default 2).")
    media_max_video_frames: int = Field(64, ge=2, description="Most frames sampled from one video.")
    media_decode_threads: int = Field(
        2, ge=1, description="Threads that hash and base64-decode media off the event loop (decoding is in workers)."
    )
    media_decode_workers: int = Field(
        2, ge=1, description="Sandboxed processes that decode images and videos (started before /ready turns 200)."
    )
    media_decode_timeout: float = Field(
        60.0, gt=0, description="Seconds one decode job may take; beyond, its worker is killed (400 media_timeout)."
    )
    media_decode_worker_memory_bytes: int = Field(
        3 * 1024**3, gt=0, description="Memory limit of each decode worker (RLIMIT_DATA); beyond: 400 media_too_large."
    )
    media_decode_output_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Largest decoded item (RGB at its target grid; shared with its worker)."
    )
    media_decode_budget_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Estimated decoded bytes in flight across all decode jobs (from headers); beyond, jobs queue.",
    )
    media_decode_sandbox: bool = Field(
        True,
        description="Decode workers lock themselves in with seccomp (no sockets, no file opens); off only for kernels "
        "without seccomp.",
    )
    media_max_video_frame_pixels: int = Field(
        7680 * 4320, gt=0, description="Largest video frame accepted, in pixels (from the stream header)."
    )
    media_max_video_source_fps: float = Field(
        480.0, gt=0, description="Highest frame rate a video's header may declare."
    )
    media_max_video_source_frames: int = Field(500_000, gt=0, description="Most frames a video's header may declare.")
    media_max_image_source_pixels: int = Field(
        8192 * 8192, gt=0, description="Largest image accepted, in pixels of the source (checked from its header)."
    )
    media_max_video_duration: float = Field(3600.0, gt=0, description="Longest video accepted, in seconds.")
    media_image_max_pixels: int = Field(
        16384 * 32 * 32,
        gt=0,
        description="Ceiling of an image's pixel budget after resizing (per-item max_pixels clamp).",
    )
    media_cache_bytes: int = Field(
        128 * 1024 * 1024, ge=0, description="Memory for prepared (decoded, resized) media, by content and budget."
    )
    media_fetch_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, description="Memory for fetched media bytes, by URL.")
    media_fetch_cache_ttl: float = Field(300.0, ge=0, description="Seconds a fetched URL's bytes are reused.")
    media_video_total_pixels: int = Field(
        24576 * 32 * 32,
        gt=0,
        description="Ceiling of a video's total pixel budget over all frames (total_pixels clamp).",
    )
    media_allowed_networks: list[str] = Field(
        default_factory=list,
        description="Non-public networks (CIDRs, e.g. 10.42.0.0/16 for an in-cluster object store) media URLs may reach. "
        "Loopback, link-local/metadata, unspecified and multicast addresses stay refused whatever the list says.",
    )
    media_allow_loopback: bool = Field(
        False,
        description="Development and tests only: lets media URLs reach this machine's loopback addresses; "
        "link-local/metadata and unspecified addresses stay refused.",
    )
    media_allowed_domains: list[str] = Field(
        default_factory=list, description="If set, media hosts must match one (example.com also matches subdomains)."
    )
    media_denied_domains: list[str] = Field(default_factory=list, description="Media hosts that are always refused.")
    media_file_root: Path | None = Field(
        None, description="Allow file:// media URLs below this folder (off by default)."
    )
    media_max_redirects: int = Field(3, ge=0, le=10, description="Redirect hops a media fetch may follow.")
    media_max_concurrent_fetches: int = Field(32, ge=1, description="Media fetches in flight across all requests.")
    media_fetches_per_request: int = Field(4, ge=1, description="Media fetches in flight for one request.")

    @field_validator("limit_mm_per_prompt")
    @classmethod
    def _known_modalities(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {"image", "video"}
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; use 'image' and 'video'")
        if any(v < 0 for v in value.values()):
            raise ValueError("limits must be >= 0")
        return value

    @field_validator("media_allowed_networks")
    @classmethod
    def _cidr_networks(cls, value: list[str]) -> list[str]:
        """The format is checked here, as the flag is read; the ranges that stay refused whatever the list says are
        the fetcher's rule (``server.media.netguard``), checked when the app builds its fetch policy at start."""
        return [str(_cidr(entry)) for entry in value]

    @property
    def uses_tiny_model(self) -> bool:
        return self.model is None

    @property
    def playground_enabled(self) -> bool:
        """``--playground`` as set, else on only for the embedded demo model."""
        return self.uses_tiny_model if self.playground is None else self.playground

    @property
    def responses_store_file(self) -> Path:
        if self.responses_store_path is not None:
            return self.responses_store_path
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "qwen3vl-server" / "responses.sqlite3"

    @property
    def batch_store_file(self) -> Path:
        if self.batch_store_path is not None:
            return self.batch_store_path
        return self.responses_store_file.with_name("batches.sqlite3")

    def all_api_keys(self) -> tuple[str, ...]:
        keys = [k for k in self.api_keys if k]
        if self.api_key_file is not None:
            lines = (line.strip() for line in self.api_key_file.read_text().splitlines())
            keys += [line for line in lines if line and not line.startswith("#")]
        return tuple(keys)


def _cidr(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{entry!r} is not a network in CIDR notation (e.g. 10.42.0.0/16): {exc}") from exc
