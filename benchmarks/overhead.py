"""What the gateway's admission and metrics layers cost per request, measured against a live server.

    python -m benchmarks.overhead --url http://127.0.0.1:8000 --model tiny-qwen3vl [--requests 200]

Sequential one-token text requests (no contention, so admission never waits): the server's own Server-Timing reports
the admission stage (``queue``) and its total; the client measures the round trip. ``round trip − server total`` is
everything outside the handler: HTTP parsing, the guard and metrics middleware, JSON encoding. A /metrics scrape is
timed too (what a Prometheus scrape costs the server). Writes JSON and a PNG to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import httpx


def _stages(header: str) -> dict[str, float]:
    return {p.split(";dur=")[0].strip(): float(p.split(";dur=")[1]) for p in header.split(",") if ";dur=" in p}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="tiny-qwen3vl")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    body = {"model": args.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "temperature": 0}
    queue_ms: list[float] = []
    total_ms: list[float] = []
    outside_ms: list[float] = []
    scrape_ms: list[float] = []
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as client:
        for _ in range(5):
            client.post("/v1/chat/completions", json=body)
        for i in range(args.requests):
            started = time.perf_counter()
            response = client.post("/v1/chat/completions", json=body)
            round_trip = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            stages = _stages(response.headers["server-timing"])
            queue_ms.append(stages["queue"])
            total_ms.append(stages["total"])
            outside_ms.append(round_trip - stages["total"])
            if i % 10 == 0:
                started = time.perf_counter()
                client.get("/metrics").raise_for_status()
                scrape_ms.append((time.perf_counter() - started) * 1000)

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "p50": statistics.median(ordered),
            "p90": ordered[int(0.9 * (len(ordered) - 1))],
            "mean": statistics.fmean(ordered),
        }

    report = {
        "command": "python -m benchmarks.overhead " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "requests": args.requests,
        "admission_ms": summary(queue_ms),
        "handler_total_ms": summary(total_ms),
        "outside_handler_ms": summary(outside_ms),
        "metrics_scrape_ms": summary(scrape_ms),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"overhead-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, args.out / f"overhead-{stamp}.png")
    for key in ("admission_ms", "outside_handler_ms", "handler_total_ms", "metrics_scrape_ms"):
        values = report[key]
        assert isinstance(values, dict)
        print(f"{key:20s} p50 {values['p50']:8.3f}  p90 {values['p90']:8.3f}  mean {values['mean']:8.3f}")
    print(f"wrote {args.out}/overhead-{stamp}.json and .png")
    return 0


def _plot(report: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["admission_ms", "outside_handler_ms", "handler_total_ms", "metrics_scrape_ms"]
    p50 = [report[k]["p50"] for k in keys]  # type: ignore[index]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([k.removesuffix("_ms") for k in keys], p50, color="tab:blue")
    ax.set_ylabel("ms (p50)")
    ax.set_yscale("log")
    ax.set_title("per-request gateway overhead (1-token text requests)")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
