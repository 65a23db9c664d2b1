"""Runnable examples: ``python clients/examples/single_image.py --url http://127.0.0.1:8000`` (see each file)."""
