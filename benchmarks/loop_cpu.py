"""The API process's CPU per image request, two source trees side by side (the gateway's own cost, not the decoders').

    python -m benchmarks.loop_cpu --baseline /path/to/old/checkout [--tree .] [--reps 3] [--requests 24]

Each tree is served by its own process (``serve``: ``create_app`` with the ``FakeEngine``, 16 scripted tokens, warm-up
off, behind the same h11 protocol and limits as ``qwen3vl-server``), on a port of its own; both run at once and are
driven alternately (old first on even repetitions, new first on odd ones), so drift on a shared machine hits both alike.
Every request carries a unique JPEG as a base64 data URL (448x448 and 1536x1536, smooth noise, ~0.1 and ~1 MB of
base64) and asks for 16 tokens, streaming or not. The server process's CPU (user + system of all its threads, from
/proc; the sandboxed decode workers are child processes and not counted) is read before and after each batch:
CPU per request, and the ratio new / old per repetition (median over repetitions: only paired ratios mean anything
on a busy two-core box). ``/health`` is polled during each batch (p50 / p99). Writes JSON and a PNG to
benchmarks/results/ and prints the command that made them.

The served tree is imported by path in the ``serve`` child process (``importlib``, after putting the tree first on
``sys.path``): the benchmark itself depends on no server code, and each tree runs its own.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

WORKLOADS: tuple[tuple[str, int, bool], ...] = (
    ("448-stream", 448, True),
    ("448-whole", 448, False),
    ("1536-stream", 1536, True),
    ("1536-whole", 1536, False),
)
MODEL = "fake-qwen3vl"
TOKENS = 16


def serve(tree: Path) -> None:
    """Serve ``tree``'s app on a free loopback port (printed on stdout) until killed."""
    sys.path.insert(0, str(tree.resolve()))
    uvicorn = importlib.import_module("uvicorn")
    app_module = importlib.import_module("server.app")
    config_module = importlib.import_module("server.config")
    fake = importlib.import_module("server.engine.fake")
    protocol = importlib.import_module("server.api.http_protocol")
    settings = config_module.Settings(warmup=False, log_level="warning")
    engine = fake.FakeEngine(script=tuple(f" t{i}" for i in range(TOKENS)))
    app = app_module.create_app(settings, engine=engine)
    config = uvicorn.Config(
        app,
        log_level="warning",
        http=protocol.limited_h11(protocol.HttpLimits()),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws="none",
        access_log=False,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], app_module.__file__, flush=True)
    uvicorn.Server(config).run(sockets=[sock])


