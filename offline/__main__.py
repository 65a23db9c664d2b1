"""``python -m offline``: the same as ``qwen3vl-offline``."""

from offline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
