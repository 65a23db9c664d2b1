"""What a running batch costs live traffic, and what live traffic leaves a batch (issue 19).

    python -m benchmarks.batch_impact [--live-requests 48] [--live-rate 2] [--batch-lines 1000]
        [--batch-max-running 4] [--idle-lines 96] [--output-len 16]

One server (ours, on the tiny checkpoint, the side-by-side engine flags), three phases:

1. **live alone**: ``--live-requests`` streamed image requests (unique 448² JPEGs) from the load harness, an open loop
   at ``--live-rate`` req/s: TTFT p50/p99.
2. **live beside a batch**: a ``--batch-lines`` batch of image requests (unique 256² JPEGs) is created first; once its
   lines run, the same live load again (fresh images): TTFT p50/p99 again. The ratio is what the batch costs live
   users (batch lines run at a lower vLLM priority and at most ``--batch-max-running`` at once).
3. **batch throughput, idle server**: an ``--idle-lines`` batch alone (lines/s from create to completed), and the load
   harness sending the same requests at concurrency ``--batch-max-running`` (req/s): the ratio is the batch path's
   overhead against a client at the same concurrency.

Writes ``--out`` (default ``benchmarks/results/batch-impact-<timestamp>/``): ``result.json`` (the command, the
parameters, each phase's summary) and ``ttft.png`` (TTFT and end-to-end CDFs of the live load with and without the
batch). A benchmark, run on demand: numbers on these shared 2-core machines are read as ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.datasets import RequestSpec, make_dataset
from benchmarks.offered_load import run_load
from benchmarks.report import plot_latency_cdfs
from benchmarks.targets import SERVED_NAME, running_server

RESULTS = Path(__file__).resolve().parent / "results"
POLL_S = 0.5
BATCH_TIMEOUT_S = 3600


def batch_file(specs: list[RequestSpec]) -> bytes:
    """The requests as a batch input file: the same chat body the load harness sends, not streamed."""
    lines = []
    for i, spec in enumerate(specs):
        body = {
            "model": SERVED_NAME,
            "messages": spec.chat_messages(),
            "max_tokens": spec.max_tokens,
            "temperature": 0,
            "ignore_eos": True,
        }
        lines.append(
            json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    return ("\n".join(lines) + "\n").encode()


def start_batch(client: httpx.Client, specs: list[RequestSpec]) -> str:
    uploaded = client.post("/v1/files", files={"file": ("batch.jsonl", batch_file(specs))}, data={"purpose": "batch"})
    uploaded.raise_for_status()
    body = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    created = client.post("/v1/batches", json=body)
    created.raise_for_status()
    return str(created.json()["id"])


def batch_state(client: httpx.Client, batch_id: str) -> dict[str, Any]:
    answer = client.get(f"/v1/batches/{batch_id}")
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def wait_for_batch(client: httpx.Client, batch_id: str, done: int | None = None) -> dict[str, Any]:
    """Until the batch has ended (or, with ``done``, until that many lines have)."""
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    while True:
        state = batch_state(client, batch_id)
        counts = state["request_counts"]
        if state["status"] in ("completed", "cancelled", "expired", "failed"):
            return state
        if done is not None and counts["completed"] + counts["failed"] >= done:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"batch {batch_id} still {state['status']} after {BATCH_TIMEOUT_S} s")
        time.sleep(POLL_S)


def live(url: str, specs: list[RequestSpec], rate: float) -> tuple[dict[str, Any], Any]:
    result = asyncio.run(run_load(url, SERVED_NAME, specs, rate=rate, concurrency=32))
    return result.summary(), result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live-requests", type=int, default=48)
    parser.add_argument("--live-rate", type=float, default=2.0)
    parser.add_argument("--batch-lines", type=int, default=1000)
    parser.add_argument("--batch-max-running", type=int, default=4)
    parser.add_argument("--idle-lines", type=int, default=96)
    parser.add_argument("--output-len", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def run_phases(url: str, args: argparse.Namespace) -> tuple[dict[str, Any], Any, Any]:
    """The three phases on one running server: each phase's summary, and the live records alone and beside."""
    images = {"output_len": args.output_len}
    live_before = make_dataset("unique-images", args.live_requests, seed=1, **images)
    live_beside = make_dataset("unique-images", args.live_requests, seed=2, **images)
    background = make_dataset("unique-images", args.batch_lines, seed=3, image_size=(256, 256), **images)
    idle = make_dataset("unique-images", args.idle_lines, seed=4, image_size=(256, 256), **images)
    harness = make_dataset("unique-images", args.idle_lines, seed=5, image_size=(256, 256), **images)
    phases: dict[str, Any] = {}
    client = httpx.Client(base_url=url, timeout=600)
    asyncio.run(run_load(url, SERVED_NAME, make_dataset("unique-images", 2, seed=9, **images), concurrency=2))
    print("live alone ...", flush=True)
    phases["live_alone"], alone = live(url, live_before, args.live_rate)
    print("live beside a batch ...", flush=True)
    batch_id = start_batch(client, background)
    wait_for_batch(client, batch_id, done=args.batch_max_running)  # its lines are running
    phases["live_beside_batch"], beside = live(url, live_beside, args.live_rate)
    phases["batch_lines_done_during_live"] = batch_state(client, batch_id)["request_counts"]
    client.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()
    wait_for_batch(client, batch_id)
    print("batch alone, then the harness at the same concurrency ...", flush=True)
    started = time.perf_counter()
    ended = wait_for_batch(client, start_batch(client, idle))
    batch_s = time.perf_counter() - started
    phases["batch_idle"] = {
        "lines": args.idle_lines,
        "seconds": batch_s,
        "lines_per_s": ended["request_counts"]["completed"] / batch_s,
        "request_counts": ended["request_counts"],
    }
    phases["harness_same_concurrency"] = asyncio.run(
        run_load(url, SERVED_NAME, harness, concurrency=args.batch_max_running)
    ).summary()
    return phases, alone, beside


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out or RESULTS / f"batch-impact-{dt.datetime.now():%Y-%m-%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    model = subprocess.check_output(
        [sys.executable, "-c", "from offline.tiny import cached_checkpoint; print(cached_checkpoint())"], text=True
    ).strip()
    os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="batch-impact-state-")  # a fresh batch store
    os.environ["QWEN3VL_BATCH_MAX_RUNNING"] = str(args.batch_max_running)
    with running_server("ours", model, out / "server.log") as (url, _):
        phases, alone, beside = run_phases(url, args)
    live_alone, live_beside = phases["live_alone"]["ttft_ms"], phases["live_beside_batch"]["ttft_ms"]
    ratios = {
        "ttft_p50_beside_over_alone": live_beside["p50"] / live_alone["p50"],
        "ttft_p99_beside_over_alone": live_beside["p99"] / live_alone["p99"],
        "batch_over_harness_throughput": phases["batch_idle"]["lines_per_s"]
        / phases["harness_same_concurrency"]["request_throughput"],
    }
    document = {
        "command": shlex.join([sys.executable, "-m", "benchmarks.batch_impact", *(argv or sys.argv[1:])]),
        "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "phases": phases,
        "ratios": ratios,
    }
    (out / "result.json").write_text(json.dumps(document, indent=2))
    plot_latency_cdfs([("live alone", alone.records), ("live beside a batch", beside.records)], out / "ttft.png")
    for name in ("live_alone", "live_beside_batch"):
        ttft = phases[name]["ttft_ms"]
        print(f"{name:20s} TTFT p50 {ttft['p50']:.0f} ms  p99 {ttft['p99']:.0f} ms  failed {phases[name]['failed']}")
    idle, harness = phases["batch_idle"], phases["harness_same_concurrency"]
    print(f"batch alone {idle['lines_per_s']:.2f} lines/s; harness {harness['request_throughput']:.2f} req/s")
    print(json.dumps(ratios, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
