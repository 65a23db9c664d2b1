"""``qwen3vl-chat batch``: run a JSONL file of requests as a batch on the server, with a progress bar, and download
the answers.

    qwen3vl-chat batch requests.jsonl [--out answers.jsonl] [--errors errors.jsonl] [--url URL] [--api-key KEY]

Each line is OpenAI's batch line (``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``);
the server checks every line on upload and names the bad ones. The bar (on stderr) follows ``request_counts``; at the
end the output file goes to ``--out`` (default ``FILE.output.jsonl``) and, if any line failed, the error file to
``--errors`` (default ``FILE.errors.jsonl``). Ctrl-C cancels the batch on the server (the lines already answered are
still downloaded). Exit 0 when every line was answered, 3 when some failed, 1 on a server error, 2 on a local one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import openai
from openai import OpenAI
from openai.types import Batch
from tqdm import tqdm

__all__ = ["build_parser", "main", "run"]

DEFAULT_URL = "http://127.0.0.1:8000"
ENDED = ("completed", "failed", "expired", "cancelled")


def build_parser() -> argparse.ArgumentParser:
    env_key = os.environ.get("QWEN3VL_API_KEY") or os.environ.get("OPENAI_API_KEY")
    parser = argparse.ArgumentParser(prog="qwen3vl-chat batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, help="the JSONL file of batch lines")
    parser.add_argument("--out", type=Path, help="where the answers go (default FILE.output.jsonl)")
    parser.add_argument("--errors", type=Path, help="where failed lines go (default FILE.errors.jsonl)")
    parser.add_argument("--url", default=os.environ.get("QWEN3VL_URL", DEFAULT_URL), help="server base URL")
    parser.add_argument("--api-key", default=env_key, help="API key (default: $QWEN3VL_API_KEY or $OPENAI_API_KEY)")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress checks")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP call")
    return parser


def _endpoint(path: Path) -> str:
    """The batch's endpoint: the first line's ``url`` (the server checks that every line has the same)."""
    with path.open("rb") as lines:
        for raw in lines:
            if raw.strip():
                url = json.loads(raw).get("url")
                if not isinstance(url, str):
                    raise ValueError(f"{path}: the first line has no url")
                return url
    raise ValueError(f"{path}: no lines")


def _wait(client: OpenAI, batch: Batch, poll_s: float, err: TextIO) -> Batch:
    counts = batch.request_counts
    with tqdm(total=counts.total if counts else None, unit="line", file=err, dynamic_ncols=True) as bar:
        try:
            while batch.status not in ENDED:
                time.sleep(poll_s)
                batch = client.batches.retrieve(batch.id)
                if batch.request_counts is not None:
                    done = batch.request_counts.completed + batch.request_counts.failed
                    bar.update(done - bar.n)
                    bar.set_postfix(failed=batch.request_counts.failed, status=batch.status)
        except KeyboardInterrupt:
            print(f"\ncancelling {batch.id} ...", file=err)
            batch = client.batches.cancel(batch.id)
            while batch.status not in ENDED:
                time.sleep(poll_s)
                batch = client.batches.retrieve(batch.id)
    return batch


def _download(client: OpenAI, file_id: str | None, path: Path) -> int:
    if file_id is None:
        return 0
    content = client.files.content(file_id).content
    path.write_bytes(content)
    return content.count(b"\n")


def run(args: argparse.Namespace, err: TextIO) -> int:
    client = OpenAI(
        base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key or "unused", timeout=args.timeout, max_retries=0
    )
    endpoint = _endpoint(args.file)
    with args.file.open("rb") as source:
        uploaded = client.files.create(file=(args.file.name, source), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    print(f"batch {batch.id}: {batch.request_counts.total if batch.request_counts else '?'} lines", file=err)
    batch = _wait(client, batch, args.poll, err)
    out = args.out or args.file.with_suffix(".output.jsonl")
    errors = args.errors or args.file.with_suffix(".errors.jsonl")
    answered = _download(client, batch.output_file_id, out)
    failed = _download(client, batch.error_file_id, errors)
    print(f"batch {batch.id} {batch.status}: {answered} answers in {out}", file=err)
    if failed:
        print(f"{failed} lines failed or did not run: {errors}", file=err)
    if batch.status == "cancelled":
        return 130
    return 0 if batch.status == "completed" and not failed else 3


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args, sys.stderr)
    except openai.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        print(
            f"error: {exc.status_code} {body.get('code') or ''}: {body.get('message') or exc.message}", file=sys.stderr
        )
        return 1
    except openai.OpenAIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # an unreadable file, a line that is not JSON
        print(f"error: {exc}", file=sys.stderr)
        return 2
