"""Per-request records, the summary math (percentiles, throughput, goodput) and the plots of the load harness.

Definitions follow vLLM's ``bench serve`` so the two can be compared number for number:

- TTFT: request sent → first chunk carrying content.
- E2E: request sent → last chunk carrying tokens (the trailing usage chunk and ``[DONE]`` carry none).
- ITL: the gaps between consecutive content chunks.
- TPOT: (E2E − TTFT) / (completion tokens − 1), for requests with more than one completion token.
- Percentiles: numpy's linear interpolation. Throughputs divide by the run's wall-clock duration.
- Goodput: completed requests per second whose TTFT, TPOT and E2E all meet the given SLOs (ms); a request with a
  single completion token counts as TPOT 0, as in vLLM.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)
SLO_METRICS = ("ttft", "tpot", "e2el")
_SLO_ALIASES = {"e2e": "e2el"}


@dataclass
class RequestRecord:
    """What one request did. Times are seconds; ``start_s`` is on the ``time.perf_counter`` clock (result files store
    it relative to the run's start). ``e2e_s``/``ttft_s`` are ``None`` when no token arrived."""

    ok: bool
    start_s: float
    ttft_s: float | None
    e2e_s: float | None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = -1
    max_tokens: int | None = None
    status: int | None = None  # HTTP status; None when no response arrived
    error_code: str | None = None  # the OpenAI error ``code`` (or type), ``http_<status>``, or the transport failure
    error: str | None = None
    finish_reason: str | None = None
    queued_s: float = 0.0  # client-side wait for a concurrency slot before sending
    content_chunks: int = 0
    usage_reported: bool = True  # False: completion_tokens counts content chunks (no usage chunk arrived)

    @classmethod
    def from_timings(
        cls,
        *,
        start: float,
        first_token: float | None,
        chunk_times: Sequence[float],
        end: float,
        prompt_tokens: int,
        completion_tokens: int,
        index: int = -1,
        max_tokens: int | None = None,
    ) -> RequestRecord:
        """A successful request from absolute ``perf_counter`` stamps (``chunk_times`` include the first token's)."""
        ok = first_token is not None
        return cls(
            ok=ok,
            start_s=start,
            ttft_s=None if first_token is None else first_token - start,
            e2e_s=end - start if ok else None,
            itl_s=[b - a for a, b in itertools.pairwise(chunk_times)],
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            index=index,
            max_tokens=max_tokens,
            error_code=None if ok else "no_tokens",
            content_chunks=len(chunk_times),
        )

    @property
    def tpot_s(self) -> float | None:
        if not self.ok or self.ttft_s is None or self.e2e_s is None or self.completion_tokens <= 1:
            return None
        return (self.e2e_s - self.ttft_s) / (self.completion_tokens - 1)

    @property
    def ended_early(self) -> bool:
        """Completed with fewer tokens than asked for (EOS or a stop, when ``ignore_eos`` is not honoured)."""
        return self.ok and self.max_tokens is not None and self.completion_tokens < self.max_tokens

    def to_dict(self, origin: float = 0.0) -> dict[str, Any]:
        data = asdict(self)
        data["start_s"] = self.start_s - origin
        data["tpot_s"] = self.tpot_s
        return data


def percentile(values: Sequence[float], q: float) -> float:
    """numpy's linear-interpolation percentile (what vLLM's bench serve reports); NaN for no values."""
    if not values:
        return math.nan
    return float(np.percentile(np.asarray(values, dtype=float), q))


def stats_ms(values_s: Sequence[float]) -> dict[str, float | None]:
    """mean, p50/p90/p99 and max in milliseconds (None when there are no values, so the JSON stays strict)."""
    if not values_s:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}, "max": None, "count": 0}
    ms = [v * 1000 for v in values_s]
    out: dict[str, float | None] = {"mean": float(np.mean(ms))}
    out.update({f"p{q}": percentile(ms, q) for q in PERCENTILES})
    out["max"] = max(ms)
    out["count"] = len(ms)
    return out


def parse_slo(items: Sequence[str] | None) -> dict[str, float]:
    """``["ttft:500", "tpot:50"]`` → ``{"ttft": 500.0, "tpot": 50.0}`` (milliseconds; keys ttft, tpot, e2el)."""
    slo: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition(":")
        name = _SLO_ALIASES.get(name.strip().lower(), name.strip().lower())
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"invalid SLO {item!r}: expected NAME:MS with NAME one of {', '.join(SLO_METRICS)}")
        ms = float(value)
        if ms <= 0:
            raise ValueError(f"invalid SLO {item!r}: the value must be positive milliseconds")
        slo[name] = ms
    return slo


