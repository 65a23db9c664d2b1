"""Named, reviewed engine configurations (``qwen3vl-server --profile NAME``), one TOML data file each.

A profile supplies defaults for ``Settings`` fields; CLI flags and ``QWEN3VL_*`` variables still override them. Each value
carries a one-line reason in the file's ``[reasons]`` table.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    settings: dict[str, Any]
    reasons: dict[str, str] = field(default_factory=dict)


def list_profiles() -> list[str]:
    return sorted(
        p.name.removesuffix(".toml") for p in resources.files(__package__).iterdir() if p.name.endswith(".toml")
    )


def load_profile(name: str) -> Profile:
    if name not in list_profiles():
        raise ValueError(f"unknown profile '{name}'; known: {', '.join(list_profiles())}")
    data = tomllib.loads(resources.files(__package__).joinpath(f"{name}.toml").read_text())
    return Profile(
        name=name,
        description=str(data.get("description", "")),
        settings=dict(data.get("settings", {})),
        reasons={str(k): str(v) for k, v in data.get("reasons", {}).items()},
    )


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


def vllm_cli_args(settings: dict[str, Any]) -> list[str]:
    """The equivalent ``vllm serve`` flags for a profile's settings (model first, as ``--model``)."""
    args = ["--model", str(settings["model"])]
    for key in ENGINE_FIELDS:
        if key in settings and settings[key] is not None:
            args += _flag(key, settings[key])
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
    import shlex

    args = vllm_cli_args(profile.settings)
    model = args[1]
    return "vllm serve " + " \\\n  ".join([shlex.quote(model), *_pairs(args[2:])])


def _pairs(args: list[str]) -> list[str]:
    import shlex

    out: list[str] = []
    for arg in args:
        if arg.startswith("--") or not out:
            out.append(shlex.quote(arg))
        else:
            out[-1] += " " + shlex.quote(arg)
    return out
