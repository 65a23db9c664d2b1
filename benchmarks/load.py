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
``LoadResult`` (``.records``, ``.summary(slo)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.datasets import KINDS, RequestSpec, describe, make_dataset
from benchmarks.report import RequestRecord, parse_slo, plot_latency_cdfs, plot_throughput, summarize

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
CHAT_PATH = "/v1/chat/completions"
WARMUP_SEED_OFFSET = 1_000_003  # warm-up requests come from a different seed: they never prime the measured media


# --- SSE ----------------------------------------------------------------------------------------------------------------


class SSEDecoder:
    """Incremental server-sent-events decoder: feed text as it arrives, get each complete event's ``data``.

    Handles events split across reads, ``\\r\\n`` line ends, comment lines (``:ping``), fields other than ``data`` and
    multi-line data (joined with ``\\n``), per the SSE spec.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        events: list[str] = []
        while True:
            cut = min((i for i in (self._buffer.find("\n"), self._buffer.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                return events
            line = self._buffer[:cut]
            skip = 2 if self._buffer.startswith("\r\n", cut) else 1
            if self._buffer[cut] == "\r" and cut + 1 == len(self._buffer):
                return events  # a lone \r at the end may be the first half of \r\n: wait for more
            self._buffer = self._buffer[cut + skip :]
            if event := self._line(line):
                events.append(event)

    def close(self) -> list[str]:
        """Flush a final event that was not followed by a blank line."""
        events = self.feed("\n\n") if self._buffer or self._data else []
        return events

    def _line(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            event, self._data = "\n".join(self._data), []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None


def error_code(payload: Any, status: int | None) -> tuple[str, str]:
    """(code, message) from an OpenAI error body (``code``, else ``type``), else ``http_<status>``."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = str(error.get("message") or "")
        if code:
            return str(code), message
        return (f"http_{status}" if status else "error"), message
    return (f"http_{status}" if status else "error"), str(payload)[:500]


@dataclass
class StreamState:
    """What a streamed chat completion said, chunk by chunk (times on the ``perf_counter`` clock)."""

    start: float
    first_content: float | None = None
    first_choice: float | None = None
    last_choice: float | None = None
    content_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_code: str | None = None
    error: str | None = None
    done: bool = False

    def on_event(self, data: str, now: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            self.error_code, self.error = "bad_sse_payload", data[:500]
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.error_code, self.error = error_code(chunk, None)
            return
        choices = chunk.get("choices") or []
        if choices:
            self.first_choice = self.first_choice if self.first_choice is not None else now
            self.last_choice = now
            for choice in choices:
                if (choice.get("delta") or {}).get("content"):
                    self.first_content = self.first_content if self.first_content is not None else now
                    self.content_times.append(now)
                    break
            for choice in choices:
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fill(self, record: RequestRecord) -> None:
        """Complete ``record`` from the stream: ok when no error event came and the stream finished with tokens."""
        record.finish_reason = self.finish_reason
        record.content_chunks = len(self.content_times)
        record.itl_s = [b - a for a, b in itertools.pairwise(self.content_times)]
        # TTFT is the first content chunk; a completion whose tokens all decode to empty text falls back to its
        # first chunk with choices (what vLLM's bench serve always uses).
        first = self.first_content if self.first_content is not None else self.first_choice
        record.usage_reported = self.completion_tokens is not None
        record.prompt_tokens = self.prompt_tokens or 0
        record.completion_tokens = (
            self.completion_tokens if self.completion_tokens is not None else len(self.content_times)
        )
        if self.error_code is not None:
            record.error_code, record.error = self.error_code, self.error
        elif first is None or self.last_choice is None or self.finish_reason is None:
            record.error_code = "incomplete_stream"
            record.error = "the stream ended before a finished choice"
        else:
            record.ok = True
        if first is not None and self.last_choice is not None:
            record.ttft_s = first - self.start
            record.e2e_s = self.last_choice - self.start


def request_body(
    spec: RequestSpec, model: str, *, ignore_eos: bool = True, extra_body: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": spec.chat_messages(),
        "max_tokens": spec.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(extra_body or {})
    return body


async def send_request(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    index: int = -1,
    max_tokens: int | None = None,
    timeout_s: float = 600,
) -> RequestRecord:
    """POST one streamed chat completion (``body`` already JSON-encoded) and measure it."""
    start = time.perf_counter()
    record = RequestRecord(ok=False, start_s=start, ttft_s=None, e2e_s=None, index=index, max_tokens=max_tokens)
    state = StreamState(start)
    try:
        async with (
            asyncio.timeout(timeout_s),
            client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as response,
        ):
            record.status = response.status_code
            if response.status_code != 200:
                raw = await response.aread()
                try:
                    payload: Any = json.loads(raw)
                except ValueError:
                    payload = raw.decode(errors="replace")
                record.error_code, record.error = error_code(payload, response.status_code)
                return record
            decoder = SSEDecoder()
            async for text in response.aiter_text():
                now = time.perf_counter()
                for data in decoder.feed(text):
                    state.on_event(data, now)
            for data in decoder.close():
                state.on_event(data, time.perf_counter())
        state.fill(record)
    except TimeoutError:
        state.fill(record)
        record.ok, record.error_code, record.error = False, "client_timeout", f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        state.fill(record)
        record.ok, record.error_code, record.error = False, type(exc).__name__, str(exc)[:500]
    return record


# --- load generation ----------------------------------------------------------------------------------------------------


def arrival_offsets(num_requests: int, rate: float | None, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """When each request is sent, in seconds from the start: all at 0 without a rate; otherwise cumulative gamma gaps
    (shape ``burstiness``, mean 1/rate; exponential, i.e. Poisson arrivals, at 1), rescaled like vLLM's bench serve so
    the last arrival lands exactly at num_requests/rate."""
    if rate is None or math.isinf(rate):
        return [0.0] * num_requests
    if rate <= 0 or burstiness <= 0:
        raise ValueError("rate and burstiness must be positive")
    if num_requests == 0:
        return []
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=num_requests)
    cumulative = np.cumsum(gaps)
    cumulative *= (num_requests / rate) / cumulative[-1]
    return [float(t) for t in cumulative]


@dataclass
class LoadResult:
    """One load point: per-request records (in dataset order) and how the load was offered."""

    records: list[RequestRecord]
    duration_s: float
    started_at: float  # perf_counter at the start of the run (request ``start_s`` are on this clock)
    concurrency: int | None = None
    rate: float | None = None
    burstiness: float = 1.0

    def summary(self, slo: dict[str, float] | None = None) -> dict[str, Any]:
        summary = summarize(self.records, duration_s=self.duration_s, slo=slo)
        summary.update(
            {
                "concurrency": self.concurrency,
                "rate": self.rate,
                "burstiness": self.burstiness if self.rate is not None else None,
            }
        )
        return summary

    def records_json(self) -> list[dict[str, Any]]:
        return [r.to_dict(origin=self.started_at) for r in self.records]


async def run_load(
    base_url: str,
    model: str,
    requests: Sequence[RequestSpec],
    *,
    concurrency: int | None = None,
    rate: float | None = None,
    burstiness: float = 1.0,
    api_key: str | None = None,
    seed: int = 0,
    progress: bool = False,
    timeout_s: float = 600,
    ignore_eos: bool = True,
    extra_body: dict[str, Any] | None = None,
) -> LoadResult:
    """Send ``requests`` (closed loop at ``concurrency`` in flight, or open loop at ``rate`` req/s, or both: an open
    loop capped at ``concurrency``; neither: all at once) and measure every one. Never raises for a failed request:
    failures are records with ``ok=False`` and an ``error_code``."""
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    offsets = arrival_offsets(len(requests), rate, burstiness, seed)
    url = base_url.rstrip("/") + CHAT_PATH
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    width = concurrency or max(1, len(requests))
    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    gate: contextlib.AbstractAsyncContextManager[Any] = (
        asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()
    )
    bar = _progress_bar(len(requests), progress)
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout_s), limits=limits) as client:
        started = time.perf_counter()

        async def one(index: int, spec: RequestSpec) -> RequestRecord:
            delay = started + offsets[index] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            arrived = time.perf_counter()
            async with gate:
                # Encoded once the request may go (base64 + JSON stay off the clock, as in vLLM's harness).
                body = json.dumps(request_body(spec, model, ignore_eos=ignore_eos, extra_body=extra_body)).encode()
                record = await send_request(
                    client, url, body, index=index, max_tokens=spec.max_tokens, timeout_s=timeout_s
                )
            record.queued_s = max(0.0, record.start_s - arrived)
            if bar is not None:
                bar.update(1)
            return record

        try:
            records = list(await asyncio.gather(*(one(i, s) for i, s in enumerate(requests))))
        finally:
            if bar is not None:
                bar.close()
        duration = time.perf_counter() - started
    return LoadResult(records, duration, started, concurrency, rate, burstiness)


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(total=total, unit="req", dynamic_ncols=True)


# --- CLI ----------------------------------------------------------------------------------------------------------------


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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    slo = parse_slo(args.goodput)
    model = args.model or fetch_model(args.url, args.api_key)
    points = load_points(args)
    dataset_params: dict[str, Any] = {
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

    def dataset(count: int, seed: int) -> list[RequestSpec]:
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

    common: dict[str, Any] = {
        "api_key": args.api_key,
        "timeout_s": args.timeout,
        "ignore_eos": not args.no_ignore_eos,
        "burstiness": args.burstiness,
    }
    if args.warmup > 0:
        asyncio.run(run_load(args.url, model, dataset(args.warmup, args.seed + WARMUP_SEED_OFFSET), **common))
    out: Path = args.out or RESULTS / f"load-{dt.datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, LoadResult, dict[str, Any], int]] = []
    print(
        f"{model} at {args.url}: {args.dataset}, {args.num_requests} requests per point, max_tokens {args.output_len}"
    )
    for k, (concurrency, rate) in enumerate(points):
        seed = args.seed + k
        specs = dataset(args.num_requests, seed)
        result = asyncio.run(
            run_load(
                args.url,
                model,
                specs,
                concurrency=concurrency,
                rate=rate,
                seed=seed,
                progress=not args.no_progress,
                **common,
            )
        )
        label = _label(concurrency, rate)
        summary = result.summary(slo or None)
        summary["dataset"] = describe(specs)
        results.append((label, result, summary, seed))
        print(format_summary(label, summary), flush=True)

    report = {
        "command": "python -m benchmarks.load " + shlex.join(argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "server_url": args.url,
        "model": model,
        "dataset": dataset_params,
        "load": {
            "concurrency": args.concurrency,
            "rate": args.rate,
            "burstiness": args.burstiness,
            "sweep_concurrency": args.sweep_concurrency,
            "sweep_rate": args.sweep_rate,
            "warmup": args.warmup,
            "ignore_eos": not args.no_ignore_eos,
            "timeout_s": args.timeout,
        },
        "slo_ms": slo,
        "points": [
            {
                "label": label,
                "concurrency": result.concurrency,
                "rate": result.rate,
                "burstiness": result.burstiness,
                "seed": seed,
                "summary": summary,
                "records": result.records_json(),
            }
            for label, result, summary, seed in results
        ],
    }
    plots: list[str] = []
    if not args.no_plots:
        plot_latency_cdfs([(label, result.records) for label, result, _, _ in results], out / "latency_cdf.png")
        plots.append("latency_cdf.png")
        if len(results) > 1:
            by_rate = bool(args.sweep_rate)
            xs = [float((r.rate if by_rate else r.concurrency) or 0) for _, r, _, _ in results]
            plot_throughput(
                [(x, s) for x, (_, _, s, _) in zip(xs, results, strict=True)],
                "offered rate (req/s)" if by_rate else "concurrency",
                out / "throughput.png",
            )
            plots.append("throughput.png")
    report["plots"] = plots
    (out / "result.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}/result.json" + "".join(f", {p}" for p in plots))
    failed = sum(s["failed"] for _, _, s, _ in results)
    return 1 if failed and all(s["completed"] == 0 for _, _, s, _ in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
