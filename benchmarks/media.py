"""Media-stage benchmark against a live server: cache misses vs hits, TTFT and server-side decode throughput.

    python -m benchmarks.media --url http://127.0.0.1:8000 --model tiny-qwen3vl [--requests 40] [--concurrency 4]

Workload "unique": every request carries a different random JPEG (every fetch, decode and resize is real work).
Workload "repeated": every request carries the same JPEG (served from the prepared-media cache after the first).
TTFT is measured client-side from the streamed response; decode throughput comes from the server's own
``qwen3vl_media_stage_seconds`` metrics over the run. Writes JSON and a PNG plot to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import shlex
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


def jpeg_data_url(side: int, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


async def one_request(client: httpx.AsyncClient, url: str, model: str, image: str) -> float:
    body = {
        "model": model,
        "stream": True,
        "max_tokens": 4,
        "temperature": 0,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Hi"}],
            }
        ],
    }
    start = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                return time.perf_counter() - start
    return time.perf_counter() - start


def stage_totals(metrics_text: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("qwen3vl_media_stage_seconds_") and 'kind="image"' in line:
            name, value = line.rsplit(" ", 1)
            totals[name] = float(value)
    return totals


@dataclass
class Result:
    workload: str
    requests: int
    wall_s: float
    ttft_p50_ms: float
    ttft_p90_ms: float
    requests_per_s: float
    server_images_decoded: float
    server_decode_resize_s: float
    server_images_per_cpu_s: float


async def run(url: str, model: str, images: list[str], concurrency: int, workload: str) -> Result:
    async with httpx.AsyncClient(timeout=120) as client:
        before = stage_totals((await client.get(f"{url}/metrics")).text)
        slots = asyncio.Semaphore(concurrency)

        async def guarded(image: str) -> float:
            async with slots:
                return await one_request(client, url, model, image)

        start = time.perf_counter()
        ttfts = await asyncio.gather(*(guarded(i) for i in images))
        wall = time.perf_counter() - start
        after = stage_totals((await client.get(f"{url}/metrics")).text)
    count_key = 'qwen3vl_media_stage_seconds_count{kind="image",stage="decode"}'
    decoded = after.get(count_key, 0) - before.get(count_key, 0)
    seconds = sum(
        after.get(k, 0) - before.get(k, 0)
        for k in after
        if k.startswith("qwen3vl_media_stage_seconds_sum") and ('stage="decode"' in k or 'stage="resize"' in k)
    )
    ttft_ms = sorted(t * 1000 for t in ttfts)
    return Result(
        workload=workload,
        requests=len(images),
        wall_s=wall,
        ttft_p50_ms=statistics.median(ttft_ms),
        ttft_p90_ms=ttft_ms[int(0.9 * (len(ttft_ms) - 1))],
        requests_per_s=len(images) / wall,
        server_images_decoded=decoded,
        server_decode_resize_s=seconds,
        server_images_per_cpu_s=decoded / seconds if seconds else float("nan"),
    )


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = [r.workload for r in results]
    axes[0].bar(names, [r.ttft_p50_ms for r in results], color=["tab:orange", "tab:green"])
    axes[0].set_ylabel("TTFT p50 (ms)")
    axes[1].bar(names, [r.requests_per_s for r in results], color=["tab:orange", "tab:green"])
    axes[1].set_ylabel("requests/s")
    fig.suptitle("media cache: unique vs repeated images")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="tiny-qwen3vl")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--side", type=int, default=1536, help="image side in pixels")
    parser.add_argument(
        "--seed", type=int, default=None, help="first image seed (default: from the clock, so a warm server misses)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    if args.seed is None:
        args.seed = int(time.time()) * 1000
    unique = [jpeg_data_url(args.side, args.seed + i) for i in range(args.requests + 2)]
    repeated = [jpeg_data_url(args.side, args.seed - 1)] * args.requests
    asyncio.run(run(args.url, args.model, unique[-2:], 2, "warm-up"))
    unique = unique[: args.requests]
    results = [
        asyncio.run(run(args.url, args.model, unique, args.concurrency, "unique")),
        asyncio.run(run(args.url, args.model, repeated, args.concurrency, "repeated")),
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    command = "python -m benchmarks.media " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    report = {
        "command": command,
        "args": {k: str(v) for k, v in vars(args).items()},
        "results": [asdict(r) for r in results],
    }
    (args.out / f"media-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, args.out / f"media-{stamp}.png")
    for r in results:
        print(
            f"{r.workload:9s} ttft p50 {r.ttft_p50_ms:7.1f} ms  p90 {r.ttft_p90_ms:7.1f} ms  {r.requests_per_s:6.2f} req/s  "
            f"server decode+resize {r.server_images_per_cpu_s:6.1f} images per CPU-second ({r.server_images_decoded:.0f} images)"
        )
    print(f"wrote {args.out}/media-{stamp}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