def meets_slo(record: RequestRecord, slo: Mapping[str, float]) -> bool:
    if not record.ok or record.ttft_s is None or record.e2e_s is None:
        return False
    measured = {"ttft": record.ttft_s, "tpot": record.tpot_s or 0.0, "e2el": record.e2e_s}
    return all(measured[_SLO_ALIASES.get(k, k)] * 1000 <= v for k, v in slo.items())


def summarize(
    records: Sequence[RequestRecord], *, duration_s: float, slo: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The run's summary: counts, errors by code, throughputs, latency statistics (ms) and, with SLOs, goodput."""
    done = [r for r in records if r.ok]
    failed = [r for r in records if not r.ok]
    input_tokens = sum(r.prompt_tokens for r in done)
    output_tokens = sum(r.completion_tokens for r in done)
    per_s = 1 / duration_s if duration_s > 0 else 0.0
    summary: dict[str, Any] = {
        "requests": len(records),
        "completed": len(done),
        "failed": len(failed),
        "errors": dict(Counter(r.error_code or "unknown" for r in failed).most_common()),
        "ended_early": sum(r.ended_early for r in done),
        "usage_missing": sum(not r.usage_reported for r in done),
        "duration_s": duration_s,
        "request_throughput": len(done) * per_s,
        "output_throughput": output_tokens * per_s,
        "total_token_throughput": (input_tokens + output_tokens) * per_s,
        "total_input_tokens": input_tokens,
        "total_output_tokens": output_tokens,
        "ttft_ms": stats_ms([r.ttft_s for r in done if r.ttft_s is not None]),
        "tpot_ms": stats_ms([t for r in done if (t := r.tpot_s) is not None]),
        "itl_ms": stats_ms([gap for r in done for gap in r.itl_s]),
        "e2e_ms": stats_ms([r.e2e_s for r in done if r.e2e_s is not None]),
        "queued_ms": stats_ms([r.queued_s for r in records]),
    }
    if slo:
        good = sum(meets_slo(r, slo) for r in done)
        summary["slo_ms"] = dict(slo)
        summary["good_requests"] = good
        summary["goodput"] = good * per_s
    return summary


# --- plots --------------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdfs(points: Sequence[tuple[str, Sequence[RequestRecord]]], path: Path) -> None:
    """TTFT and E2E latency CDFs, one line per load point."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, records in points:
        for ax, values in zip(
            axes,
            (
                [r.ttft_s for r in records if r.ok and r.ttft_s is not None],
                [r.e2e_s for r in records if r.ok and r.e2e_s is not None],
            ),
            strict=True,
        ):
            if not values:
                continue
            ms = np.sort(np.asarray(values, dtype=float)) * 1000
            ax.step(ms, np.arange(1, len(ms) + 1) / len(ms), where="post", label=label)
    for ax, name in zip(axes, ("TTFT", "end-to-end latency"), strict=True):
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{name} CDF")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_throughput(points: Sequence[tuple[float, Mapping[str, Any]]], load_label: str, path: Path) -> None:
    """Request and output-token throughput, and TTFT/E2E p50 and p99, against the offered load of a sweep."""
    plt = _pyplot()
    x = [p[0] for p in points]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(x, [s["request_throughput"] for _, s in points], "o-")
    axes[0].set_ylabel("requests/s")
    axes[1].plot(x, [s["output_throughput"] for _, s in points], "o-", color="tab:green")
    axes[1].set_ylabel("output tokens/s")
    for metric, colour in (("ttft_ms", "tab:orange"), ("e2e_ms", "tab:red")):
        for q, style in (("p50", "o-"), ("p99", "s--")):
            values = [s[metric][q] if s[metric][q] is not None else math.nan for _, s in points]
            axes[2].plot(x, values, style, color=colour, label=f"{metric.removesuffix('_ms')} {q}")
    axes[2].set_ylabel("ms")
    axes[2].legend(fontsize="small")
    for ax in axes:
        ax.set_xlabel(load_label)
        ax.grid(alpha=0.3)
    fig.suptitle("throughput and latency vs load")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
