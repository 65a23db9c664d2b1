"""The side-by-side benchmark's report: the median run per target, the table of ratios (ours / vLLM server, ours / raw
engine, ours-wN / vLLM server, gateway CPU per request), the detail per server target (CPU by role, /health, memory),
the run-by-run ratios, the plots, and publishing them (``table.md``, optionally ``benchmarks/RESULTS.md``).

Targets are whatever the run had: ``raw``, ``vllm``, ``ours`` and any ``ours-wN``; ``ours`` is the one compared with the
raw engine (the first of ours when the run had no plain ``ours``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.side_by_side_plots import plot, plot_cpu
from benchmarks.targets import ROOT, api_workers
from benchmarks.workloads import Workload

__all__ = [
    "details",
    "median_runs",
    "ours_targets",
    "paired_ratios",
    "plot",
    "plot_cpu",
    "publish",
    "render",
    "saved_workloads",
    "server_targets_of",
    "table",
]


def median_runs(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per workload, the whole summary of the run whose request throughput is the median (lower median when even):
    every column of a workload's row comes from that one run."""
    merged: dict[str, Any] = {}
    for name in runs[0]:
        ordered = sorted((r[name] for r in runs), key=lambda s: float(s.get("request_throughput", 0.0)))
        merged[name] = ordered[(len(ordered) - 1) // 2]
    return merged


def ours_targets(targets: Sequence[str]) -> list[str]:
    """Our targets, ``ours`` first, then by API processes."""
    return sorted((t for t in targets if api_workers(t) is not None), key=lambda t: (t != "ours", api_workers(t), t))


def server_targets_of(targets: Sequence[str]) -> list[str]:
    return (["vllm"] if "vllm" in targets else []) + ours_targets(targets)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _rps(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary.get("request_throughput")


def _gateway_cpu(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary.get("cpu_ms_per_request", {}).get("gateway")


def _health_p99(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary.get("health_ms", {}).get("p99")


def table(results: dict[str, Any], workloads: Sequence[Workload]) -> str:
    """One row per workload: req/s of every target, then ours / vLLM, ours / raw, ours-wN / vLLM; gateway CPU per
    request of the raw engine's process (AsyncLLM's front half: the floor of any server on it) and of every server
    target, and ours / vLLM; /health p99 while loaded of every server target."""
    ours = ours_targets(list(results))
    main, variants = ours[0], ours[1:]
    servers = ["vllm", *ours]
    head = (
        "| workload | raw engine req/s | vLLM server req/s | "
        + "".join(f"{t} req/s | " for t in ours)
        + f"{main} / vLLM | {main} / raw | "
        + "".join(f"{t} / vLLM | " for t in variants)
        + f"gateway CPU ms/request ({' / '.join(_label(t) for t in ('raw', *servers))}) | {main} / vLLM gateway CPU "
        + f"| /health p99 ms while loaded ({' / '.join(_label(t) for t in servers)}) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for w in workloads:
        row = {t: results.get(t, {}).get(w.name) for t in ("raw", *servers)}
        rps = {t: _rps(s) for t, s in row.items()}
        cells = [w.name, *(_num(rps[t]) for t in ("raw", *servers))]
        cells += [_ratio(rps[main], rps["vllm"]), _ratio(rps[main], rps["raw"])]
        cells += [_ratio(rps[t], rps["vllm"]) for t in variants]
        cpu = {t: _gateway_cpu(row[t]) for t in ("raw", *servers)}
        cells += [" / ".join(_num(cpu[t]) for t in ("raw", *servers)), _ratio(cpu[main], cpu["vllm"])]
        cells.append(" / ".join(_num(_health_p99(row[t])) for t in servers))
        lines.append("| " + " | ".join(cells) + " |")
    if "unique-448" in results[main] and "repeated-448" in results[main]:
        unique, repeated = (
            results[main]["unique-448"]["ttft_ms"]["p50"],
            results[main]["repeated-448"]["ttft_ms"]["p50"],
        )
        lines.append("")
        lines.append(
            f"Ours, repeated vs unique 448×448 images: TTFT p50 {repeated:.0f} ms vs {unique:.0f} ms "
            f"({unique / repeated:.2f}× better)."
        )
    return "\n".join(lines)


def _label(target: str) -> str:
    return "vLLM" if target == "vllm" else target


def details(results: dict[str, Any], workloads: Sequence[Workload]) -> str:
    """Per workload and server target: throughput, TTFT, /health, CPU per request by role, processes, peak RSS."""
    lines = [
        "| workload | target | req/s | TTFT p50 ms | /health p50 / p99 ms | CPU ms/request: API / media / other "
        "= gateway; engine | processes (API / media / other / engine) | peak RSS MB (largest API process / gateway "
        "/ tree) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        for target in server_targets_of(list(results)):
            s = results[target].get(w.name)
            if not s:
                continue
            cpu, procs, rss = s.get("cpu_ms_per_request", {}), s.get("processes", {}), s.get("rss_peak_mb", {})
            health = s.get("health_ms", {})
            roles = ("api", "media", "other")
            lines.append(
                f"| {w.name} | {_label(target)} | {_num(_rps(s))} | {_num(s.get('ttft_ms', {}).get('p50'), 0)} "
                f"| {_num(health.get('p50'))} / {_num(health.get('p99'))} "
                f"| {' / '.join(_num(cpu.get(r)) for r in roles)} = {_num(cpu.get('gateway'))}; "
                f"{_num(cpu.get('engine'))} "
                f"| {' / '.join(str(procs.get(r, '–')) for r in (*roles, 'engine'))} "
                f"| {' / '.join(_num(rss.get(k), 0) for k in ('api_process', 'gateway', 'process_tree'))} |"
            )
    return "\n".join(lines)


def paired_ratios(runs: dict[str, list[Any]], workloads: Sequence[Workload]) -> str:
    """Each of ours / vLLM, run by run (adjacent runs paired): throughput and gateway CPU per request, so the noise a
    single ratio carries is visible."""
    ours = ours_targets(list(runs))
    head = "| workload | " + "".join(f"{t} / vLLM req/s | {t} / vLLM gateway CPU | " for t in ours)
    lines = [head.rstrip(), "|" + "---|" * (1 + 2 * len(ours))]
    for w in workloads:
        cells = [w.name]
        for target in ours:
            pairs = list(zip(runs.get("vllm", []), runs[target], strict=False))
            cells.append(", ".join(_ratio(_rps(o.get(w.name)), _rps(v.get(w.name))) for v, o in pairs))
            cells.append(", ".join(_ratio(_gateway_cpu(o.get(w.name)), _gateway_cpu(v.get(w.name))) for v, o in pairs))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def saved_workloads(document: dict[str, Any]) -> list[Workload]:
    """The workloads of a saved run (side_by_side.json), as they were run."""
    return [Workload(**{**w, "image_size": tuple(w["image_size"])}) for w in document["workloads"].values()]


def render(document: dict[str, Any]) -> str:
    """The Markdown report of a saved run (side_by_side.json)."""
    workloads = saved_workloads(document)
    md = (
        f"Command: `{document['command']}` ({document['date']}; concurrency {document['concurrency']}; per target and "
        f"workload the run with the median throughput of {document.get('repeats', 1)} alternating runs; engine "
        f"{json.dumps(document['engine'])}; "
        f"{', '.join(f'{k} {v}' for k, v in document.get('versions', {}).items())})\n\n"
        "Gateway CPU = CPU seconds (user + system) over the measured run of the server's processes but vLLM's engine "
        "(`VLLM::EngineCore`, `VLLM::Worker`), per request sent: the API process(es), our media decode workers, "
        "anything else they started. For the raw engine it is the CPU of the process driving `AsyncLLM` (its "
        "renderer, HF processor and output processing, fed decoded arrays): the floor of any server built on it.\n\n"
    )
    md += table(document["results"], workloads) + "\n\n"
    md += details(document["results"], workloads) + "\n"
    if document.get("runs") and document.get("repeats", 1) > 1:
        md += "\n" + paired_ratios(document["runs"], workloads) + "\n"
    return md


def publish(document: dict[str, Any], out: Path, workloads: Sequence[Workload], to_readme: bool) -> None:
    md = render(document)
    (out / "table.md").write_text(md)
    plot(document["results"], workloads, out / "side_by_side.png")
    plot_cpu(document["results"], workloads, out / "cpu_per_request.png")
    print(md)
    if to_readme:
        (ROOT / "benchmarks" / "RESULTS.md").write_text("# Side-by-side benchmark: latest run\n\n" + md)
