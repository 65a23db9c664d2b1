"""Load harness: drive a live server's streamed ``/v1/chat/completions`` with synthetic multimodal load.

    python -m benchmarks.load --url http://127.0.0.1:8000 --dataset unique-images --num-requests 64 --concurrency 4
    python -m benchmarks.load --dataset repeated-images --sweep-concurrency 1,2,4,8 --goodput ttft:500 tpot:50
    python -m benchmarks.load --dataset videos --frames 8 --image-size 224x224 --sweep-rate 1,2,4 --burstiness 0.5

Closed loop with ``--concurrency N`` (N requests in flight), open loop with ``--rate R`` (arrivals with gamma-distributed
gaps of shape ``--burstiness``, Poisson at 1, rescaled so the last arrival is at n/R: vLLM ``bench serve``'s schedule);
both together cap an open loop at N in flight. Every request streams (``stream_options.include_usage``), at
temperature 0 with ``ignore_eos`` (the server honours it, so every request generates exactly ``--output-len`` tokens;
``ended_early`` in the summary counts any that did not). Metrics follow vLLM's definitions (see ``benchmarks.report``).
Sweep points run one after another, each on a fresh dataset (seed + point index), so unique media stay unique.

Writes ``--out`` (default ``benchmarks/results/load-<timestamp>/``): ``result.json`` (command, server, model, dataset
parameters, per-point summaries and per-request records), ``latency_cdf.png`` and, for sweeps, ``throughput.png``.

Importable: ``make_dataset`` → ``list[RequestSpec]``; ``await run_load(url, model, specs, concurrency=4)`` →
``LoadResult`` (``.records``, ``.summary(slo)``). This module is the command; the parts live by name:
``benchmarks.datasets`` (requests), ``benchmarks.stream`` (one streamed request, measured), ``benchmarks.offered_load`` (the
schedule and ``run_load``) and ``benchmarks.report`` (records, summary math, plots); their public names are re-exported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.datasets import KINDS, RequestSpec, describe, make_dataset
from benchmarks.offered_load import LoadResult, arrival_offsets, run_load
from benchmarks.report import RequestRecord, parse_slo, plot_latency_cdfs, plot_throughput, summarize
from benchmarks.stream import SSEDecoder, StreamState

__all__ = [
    "LoadResult",
    "RequestRecord",
    "RequestSpec",
    "SSEDecoder",
    "StreamState",
    "arrival_offsets",
    "make_dataset",
    "run_load",
    "summarize",
]

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP_SEED_OFFSET = 1_000_003  # warm-up requests come from a different seed: they never prime the measured media


def _size(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().partition("x")
    if not sep:
        return int(width), int(width)
    return int(width), int(height)


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def fetch_model(base_url: str, api_key: str | None) -> str:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(base_url.rstrip("/") + "/v1/models", headers=headers, timeout=30)
    response.raise_for_status()
    return str(response.json()["data"][0]["id"])


def _label(concurrency: int | None, rate: float | None) -> str:
    parts = []
    if rate is not None:
        parts.append(f"rate={rate:g}/s")
    if concurrency is not None:
        parts.append(f"concurrency={concurrency}")
    return ", ".join(parts) or "all at once"


def format_summary(label: str, s: dict[str, Any]) -> str:
    def ms(metric: str, q: str) -> str:
        value = s[metric][q]
        return "     -" if value is None else f"{value:6.0f}"

    errors = ", ".join(f"{k}×{v}" for k, v in s["errors"].items())
    line = (
        f"{label:28s} {s['completed']:4d}/{s['requests']:<4d} ok  {s['request_throughput']:6.2f} req/s  "
        f"{s['output_throughput']:7.1f} out tok/s  ttft p50/p99 {ms('ttft_ms', 'p50')}/{ms('ttft_ms', 'p99')} ms  "
        f"tpot p50 {ms('tpot_ms', 'p50')} ms  e2e p50/p99 {ms('e2e_ms', 'p50')}/{ms('e2e_ms', 'p99')} ms"
    )
    if "goodput" in s:
        line += f"  goodput {s['goodput']:.2f} req/s"
    if s["ended_early"]:
        line += f"  ended early: {s['ended_early']}"
    if errors:
        line += f"  errors: {errors}"
    return line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    parser.add_argument("--model", default=None, help="served model name (default: the server's first model)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset", choices=KINDS, default="unique-images")
    data.add_argument("--num-requests", type=int, default=64, help="requests per load point")
    data.add_argument("--output-len", type=int, default=16, help="max_tokens (forced with ignore_eos)")
    data.add_argument("--image-size", type=_size, default=(448, 448), help="WIDTHxHEIGHT (also video frames)")
    data.add_argument("--size-jitter", type=float, default=0.25, help="each side drawn within size × (1 ± jitter)")
    data.add_argument("--pool-size", type=int, default=4, help="distinct images of repeated-images")
    data.add_argument("--frames", type=int, default=8, help="frames per video")
    data.add_argument("--prompt-words", type=int, default=24, help="random words of text per request")
    data.add_argument("--seed", type=int, default=0)
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", type=int, default=None, help="closed loop: requests in flight")
    load.add_argument("--rate", type=float, default=None, help="open loop: requests per second")
    load.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the arrival gaps (1 = Poisson)")
    sweep = load.add_mutually_exclusive_group()
    sweep.add_argument("--sweep-concurrency", type=str, default=None, help="e.g. 1,2,4,8 (one point each)")
    sweep.add_argument("--sweep-rate", type=str, default=None, help="e.g. 1,2,4 requests/s (one point each)")
    load.add_argument("--warmup", type=int, default=1, help="warm-up requests before the first point (not measured)")
    load.add_argument("--timeout", type=float, default=600, help="seconds per request")
    load.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos")
    parser.add_argument(
        "--goodput", nargs="+", default=None, metavar="METRIC:MS", help="SLOs, e.g. ttft:500 tpot:50 e2el:2000"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/load-<timestamp>/")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-plots", action="store_true")
    return parser


def load_points(args: argparse.Namespace) -> list[tuple[int | None, float | None]]:
    if args.sweep_concurrency:
        return [(int(c), args.rate) for c in _numbers(args.sweep_concurrency)]
    if args.sweep_rate:
        return [(args.concurrency, r) for r in _numbers(args.sweep_rate)]
    return [(args.concurrency, args.rate)]


@dataclass
class Point:
    """One measured load point of a run."""

    label: str
    result: LoadResult
    summary: dict[str, Any]
    seed: int


def _dataset(args: argparse.Namespace, count: int, seed: int) -> list[RequestSpec]:
    return make_dataset(
        args.dataset,
        count,
        seed=seed,
        output_len=args.output_len,
        image_size=args.image_size,
        size_jitter=args.size_jitter,
        pool_size=args.pool_size,
        frames=args.frames,
        prompt_words=args.prompt_words,
    )


def run_points(args: argparse.Namespace, model: str, slo: dict[str, float]) -> list[Point]:
    """The warm-up (unmeasured, its own seed), then every load point on a fresh dataset (seed + point index)."""
    common: dict[str, Any] = {
        "api_key": args.api_key,
        "timeout_s": args.timeout,
        "ignore_eos": not args.no_ignore_eos,
        "burstiness": args.burstiness,
    }
    if args.warmup > 0:
        asyncio.run(run_load(args.url, model, _dataset(args, args.warmup, args.seed + WARMUP_SEED_OFFSET), **common))
    print(
        f"{model} at {args.url}: {args.dataset}, {args.num_requests} requests per point, max_tokens {args.output_len}"
    )
    points: list[Point] = []
    for k, (concurrency, rate) in enumerate(load_points(args)):
        seed = args.seed + k
        specs = _dataset(args, args.num_requests, seed)
        progress = not args.no_progress
        load = run_load(
            args.url, model, specs, concurrency=concurrency, rate=rate, seed=seed, progress=progress, **common
        )
        result = asyncio.run(load)
        summary = result.summary(slo or None)
        summary["dataset"] = describe(specs)
        points.append(Point(_label(concurrency, rate), result, summary, seed))
        print(format_summary(points[-1].label, summary), flush=True)
    return points


def result_document(
    argv: list[str], args: argparse.Namespace, model: str, slo: dict[str, float], points: list[Point]
) -> dict[str, Any]:
    """What ``result.json`` holds: how the run was asked for, and every point's summary and per-request records."""
    dataset = {
        "kind": args.dataset,
        "num_requests": args.num_requests,
        "seed": args.seed,
        "output_len": args.output_len,
        "image_size": list(args.image_size),
        "size_jitter": args.size_jitter,
        "pool_size": args.pool_size,
        "frames": args.frames,
        "prompt_words": args.prompt_words,
        "media": "random-noise JPEG (quality 75); videos as frame lists at 2 fps",
    }
    load = {
        "concurrency": args.concurrency,
        "rate": args.rate,
        "burstiness": args.burstiness,
        "sweep_concurrency": args.sweep_concurrency,
        "sweep_rate": args.sweep_rate,
        "warmup": args.warmup,
        "ignore_eos": not args.no_ignore_eos,
        "timeout_s": args.timeout,
    }
    return {
        "command": "python -m benchmarks.load " + shlex.join(argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "server_url": args.url,
        "model": model,
        "dataset": dataset,
        "load": load,
        "slo_ms": slo,
        "points": [
            {
                "label": p.label,
                "concurrency": p.result.concurrency,
                "rate": p.result.rate,
                "burstiness": p.result.burstiness,
                "seed": p.seed,
                "summary": p.summary,
                "records": p.result.records_json(),
            }
            for p in points
        ],
    }


def write_plots(points: list[Point], by_rate: bool, out: Path) -> list[str]:
    """The latency CDFs of every point and, for a sweep, throughput against the swept quantity; the file names."""
    plot_latency_cdfs([(p.label, p.result.records) for p in points], out / "latency_cdf.png")
    if len(points) <= 1:
        return ["latency_cdf.png"]
    xs = [float((p.result.rate if by_rate else p.result.concurrency) or 0) for p in points]
    plot_throughput(
        [(x, p.summary) for x, p in zip(xs, points, strict=True)],
        "offered rate (req/s)" if by_rate else "concurrency",
        out / "throughput.png",
    )
    return ["latency_cdf.png", "throughput.png"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    slo = parse_slo(args.goodput)
    model = args.model or fetch_model(args.url, args.api_key)
    out: Path = args.out or RESULTS / f"load-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    points = run_points(args, model, slo)
    report = result_document(argv, args, model, slo, points)
    plots = [] if args.no_plots else write_plots(points, bool(args.sweep_rate), out)
    report["plots"] = plots
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}/result.json" + "".join(f", {p}" for p in plots))
    failed = sum(p.summary["failed"] for p in points)
    return 1 if failed and all(p.summary["completed"] == 0 for p in points) else 0


if __name__ == "__main__":
    raise SystemExit(main())
