"""``qwen3vl-offline``: the tools that run without a server, beside the request path.

qwen3vl-offline tiny-model OUT_DIR [--moe] [--thinking]                 write the tiny random-weight checkpoint
qwen3vl-offline profile list | show NAME | verify NAME [--json]         the named H100 configurations
qwen3vl-offline plan --profile NAME [--config PATH] [--json] [FLAGS]    memory arithmetic of a profile

Nothing here downloads a model or needs a GPU; ``python -m offline`` is the same command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

PROG = "qwen3vl-offline"


def _tiny_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} tiny-model", description="Build the tiny random-weight Qwen3-VL checkpoint offline."
    )
    parser.add_argument("out_dir", type=Path, help="Directory to write the checkpoint to (replaced if it exists).")
    parser.add_argument("--moe", action="store_true", help="Build the MoE variant (4 experts, top-2).")
    parser.add_argument(
        "--thinking",
        action="store_true",
        help="Build the Thinking edition (same weights; <think> generation prompt, Thinking generation defaults).",
    )
    args = parser.parse_args(list(argv))
    from offline.tiny import build_checkpoint

    print(build_checkpoint(args.out_dir, moe=args.moe, thinking=args.thinking))
    return 0


def _profile_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} profile", description="Named H100 configurations.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="List the profiles.")
    show = sub.add_parser("show", help="Show a profile: its settings, reasons and the equivalent `vllm serve` command.")
    show.add_argument("name")
    verify = sub.add_parser(
        "verify", help="What CI runs of a profile for real on CPU (its scale model) and what only by configuration."
    )
    verify.add_argument("name")
    verify.add_argument("--json", action="store_true")
    return parser


def _profile(argv: Sequence[str]) -> int:
    args = _profile_parser().parse_args(list(argv))
    from offline.scale import render, scale_model
    from offline.vllm_command import vllm_serve_command
    from server.profiles import list_profiles, load_profile

    if args.command == "list":
        for name in list_profiles():
            print(f"{name:50s} {load_profile(name).description}")
        return 0
    try:
        profile = load_profile(args.name)
    except ValueError as exc:
        print(f"{PROG} profile: {exc}", file=sys.stderr)
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
    print(f"# checked by configuration only on CPU: {config_only or 'nothing'} ({PROG} profile verify {profile.name})")
    print()
    print(vllm_serve_command(profile))
    return 0


def _plan_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} plan",
        description="Memory arithmetic of a profile from the model's own config.json: weights per GPU, KV cache, "
        "and how many full-budget images and videos fit. Server flags after the options override the profile.",
    )
    parser.add_argument("--profile", required=True)
    parser.add_argument("--config", type=Path, help="The model's config.json (or its folder); default: found offline.")
    parser.add_argument("--gpu-memory-gib", type=float, default=None, help="Memory per GPU (default: H100 80GB).")
    parser.add_argument("--reserve-gib", type=float, default=None, help="Activations/graphs reserve per GPU.")
    parser.add_argument("--json", action="store_true", help="Print the estimate as JSON.")
    return parser


def _plan(argv: Sequence[str]) -> int:
    args, overrides = _plan_parser().parse_known_args(list(argv))
    from offline.configs import load_config
    from offline.memory.estimate import estimate
    from offline.memory.inputs import DEFAULT_RESERVE_GIB, H100_MEMORY_GIB, inputs_for
    from offline.memory.report import render
    from server.settings_loader import load_settings

    try:
        settings = load_settings(["--profile", args.profile, *overrides])
        config, source = load_config(str(settings.model), args.config)
    except ValueError as exc:  # unknown profile, bad override, missing config: one line, no traceback
        print(f"{PROG} plan: {exc}", file=sys.stderr)
        return 2
    inputs = inputs_for(
        settings,
        config,
        gpu_memory_gib=args.gpu_memory_gib or H100_MEMORY_GIB,
        reserve_gib=DEFAULT_RESERVE_GIB if args.reserve_gib is None else args.reserve_gib,
    )
    result = estimate(config, inputs)
    if args.json:
        print(json.dumps({"profile": args.profile, "config": source, **result.to_dict()}, indent=2))
    else:
        print(render(args.profile, source, inputs, result))
    return 1 if result.errors else 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"tiny-model": _tiny_model, "profile": _profile, "plan": _plan}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        asked = bool(args) and args[0] in ("-h", "--help")
        print(__doc__, file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    # Nothing here may reach a model hub; a user who wants it sets these to 0 explicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return COMMANDS[args[0]](args[1:])
