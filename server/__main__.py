"""``qwen3vl-server``: run the server, or build the tiny demo checkpoint.

qwen3vl-server [--model M] [--host H] [--port P] [--served-model-name NAME] [...]   serve (see --help)
qwen3vl-server tiny-model OUT_DIR [--moe]                                          write the tiny checkpoint
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _tiny_model(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="qwen3vl-server tiny-model", description="Build the tiny random-weight Qwen3-VL checkpoint offline."
    )
    parser.add_argument("out_dir", type=Path, help="Directory to write the checkpoint to (replaced if it exists).")
    parser.add_argument("--moe", action="store_true", help="Build the MoE variant (4 experts, top-2).")
    args = parser.parse_args(list(argv))
    from server.models.tiny import build_checkpoint

    out = build_checkpoint(args.out_dir, moe=args.moe)
    print(out)
    return 0


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

    import uvicorn

    from server.app import create_app
    from server.config import Settings

    settings = Settings(_cli_parse_args=args, _cli_prog_name="qwen3vl-server")
    logging.getLogger().setLevel(settings.log_level.upper())
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
