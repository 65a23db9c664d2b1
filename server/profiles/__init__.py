"""Named, reviewed engine configurations (``qwen3vl-server --profile NAME``), one TOML data file each.

A profile supplies defaults for ``Settings`` fields; CLI flags and ``QWEN3VL_*`` variables still override them. Each value
carries a one-line reason in the file's ``[reasons]`` table. Serving reads them at start; the offline tools
(``qwen3vl-offline profile list|show|verify``, ``plan``) read them too, and keep everything else they need in ``offline``.
"""

from __future__ import annotations

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
