"""The side-by-side benchmark's report: the median run per target, the table of ratios (ours / vLLM server, ours / raw
engine), the run-by-run ratios, the plots, and publishing them (``table.md``, optionally ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.targets import ROOT
from benchmarks.workloads import Workload

__all__ = ["median_runs", "paired_ratios", "plot", "publish", "render", "saved_workloads", "table"]


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


def saved_workloads(document: dict[str, Any]) -> list[Workload]:
    """The workloads of a saved run (side_by_side.json), as they were run."""
    return [Workload(**{**w, "image_size": tuple(w["image_size"])}) for w in document["workloads"].values()]


def render(document: dict[str, Any]) -> str:
    """The Markdown report of a saved run (side_by_side.json)."""
    workloads = saved_workloads(document)
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


def publish(document: dict[str, Any], out: Path, workloads: Sequence[Workload], to_readme: bool) -> None:
    md = render(document)
    (out / "table.md").write_text(md)
    plot(document["results"], workloads, out / "side_by_side.png")
    print(md)
    if to_readme:
        (ROOT / "benchmarks" / "RESULTS.md").write_text("# Side-by-side benchmark: latest run\n\n" + md)
