"""The bundled ``config.json`` of each Qwen3-VL size (see README.md here), and where a model's config comes from.

Bundled so that ``plan``, ``profile verify`` and the profile tests work offline, without the checkpoint or a hub.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

_SIZE = re.compile(r"Qwen3-VL-(\d+B(?:-A\d+B)?)", re.IGNORECASE)


def bundled_config_name(model: str) -> str | None:
    """The bundled config for a Qwen3-VL hub id: Instruct, Thinking and FP8 variants share one architecture."""
    match = _SIZE.search(model)
    return f"Qwen3-VL-{match.group(1).upper()}.json" if match else None


def bundled_config(name: str) -> dict[str, Any]:
    """One bundled config by file name (``bundled_config_name``'s answer)."""
    return dict(json.loads(resources.files(__package__).joinpath(name).read_text()))


def load_config(model: str, explicit: Path | None = None) -> tuple[dict[str, Any], str]:
    """The model's config.json and where it came from: ``explicit``, a local folder, the HF cache, or the bundled copy."""
    local = explicit if explicit is not None else (Path(model) if Path(model).is_dir() else None)
    if local is not None:
        path = local / "config.json" if local.is_dir() else local
        if not path.is_file():
            raise ValueError(f"no config.json at {path}")
        return json.loads(path.read_text()), str(path)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), cached
    name = bundled_config_name(model)
    if name is None:
        raise ValueError(f"no config.json for {model!r}: pass --config PATH")
    return bundled_config(name), f"bundled {name}"
