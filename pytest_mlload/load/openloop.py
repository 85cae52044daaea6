"""Open-loop (fixed arrival rate) measurement: schedules and summaries, pure numpy.

Locust users are closed-loop: a slow server slows the senders, so the latency of a stall is
sampled only once per user and P99 comes out too kind (coordinated omission). An open-loop
phase sends requests at *scheduled* times whatever the server does, and measures latency
from the intended send time, so queueing behind a stall counts in full (as wrk2 does).
The executor lives in the load driver; this module decides what to send and what it meant.
"""

from __future__ import annotations

import errno
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pytest_mlload.results import OpenLoopWindow
from pytest_mlload.stats import percentiles, quantile_ci

__all__ = [
    "LOCAL_ERRNOS",
    "OpenLoopSamples",
    "arrival_times",
    "local_error_reason",
    "recovery_time_s",
    "summarize",
]

# Errors of the load generator's own machine, not of the server: out of file descriptors,
# out of ephemeral ports or buffers. A request failing with one never reached the server.
LOCAL_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.ENOBUFS, errno.ENOMEM}
)
_ERRNO_TEXT = re.compile(r"\[Errno (\d+)\]")


def local_error_reason(exc: BaseException | None, _depth: int = 0) -> str | None:
    """``"EMFILE: Too many open files"`` when ``exc`` (or what it wraps: ``__cause__``,
    ``__context__``, ``reason``, ``args``, as requests/urllib3 nest them) is a local resource
    error of :data:`LOCAL_ERRNOS`; None for anything the server may have caused."""
    if exc is None or _depth > 6:
        return None
    if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
        return f"{errno.errorcode[exc.errno]}: {exc.strerror or exc}"
    inner = [exc.__cause__, exc.__context__, getattr(exc, "reason", None)]
    inner += [a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)]
    for nested in inner:
        if isinstance(nested, BaseException) and nested is not exc:
            found = local_error_reason(nested, _depth + 1)
            if found:
                return found
    m = _ERRNO_TEXT.search(str(exc)) if _depth == 0 else None  # wrapped into a message only
    if m and int(m[1]) in LOCAL_ERRNOS:
        code = int(m[1])
        return f"{errno.errorcode[code]}: {os.strerror(code)}"
    return None


def arrival_times(start_s: float, segments: Sequence[tuple[float, float]]) -> np.ndarray:
    """Evenly spaced arrival times for consecutive ``(duration_s, rate_rps)`` segments."""
    out: list[np.ndarray] = []
    t = start_s
    for duration, rate in segments:
        if duration <= 0:
            continue
        n = int(math.floor(duration * rate))
        if n > 0:
            out.append(t + np.arange(n) / rate)
        t += duration
    return np.concatenate(out) if out else np.empty(0)


@dataclass(frozen=True, slots=True)
class OpenLoopSamples:
    """Per-arrival records: intended send time, actual send time (a worker started it),
    completion time (``inf`` if it never finished), success, and ``local``: arrivals that
    say nothing about the server (a local error such as EMFILE, or no request sent), left
    out of every figure and counted apart."""

    intended_s: np.ndarray
    dispatched_s: np.ndarray
    end_s: np.ndarray
    ok: np.ndarray
    local: np.ndarray | None = None

    def local_mask(self) -> np.ndarray:
        """``local`` as a boolean array (all False when not recorded)."""
        if self.local is None:
            return np.zeros(self.intended_s.size, dtype=bool)
        return np.asarray(self.local, dtype=bool)

    @property
    def latency_ms(self) -> np.ndarray:
        """Latency from the *intended* send time (coordinated-omission free), in ms."""
        return np.asarray((self.end_s - self.intended_s) * 1000.0)

    def latencies_ms(self, horizon_s: float) -> np.ndarray:
        """Every arrival's latency, failures included with the time they took.

        An arrival that never finished waited at least until ``horizon_s`` (when the
        recording ended): it counts with that lower bound, so a request that timed out or hung
        raises the percentiles instead of leaving them. Ordered by intended send time.
        """
        end = np.where(np.isfinite(self.end_s), self.end_s, max(horizon_s, 0.0))
        return np.asarray(np.maximum(end - self.intended_s, 0.0) * 1000.0)

    def horizon_s(self) -> float:
        """The last moment anything was recorded (latest completion or dispatch)."""
        seen = np.concatenate([self.end_s, self.dispatched_s, self.intended_s])
        seen = seen[np.isfinite(seen)]
        return float(seen.max()) if seen.size else 0.0

    def between(self, start_s: float, stop_s: float) -> OpenLoopSamples:
        """Arrivals intended in ``[start_s, stop_s)``."""
        sel = (self.intended_s >= start_s) & (self.intended_s < stop_s)
        local = None if self.local is None else self.local_mask()[sel]
        return OpenLoopSamples(
            self.intended_s[sel], self.dispatched_s[sel], self.end_s[sel], self.ok[sel], local
        )

    def server_side(self) -> OpenLoopSamples:
        """The arrivals that reached the server (``local`` ones left out)."""
        keep = ~self.local_mask()
        return OpenLoopSamples(
            self.intended_s[keep], self.dispatched_s[keep], self.end_s[keep], self.ok[keep]
        )


