"""``qwen3vl-server``: serve, and only serve.

qwen3vl-server [--model M] [--profile NAME] [--host H] [--port P] [--served-model-name NAME] [...]   (see --help)

The tools that run without a server (the tiny checkpoint builder, ``profile list|show|verify``, ``plan``) are
``qwen3vl-offline`` (the ``offline`` package).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from server import logs


def _no_hub_defaults() -> None:
    # Nothing may depend on a model hub at run time; a user who wants hub downloads sets these to 0 explicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _no_hub_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from server.settings_loader import load_settings

    settings = load_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    if settings.api_workers > 1:
        from server import supervisor

        return supervisor.run(settings)
    from server.app import create_app
    from server.http_server import serve

    return serve(create_app(settings), settings)


if __name__ == "__main__":
    raise SystemExit(main())
