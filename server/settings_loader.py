"""``load_settings``: the one Settings object, from CLI flags, keyword arguments, the environment and a profile.

Kept apart from ``server.config`` so that the settings' description imports nothing from the rest of the server: a
profile's defaults come from ``server.profiles`` (TOML data files), and only this loader knows both.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from server.config import ENV_PREFIX, Settings
from server.profiles import load_profile


def load_settings(args: list[str] | None = None, **init: Any) -> Settings:
    """Settings from (highest first) CLI flags, keyword arguments, ``QWEN3VL_*`` variables, the chosen profile, defaults."""
    name = _profile_flag(args or []) or init.get("profile") or os.environ.get(f"{ENV_PREFIX}PROFILE")
    cli: dict[str, Any] = {"_cli_parse_args": args, "_cli_prog_name": "qwen3vl-server"} if args is not None else {}
    if not name:
        return Settings(**cli, **init)
    defaults = load_profile(str(name)).settings

    class ProfiledSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            profile = InitSettingsSource(settings_cls, init_kwargs=defaults)
            return init_settings, env_settings, dotenv_settings, file_secret_settings, profile

    return ProfiledSettings(**cli, **init)


def _profile_flag(args: list[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    return None