def summarize(
    samples: OpenLoopSamples, start_s: float, stop_s: float, rate_rps: float
) -> OpenLoopWindow:
    """Summarize arrivals intended in ``[start_s, stop_s)``; unfinished ones count as failures.

    Percentiles and the P99 interval cover every arrival: failures with the time they took,
    unfinished ones as waiting at least until the recording ended (see
    :meth:`OpenLoopSamples.latencies_ms`). ``sent_rps`` counts arrivals actually dispatched
    inside the window: when it falls short of ``rate_rps`` the generator, not the server, was
    the limit. Arrivals marked ``local`` (a generator-side error, no request sent) are not
    server failures: they are left out and counted in ``local_errors``.
    """
    window = samples.between(start_s, stop_s)
    local = int(np.count_nonzero(window.local_mask()))
    w = window.server_side()
    duration = max(stop_s - start_s, 1e-9)
    done = np.isfinite(w.end_s)
    ok = w.ok & done
    lat = w.latencies_ms(max(samples.horizon_s(), stop_s))
    pct = percentiles(lat)
    ci = quantile_ci(lat, 0.99) if lat.size else None
    # what the generator dispatched, locally failed arrivals included: its pace, not the server's
    sent = np.count_nonzero((window.dispatched_s >= start_s) & (window.dispatched_s < stop_s))
    lag = (window.dispatched_s - window.intended_s) * 1000.0
    n = int(w.intended_s.size)
    failures = n - int(np.count_nonzero(ok))
    return OpenLoopWindow(
        rate_rps=rate_rps,
        sent_rps=sent / duration,
        goodput_rps=int(np.count_nonzero(ok)) / duration,
        requests=n,
        failures=failures,
        error_ratio=failures / n if n else 0.0,
        p50_ms=pct["p50_ms"],
        p95_ms=pct["p95_ms"],
        p99_ms=pct["p99_ms"],
        p99_ci=(float(ci[0]), float(ci[1])) if ci else None,
        dispatch_lag_p95_ms=float(np.percentile(lag, 95)) if lag.size else None,
        duration_s=duration,
        local_errors=local,
    )


def recovery_time_s(
    samples: OpenLoopSamples,
    spike_end_s: float,
    pre_p99_ms: float,
    *,
    window_s: float = 1.0,
    step_s: float = 0.25,
    factor: float = 1.25,
    min_samples: int = 10,
) -> float | None:
    """Seconds after the spike until a window of arrivals has P99 back near the pre-spike P99.

    Windows of ``window_s`` slide by ``step_s`` from the end of the spike; the first whose
    P99 (latency from intended send time, failures included) is at most ``factor`` x
    ``pre_p99_ms`` marks recovery, reported as its start minus the spike end. ``None`` when
    no window recovers within the recorded arrivals.
    """
    after = samples.intended_s >= spike_end_s
    if not np.any(after):
        return None
    last = float(samples.intended_s[after].max())
    horizon = samples.horizon_s()
    t = spike_end_s
    while t + window_s <= last + 1e-9:
        w = samples.between(t, t + window_s)
        lat = w.latencies_ms(horizon)
        if lat.size >= min_samples and float(np.percentile(lat, 99)) <= factor * pre_p99_ms:
            return t - spike_end_s
        t += step_s
    return None
