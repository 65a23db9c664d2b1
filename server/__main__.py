"""``qwen3vl-server``: run the server, or build the tiny demo checkpoint.

qwen3vl-server [--model M] [--host H] [--port P] [--served-model-name NAME] [...]   serve (see --help)
qwen3vl-server tiny-model OUT_DIR [--moe] [--thinking]                             write the tiny checkpoint
qwen3vl-server profile list | show NAME | verify NAME                                          the named H100 configurations
qwen3vl-server plan --profile NAME [--config PATH] [--json]                        memory arithmetic of a profile
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from server import lifecycle, logs
from server.api.http_protocol import HttpLimits, limited_h11
from server.api.state import AppState


def _tiny_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="qwen3vl-server tiny-model", description="Build the tiny random-weight Qwen3-VL checkpoint offline."
    )
    parser.add_argument("out_dir", type=Path, help="Directory to write the checkpoint to (replaced if it exists).")
    parser.add_argument("--moe", action="store_true", help="Build the MoE variant (4 experts, top-2).")
    parser.add_argument(
        "--thinking",
        action="store_true",
        help="Build the Thinking edition (same weights; <think> generation prompt, Thinking generation defaults).",
    )
    args = parser.parse_args(list(argv))
    from server.models.tiny import build_checkpoint

    out = build_checkpoint(args.out_dir, moe=args.moe, thinking=args.thinking)
    print(out)
    return 0


def _profile(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="qwen3vl-server profile", description="Named H100 configurations.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="List the profiles.")
    show = sub.add_parser("show", help="Show a profile: its settings, reasons and the equivalent `vllm serve` command.")
    show.add_argument("name")
    verify = sub.add_parser(
        "verify", help="What CI runs of a profile for real on CPU (its scale model) and what only by configuration."
    )
    verify.add_argument("name")
    verify.add_argument("--json", action="store_true")
    args = parser.parse_args(list(argv))
    from server.profiles import list_profiles, load_profile, vllm_serve_command
    from server.profiles.scale import render, scale_model

    if args.command == "list":
        for name in list_profiles():
            print(f"{name:50s} {load_profile(name).description}")
        return 0
    try:
        profile = load_profile(args.name)
    except ValueError as exc:
        print(f"qwen3vl-server profile: {exc}", file=sys.stderr)
        return 2
    scale = scale_model(profile)
    if args.command == "verify":
        if args.json:
            checks = [dataclasses.asdict(check) for check in scale.checks]
            print(json.dumps({"profile": profile.name, "scale_model": scale.family.name, "checks": checks}, indent=2))
        else:
            print(render(scale))
        return 0
    print(f"# {profile.name}: {profile.description}\n")
    for key, reason in profile.reasons.items():
        print(f"#   {key}: {reason}")
    config_only = ", ".join(check.setting for check in scale.by("config"))
    print(
        f"# checked by configuration only on CPU: {config_only or 'nothing'} (qwen3vl-server profile verify {profile.name})"
    )
    print()
    print(vllm_serve_command(profile))
    return 0


def _plan(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="qwen3vl-server plan",
        description="Memory arithmetic of a profile from the model's own config.json: weights per GPU, KV cache, "
        "and how many full-budget images and videos fit. Server flags after the options override the profile.",
    )
    parser.add_argument("--profile", required=True)
    parser.add_argument("--config", type=Path, help="The model's config.json (or its folder); default: found offline.")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="Memory per GPU (default: H100 80GB).")
    parser.add_argument("--reserve-gib", type=float, default=None, help="Activations/graphs reserve per GPU.")
    parser.add_argument("--json", action="store_true", help="Print the plan as JSON.")
    args, overrides = parser.parse_known_args(list(argv))
    from server import planner
    from server.config import load_settings

    try:
        settings = load_settings(["--profile", args.profile, *overrides])
        config, source = planner.load_config(str(settings.model), args.config)
    except ValueError as exc:  # unknown profile, bad override, missing config: one line, no traceback
        print(f"qwen3vl-server plan: {exc}", file=sys.stderr)
        return 2
    inputs = planner.inputs_for(
        settings,
        config,
        gpu_memory_gib=args.gpu_memory_gib or planner.H100_MEMORY_GIB,
        reserve_gib=planner.DEFAULT_RESERVE_GIB if args.reserve_gib is None else args.reserve_gib,
    )
    result = planner.plan(config, inputs)
    if args.json:
        print(json.dumps({"profile": args.profile, "config": source, **result.to_dict()}, indent=2))
    else:
        print(planner.render(args.profile, source, inputs, result))
    return 1 if result.errors else 0


def _offline_defaults() -> None:
    # Nothing may depend on a model hub at run time; a user who wants hub downloads sets these to 0 explicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _offline_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args and args[0] == "tiny-model":
        return _tiny_model(args[1:])
    if args and args[0] == "profile":
        return _profile(args[1:])
    if args and args[0] == "plan":
        return _plan(args[1:])

    from server.app import create_app
    from server.config import load_settings

    settings = load_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.http_header_timeout,
        body_timeout_s=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,  # the drain already waited --drain-timeout for requests to finish
        # h11 pinned, whatever else is installed: httptools has no head-size limit (see server.api.http_protocol).
        http=limited_h11(limits),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws="none",  # no WebSocket routes: an upgrade request is plain HTTP (and gets its 404)
        # The protocol refuses connections beyond the cap; on the ones it keeps, requests are served, and requests
        # still running beyond one per connection (clients gone, work finishing) get uvicorn's 503.
        limit_concurrency=settings.http_max_connections + 1,
        access_log=settings.log_format == "text",  # JSON logs have their own access line
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    if settings.playground_enabled:
        logging.getLogger("server").info(
            "playground: http://%s:%d/ (the page is up at once; it answers once the model is ready)",
            settings.host,
            settings.port,
        )
    server = DrainingServer(config, app.state.qwen3vl)
    server.run()
    return int(app.state.qwen3vl.exit_code)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains (see server.lifecycle) before stopping; a second one stops now."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self._draining = False
        state.request_exit = self._request_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.state.draining = True  # readiness 503 and new requests refused, from this instant
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_stop()))

    async def _drain_then_stop(self) -> None:
        await lifecycle.drain(self.state, self.state.settings.drain_timeout)
        self.should_exit = True

    def _request_exit(self, code: int) -> None:
        self.state.exit_code = code
        self.should_exit = True


if __name__ == "__main__":
    raise SystemExit(main())
