"""The ``vllm serve`` command equivalent to a profile: what ``profile show`` prints, so a reviewer can compare our
settings with vLLM's own flags (and ``tests/unit/test_profiles.py`` hands that command line to vLLM's own parser)."""

from __future__ import annotations

import json
import shlex
from typing import Any

from server.profiles import Profile

# Our Settings fields that are vLLM engine arguments, with the same name.
ENGINE_FIELDS = (
    "served_model_name",
    "max_model_len",
    "dtype",
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_num_seqs",
    "kv_cache_memory_bytes",
    "limit_mm_per_prompt",
    "enforce_eager",
    "trust_remote_code",
    "seed",
)
# Our Settings fields that are ``vllm serve`` flags under another name.
SERVE_FIELDS = {"api_workers": "api_server_count"}


def vllm_cli_args(settings: dict[str, Any]) -> list[str]:
    """The equivalent ``vllm serve`` flags for a profile's settings (model first, as ``--model``)."""
    args = ["--model", str(settings["model"])]
    for key in ENGINE_FIELDS:
        if key in settings and settings[key] is not None:
            args += _flag(key, settings[key])
    for key, flag in SERVE_FIELDS.items():
        if key in settings:
            args += _flag(flag, settings[key])
    for key, value in (settings.get("engine_extra") or {}).items():
        args += _flag(key, value)
    return args


def _flag(key: str, value: Any) -> list[str]:
    name = "--" + key.replace("_", "-")
    if value is True:
        return [name]
    if value is False:
        return [f"--no-{key.replace('_', '-')}"]
    if isinstance(value, dict | list):
        return [name, json.dumps(value, separators=(",", ":"))]
    return [name, str(value)]


def vllm_serve_command(profile: Profile) -> str:
    """The profile as one ``vllm serve`` command, a flag and its value per line."""
    args = vllm_cli_args(profile.settings)
    model = args[1]
    return "vllm serve " + " \\\n  ".join([shlex.quote(model), *_pairs(args[2:])])


def _pairs(args: list[str]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if arg.startswith("--") or not out:
            out.append(shlex.quote(arg))
        else:
            out[-1] += " " + shlex.quote(arg)
    return out