def jpeg(side: int, seed: int) -> bytes:
    """Smooth noise (bicubic from 1/6 scale) at quality 85: about 1 MB of base64 at 1536x1536, like a photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(max(side // 6, 1), max(side // 6, 1), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def unique(base: bytes, tag: str) -> str:
    """The same picture with a distinct JPEG comment segment: other bytes (other hash), the same decode work."""
    comment = tag.encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return "data:image/jpeg;base64," + base64.b64encode(base[:2] + segment + base[2:]).decode()


def body(image: str, stream: bool) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": "Describe this image."}]
    out: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": TOKENS}
    if stream:
        out |= {"stream": True, "stream_options": {"include_usage": True}}
    return out


async def one(client: httpx.AsyncClient, payload: bytes, stream: bool) -> None:
    headers = {"content-type": "application/json"}
    if not stream:
        response = await client.post("/v1/chat/completions", content=payload, headers=headers)
        response.raise_for_status()
        return
    async with client.stream("POST", "/v1/chat/completions", content=payload, headers=headers) as response:
        response.raise_for_status()
        chunks = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    if chunks[-1] != "data: [DONE]" or len(chunks) < TOKENS + 2:
        raise RuntimeError(f"short stream: {len(chunks)} events")


async def health_probe(client: httpx.AsyncClient, stop: asyncio.Event, out: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        (await client.get("/health")).raise_for_status()
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` (not of its children): /proc/PID/stat's utime and stime."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Batch:
    tree: str
    workload: str
    rep: int
    requests: int
    cpu_s: float
    wall_s: float
    health_p50_ms: float
    health_p99_ms: float

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_s / self.requests * 1000


async def batch(
    port: int, pid: int, payloads: list[bytes], stream: bool, concurrency: int
) -> tuple[float, float, list[float]]:
    limits = httpx.Limits(max_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as client:
        await one(client, payloads[0], stream)  # connections open, nothing cold
        slots = asyncio.Semaphore(concurrency)
        health: list[float] = []
        stop = asyncio.Event()

        async def guarded(payload: bytes) -> None:
            async with slots:
                await one(client, payload, stream)

        before, started = cpu_seconds(pid), time.perf_counter()
        prober = asyncio.create_task(health_probe(client, stop, health))
        await asyncio.gather(*(guarded(p) for p in payloads[1:]))
        stop.set()
        await prober
        after, wall = cpu_seconds(pid), time.perf_counter() - started
    return after - before, wall, health


def start(tree: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve", str(tree)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port_text, source = proc.stdout.readline().split()
    print(f"serving {source} (pid {proc.pid}) on port {port_text}", flush=True)
    port = int(port_text)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{tree} did not become ready")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def run(args: argparse.Namespace) -> list[Batch]:
    trees = {"old": args.baseline, "new": args.tree}
    servers = {name: start(path) for name, path in trees.items()}
    bases = {side: jpeg(side, side) for _, side, _ in WORKLOADS}
    results: list[Batch] = []
    try:
        for rep in range(args.reps):
            for workload, side, stream in WORKLOADS:
                order = ["old", "new"] if rep % 2 == 0 else ["new", "old"]
                for name in order:
                    proc, port = servers[name]
                    tags = (f"{name}-{rep}-{workload}-{i}" for i in range(args.requests + 1))
                    payloads = [json.dumps(body(unique(bases[side], t), stream)).encode() for t in tags]
                    cpu, wall, health = asyncio.run(batch(port, proc.pid, payloads, stream, args.concurrency))
                    row = Batch(name, workload, rep, args.requests, cpu, wall, pct(health, 0.5), pct(health, 0.99))
                    results.append(row)
                    print(
                        f"rep {rep} {workload:12s} {name}: {row.cpu_ms_per_request:7.2f} ms CPU/request, "
                        f"{args.requests / wall:6.1f} req/s, /health p99 {row.health_p99_ms:6.1f} ms",
                        flush=True,
                    )
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    return results


def summarize(results: list[Batch]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for workload, _, _ in WORKLOADS:
        rows = {(r.tree, r.rep): r for r in results if r.workload == workload}
        reps = sorted({rep for _, rep in rows})
        ratios = [rows["new", rep].cpu_ms_per_request / rows["old", rep].cpu_ms_per_request for rep in reps]
        summary[workload] = {
            "old_cpu_ms_per_request": statistics.median(rows["old", r].cpu_ms_per_request for r in reps),
            "new_cpu_ms_per_request": statistics.median(rows["new", r].cpu_ms_per_request for r in reps),
            "ratio_new_over_old": statistics.median(ratios),
            "old_health_p99_ms": statistics.median(rows["old", r].health_p99_ms for r in reps),
            "new_health_p99_ms": statistics.median(rows["new", r].health_p99_ms for r in reps),
        }
    return summary


def plot(summary: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [summary[n]["old_cpu_ms_per_request"] for n in names], 0.4, label="old")
    ax.bar(x + 0.2, [summary[n]["new_cpu_ms_per_request"] for n in names], 0.4, label="new")
    for i, n in enumerate(names):
        ax.annotate(f"x{summary[n]['ratio_new_over_old']:.2f}", (i, summary[n]["old_cpu_ms_per_request"]), ha="center")
    ax.set_xticks(x, names)
    ax.set_ylabel("API-process CPU ms per request (median)")
    ax.set_title("gateway CPU per image request, old vs new tree (ratio: median of paired runs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        serve(Path(argv[1]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the old tree")
    parser.add_argument("--tree", type=Path, default=Path("."), help="checkout of the new tree")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--requests", type=int, default=24, help="per batch (one tree, one workload)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    results = run(args)
    summary = summarize(results)
    command = "python -m benchmarks.loop_cpu " + " ".join(shlex.quote(a) for a in argv)
    report = {"command": command, "summary": summary, "batches": [asdict(r) for r in results]}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"loop_cpu-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(summary, args.out / f"loop_cpu-{stamp}.png")
    for workload, values in summary.items():
        print(
            f"{workload:12s} old {values['old_cpu_ms_per_request']:7.2f}  new {values['new_cpu_ms_per_request']:7.2f}"
            f" ms CPU/request  ratio {values['ratio_new_over_old']:.2f}  /health p99 old "
            f"{values['old_health_p99_ms']:.1f} new {values['new_health_p99_ms']:.1f} ms"
        )
    print(f"command: {command}\nwrote {args.out}/loop_cpu-{stamp}.json and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
