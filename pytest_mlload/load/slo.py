"""SLO attainment and goodput of a window of streamed requests (pure numpy, no clock).

With any of ``ttft_p99_ms``, ``tpot_p99_ms``, ``e2e_p99_ms`` set (*SLO mode*), each request
of a window is

* **conforming**: it succeeded and met every limit set;
* **not conforming**: it failed (errors count against attainment: a server that drops
  traffic must not look good), or missed a limit;
* **undetermined**: it succeeded but a set limit cannot be measured on it (TPOT of a
  one-token answer, or a plain request in a mixed window): left out of both counts, so
  attainment is not biased.

``attainment = conforming / determined`` with a 95 % Wilson interval ``[lo, hi]``; for a
target ``a``: ``lo >= a`` **meets**, ``hi < a`` **misses**, otherwise **unresolved**: not a
decision. Goodput is conforming requests per second; the controller measures it on
:func:`conforming_view`, the window with ``ok`` replaced by the conforming mask, so the
throughput code (rates, their noise, bootstrap intervals) serves goodput unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_mlload.config import RunSettings
from pytest_mlload.results import StreamResult
from pytest_mlload.stats import (
    min_samples_for_attainment,
    percentiles,
    quantile_ci,
    rate_ci,
    wilson_interval,
)

if TYPE_CHECKING:
    from pytest_mlload.load.controller import Samples

__all__ = [
    "NO_STREAM",
    "Attainment",
    "attainment",
    "conforming_view",
    "headroom",
    "min_window_samples",
    "stream_result",
]

NO_STREAM = (
    "no streamed request: the SLOs {names} need an openai_chat/openai_completions target or "
    "a TaskSet that calls record_stream"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attainment:
    """The share of a window's determined requests that met every SLO, with its interval."""

    conforming: int
    determined: int
    undetermined: int
    target: float
    low: float
    high: float

    @property
    def ratio(self) -> float | None:
        """conforming / determined; None when nothing was determined."""
        return self.conforming / self.determined if self.determined else None

    @property
    def decision(self) -> str:
        """``meets`` (the interval is at or over the target), ``misses`` (under it) or
        ``unresolved`` (it straddles the target: not a decision)."""
        if self.determined and self.low >= self.target:
            return "meets"
        if self.determined and self.high < self.target:
            return "misses"
        return "unresolved"

    def describe(self) -> str:
        """E.g. "SLO attainment 93.9 % (95 % CI 91.2..96.0 %, 412 requests) straddles 95 %"."""
        verb = {"meets": "meets", "misses": "misses", "unresolved": "straddles"}[self.decision]
        if self.ratio is None:
            return f"SLO attainment unknown (no determined request) straddles {self.target:.1%}"
        return (
            f"SLO attainment {self.ratio:.1%} (95 % CI {self.low:.1%}..{self.high:.1%}, "
            f"{self.determined} requests) {verb} {self.target:.1%}"
        )


def _masks(w: Samples, settings: RunSettings) -> tuple[np.ndarray, np.ndarray]:
    """(conforming, determined) per request of ``w``."""
    st = w.stream
    nan = np.full(w.requests, np.nan)
    limits = (
        (settings.e2e_p99_ms, w.latency_ms),
        (settings.ttft_p99_ms, st.ttft_ms if st is not None else nan),
        (settings.tpot_p99_ms, st.tpot_ms if st is not None else nan),
    )
    measurable = np.ones(w.requests, dtype=bool)
    conforming = w.ok.copy()
    for limit, values in limits:
        if limit > 0:
            known = ~np.isnan(values)
            measurable &= known
            with np.errstate(invalid="ignore"):
                conforming &= known & (values <= limit)
    determined = ~w.ok | measurable  # a failure is determined (not conforming) anyway
    return conforming, determined


def attainment(w: Samples, settings: RunSettings) -> Attainment:
    """The window's SLO attainment and its 95 % Wilson interval (module docstring)."""
    conforming, determined = _masks(w, settings)
    k, n = int(np.count_nonzero(conforming)), int(np.count_nonzero(determined))
    low, high = wilson_interval(k, n)
    return Attainment(
        conforming=k,
        determined=n,
        undetermined=w.requests - n,
        target=settings.slo_attainment,
        low=low,
        high=high,
    )


