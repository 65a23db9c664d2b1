"""The side-by-side benchmark's plots: throughput and /health p99 per target (side_by_side.png), and the gateway's CPU per
request by role beside the engine's (cpu_per_request.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.targets import api_workers
from benchmarks.workloads import Workload

__all__ = ["plot", "plot_cpu"]

_NAMES = {"raw": "raw engine", "vllm": "vLLM server"}
_COLORS = {"raw": "tab:gray", "vllm": "tab:blue", "ours": "tab:green"}
_MORE_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _color(target: str) -> str:
    """One color per target in every panel: ours-wN by N."""
    return _COLORS.get(target) or _MORE_COLORS[(api_workers(target) or 0) % len(_MORE_COLORS)]


def _targets(results: dict[str, Any], servers_only: bool = False) -> list[str]:
    ours = sorted((t for t in results if api_workers(t) is not None), key=lambda t: (t != "ours", api_workers(t), t))
    first = ["vllm"] if servers_only else ["raw", "vllm"]
    return [t for t in first if t in results] + ours


def _value(results: dict[str, Any], target: str, workload: str, *keys: str) -> float:
    value: Any = results.get(target, {}).get(workload, {})
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return float(value) if isinstance(value, int | float) else 0.0


def plot(results: dict[str, Any], workloads: Sequence[Workload], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [w.name for w in workloads]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8))
    x = np.arange(len(names))
    for axis, targets, keys in (
        (left, _targets(results), ("request_throughput",)),
        (right, _targets(results, servers_only=True), ("health_ms", "p99")),
    ):
        width = 0.8 / max(1, len(targets))
        for i, target in enumerate(targets):
            values = [_value(results, target, n, *keys) for n in names]
            offset = (i - (len(targets) - 1) / 2) * width
            axis.bar(x + offset, values, width, color=_color(target), label=_NAMES.get(target, target))
        axis.set_xticks(x, names, rotation=20)
    left.set_ylabel("requests / s")
    left.set_title("Throughput, same load (higher is better)")
    left.legend()
    right.axhline(20, color="grey", linestyle="--", linewidth=1, label="target 20 ms")
    right.set_ylabel("ms")
    right.set_title("/health p99 while saturated (lower is better)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cpu(results: dict[str, Any], workloads: Sequence[Workload], path: Path) -> None:
    """Left, per workload, one stacked bar per server target: the gateway's CPU ms per request by role (API processes,
    media workers, other); right, the engine processes' (the same work behind every server, and busy-waiting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names, targets = [w.name for w in workloads], _targets(results, servers_only=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(len(names))
    width = 0.8 / max(1, len(targets))
    colors = {"api": "tab:blue", "media": "tab:orange", "other": "tab:green"}
    highest = 0.0
    for i, target in enumerate(targets):
        at = x + (i - (len(targets) - 1) / 2) * width
        bottom = np.zeros(len(names))
        for role, color in colors.items():
            values = np.array([_value(results, target, n, "cpu_ms_per_request", role) for n in names])
            label = role if i == 0 else None
            left.bar(at, values, width, bottom=bottom, color=color, edgecolor="black", linewidth=0.3, label=label)
            bottom += values
        highest = max(highest, float(bottom.max(initial=0.0)))
        for xi, top in zip(at, bottom, strict=True):
            left.annotate(_NAMES.get(target, target), (xi, top), ha="center", va="bottom", fontsize=7)
        engine = [_value(results, target, n, "cpu_ms_per_request", "engine") for n in names]
        right.bar(at, engine, width, color=_color(target), label=_NAMES.get(target, target))
    left.set_title("Gateway CPU per request, by role (lower is better)")
    right.set_title("Engine processes' CPU per request")
    left.set_ylim(0, highest * 1.08 or 1.0)  # stacked zero-height bars pin the top: room for the labels by hand
    for axis in (left, right):
        axis.set_xticks(x, names, rotation=20)
        axis.set_ylabel("CPU ms / request")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
