"""Synthetic result records shared by the unit tests (no load, no pytest)."""

from __future__ import annotations

import math
from typing import Any

from pytest_mlload.results import CapacityResult, OpenLoopWindow, ProbeResult

WINDOW_SD = 0.015  # a run's own window: a 95 % interval of about +-3 %


def window(
    rate: float,
    p99_ms: float | None,
    *,
    error_ratio: float = 0.0,
    p99_ci: tuple[float, float] | None = None,
    duration_s: float = 5.0,
) -> OpenLoopWindow:
    """One constant-arrival window at ``rate`` req/s, all sent, ``error_ratio`` failing."""
    requests = int(rate * duration_s)
    return OpenLoopWindow(
        rate_rps=rate,
        sent_rps=rate,
        goodput_rps=rate * (1 - error_ratio),
        requests=requests,
        failures=round(requests * error_ratio),
        error_ratio=error_ratio,
        p50_ms=None if p99_ms is None else p99_ms / 2,
        p95_ms=None if p99_ms is None else p99_ms * 0.9,
        p99_ms=p99_ms,
        p99_ci=p99_ci,
        dispatch_lag_p95_ms=1.0,
        duration_s=duration_s,
    )


def converged(
    cap: float = 200.0,
    p99: float = 100.0,
    *,
    users: int = 20,
    window_sd: float = WINDOW_SD,
    requests: int = 3000,
    error_ratio: float = 0.0,
    probe_p99: float | None = None,
    probe_users: int | None = None,
    name: str = "",
    **typed: Any,
) -> CapacityResult:
    """A converged result at ``users`` with intervals of ``window_sd`` (log scale), probing
    P99 at ``probe_users`` (default: its own load); ``typed`` sets the typed figures
    (``rate_limit_rps``, ``spike``, ``open_loop``, ...)."""
    w = math.exp(1.96 * window_sd)
    probe_p99 = p99 if probe_p99 is None else probe_p99
    return CapacityResult(
        name=name,
        host="http://127.0.0.1:9",
        status="converged",
        reason="",
        capacity_rps=cap,
        p50_ms=p99 / 2,
        p95_ms=p99 * 0.9,
        p99_ms=p99,
        users=users,
        requests=requests,
        failures=round(error_ratio * requests),
        error_ratio=error_ratio,
        measure_s=15.0,
        elapsed_s=30.0,
        target_p99_ms=120.0,
        capacity_ci=(cap / w, cap * w),
        p99_ci=(p99 / w, p99 * w),
        probe=ProbeResult(
            users=users if probe_users is None else probe_users,
            p50_ms=probe_p99 / 2,
            p99_ms=probe_p99,
            requests=requests,
            failures=0,
            duration_s=10.0,
            p99_ci=(probe_p99 / w, probe_p99 * w),
        ),
        **typed,
    )