def conforming_view(w: Samples, settings: RunSettings) -> Samples:
    """``w`` with ``ok`` = conforming: its ``rps`` is the goodput. ``w`` itself outside SLO
    mode (goodput is then the successful-request rate)."""
    if not settings.slo_mode:
        return w
    return replace(w, ok=_masks(w, settings)[0])


def min_window_samples(settings: RunSettings) -> int:
    """Requests a window needs before its attainment can meet the target at all."""
    return min_samples_for_attainment(settings.slo_attainment) if settings.slo_mode else 1


def headroom(w: Samples, settings: RunSettings) -> float | None:
    """Smallest ``limit / (the window's quantile at slo_attainment of that figure)`` over
    the SLOs set: how far the load can grow (None when nothing was measured)."""
    st, q = w.stream, settings.slo_attainment * 100.0
    figures = [(settings.e2e_p99_ms, w.latency_ms[w.ok])]
    if st is not None:
        figures += [
            (settings.ttft_p99_ms, st.ttft_ms[w.ok]),
            (settings.tpot_p99_ms, st.tpot_ms[w.ok]),
        ]
    ratios = []
    for limit, values in figures:
        values = values[~np.isnan(values)]
        if limit > 0 and values.size:
            at = float(np.percentile(values, q))
            ratios.append(limit / at if at > 0 else math.inf)
    return min(ratios) if ratios else None


def _pct(values: np.ndarray, q: float) -> float | None:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if values.size else None


def _p99_ci(values: np.ndarray) -> tuple[float, float] | None:
    values = values[~np.isnan(values)]
    ci = quantile_ci(values, 0.99) if values.size else None
    return None if ci is None or not all(math.isfinite(v) for v in ci) else (ci[0], ci[1])


def stream_result(w: Samples | None, settings: RunSettings) -> StreamResult | None:
    """The :class:`StreamResult` of a window, None when none of its requests streamed."""
    if w is None or w.stream is None:
        return None
    st, ok = w.stream, w.ok & w.stream.streamed
    good = conforming_view(w, settings)
    g_ok = good.end_s[good.ok]
    ci = rate_ci(g_ok, w.start_s, w.stop_s)[1:] if g_ok.size else None
    att = attainment(w, settings) if settings.slo_mode else None
    tokens = int(st.output_tokens[ok].sum())
    chunks = int(st.chunks[ok & st.usage].sum())
    kinds = {bool(u) for u in st.usage[ok]}
    extra: dict[str, Any] = {}
    if att is not None:
        extra = {
            "slo_attainment": att.ratio,
            "slo_attainment_ci": (att.low, att.high) if att.determined else None,
            "slo_target": att.target,
            "slo_decision": att.decision,
            "determined": att.determined,
            "undetermined": att.undetermined,
        }
    return StreamResult(
        goodput_rps=good.rps,
        goodput_ci=ci if ci is not None and all(math.isfinite(v) for v in ci) else None,
        streamed=int(np.count_nonzero(st.streamed)),
        ttft_p50_ms=_pct(st.ttft_ms[ok], 50),
        ttft_p99_ms=_pct(st.ttft_ms[ok], 99),
        ttft_p99_ci=_p99_ci(st.ttft_ms[ok]),
        tpot_p50_ms=_pct(st.tpot_ms[ok], 50),
        tpot_p99_ms=_pct(st.tpot_ms[ok], 99),
        tpot_p99_ci=_p99_ci(st.tpot_ms[ok]),
        itl_p99_ms=_pct(st.itl_ms[ok[st.itl_row]] if st.itl_row.size else st.itl_ms, 99),
        e2e_p99_ms=percentiles(w.latency_ms[ok])["p99_ms"] if ok.any() else None,
        ttfb_p50_ms=_pct(st.ttfb_ms[ok], 50),
        output_tokens_per_s=tokens / w.duration_s,
        token_source="mixed" if len(kinds) > 1 else ("usage" if kinds == {True} else "chunks"),
        usage_to_chunks_ratio=(
            float(st.output_tokens[ok & st.usage].sum()) / chunks if chunks else None
        ),
        **extra,
    )
