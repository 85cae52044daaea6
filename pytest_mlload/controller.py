"""The adaptive capacity search: observations in, decisions out.

Nothing here imports Locust or reads a clock of its own. :func:`run_search` drives a
:class:`CapacitySearch` with any :class:`LoadGenerator` and :class:`Clock`: the Locust driver
process passes real ones, the unit tests and benchmarks pass the simulated service from
:mod:`pytest_mlload.simulate` with a fake clock, so the same code is exercised everywhere.

The search, for a P99 target ``T``:

1. **Ramp.** Start at ``min_users`` and multiply the user count by 2 to 4 (by the headroom
   ``T / P99``) while the window's P99 stays at or under ``T`` (and errors under the cap),
   up to ``max_users``.
2. **Refine.** Interpolate (safeguarded like bisection) on the user count between the highest
   good level ``lo`` and the lowest bad level ``hi`` until they are adjacent, or ``lo``'s
   P99 is within ``tolerance`` under ``T`` (close enough: throughput barely moves there).
3. **Measure.** Hold ``lo`` users for a longer window (``measure_s``, extended until
   ``min_samples`` requests): that window *is* the operating point. Its successful-request
   throughput is the capacity.
4. **Probe** (optional). Hold the baseline's user count for ``probe_s`` and measure P99 there,
   so a P99 regression is judged at the same load as the baseline, not at the controlled
   P99 (which would only measure controller noise).

The gated windows (measure, probe) grow, up to three times their length and never into the
last quarter of the time cap, while the 95 % interval of a figure they are judged on is wider
than +-threshold/4: capacity for the measure window; P99 for the probe, and for a measure
window that is recorded as the baseline's P99 or doubles as the probe.

Every level change is followed by a settle period (``settle_s`` or twice the last P99,
whichever is longer) whose samples are discarded, so the transient is never measured.
Windows are sized by sample count, bounded in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import RunSettings
from .results import CapacityResult, EndpointResult, ProbeResult, WindowRecord
from .stats import min_samples_for_quantile, percentiles, quantile_ci, rate_ci

__all__ = [
    "CapacitySearch",
    "Clock",
    "LoadGenerator",
    "Samples",
    "Step",
    "build_result",
    "run_search",
]

# Requests a window must hold before its P99 is trusted for a decision: far from the target
# (ramp) a coarse P99 is enough, near it (refine) a little more; the gated windows (measure,
# probe) hold at least settings.min_samples and enough for a P99 confidence interval.
RAMP_MIN_SAMPLES = 100
REFINE_MIN_SAMPLES = 200
TICK_S = 0.05
P99_CI_SAMPLES = min_samples_for_quantile(0.99)  # 299 for a 95 % interval
PRECISION_CHECK_S = 0.5  # how often a measure window re-checks its interval
PRECISION_BOOT = 400  # bootstrap resamples for that check (the report uses the full 2000)
MIN_PRECISION = 0.01  # never ask for an interval tighter than +-1 %
RESERVE_RATIO = 0.25  # share of max_duration_s a measure window never extends into
# Above this share of one core the load generator itself inflates latency: not a verdict.
GENERATOR_CPU_CAP = 0.8
SATURATION_GAIN = 0.10  # less than +10 % throughput from a larger ramp step: saturated
WARMUP_S = 1.0  # the first window waits this long: connections, caches, lazy model loads
RAMP_HEADROOM = 0.8  # aim the ramp at 80 % of the target, so the step rarely overshoots
MAX_SETTLE_S = 2.0


class Clock(Protocol):
    """Time source of a search: seconds on a monotonic scale."""

    def now(self) -> float:
        """Current time in seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass (the load keeps running meanwhile)."""
        ...


@dataclass(frozen=True, slots=True)
class Samples:
    """Raw per-request records of one window: completion time, latency, success, name."""

    end_s: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    name: np.ndarray
    start_s: float
    stop_s: float
    error_texts: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        """Window length in seconds."""
        return max(self.stop_s - self.start_s, 1e-9)

    @property
    def requests(self) -> int:
        """Completed requests (successes and failures)."""
        return int(self.ok.size)

    @property
    def successes(self) -> int:
        """Successful requests."""
        return int(np.count_nonzero(self.ok))

    @property
    def failures(self) -> int:
        """Failed requests (HTTP errors, exceptions, ``response.failure()``)."""
        return self.requests - self.successes

    @property
    def error_ratio(self) -> float:
        """Failures / requests, 0 for an empty window."""
        return self.failures / self.requests if self.requests else 0.0

    @property
    def rps(self) -> float:
        """Successful requests per second (goodput)."""
        return self.successes / self.duration_s

    def ok_latencies(self) -> np.ndarray:
        """Latencies of successful requests, in ms."""
        return self.latency_ms[self.ok]

    def p99_ms(self) -> float | None:
        """P99 of successful requests' raw latencies (None when there are none)."""
        lat = self.ok_latencies()
        return float(np.percentile(lat, 99)) if lat.size else None

    def for_name(self, name: str) -> Samples:
        """The subset of this window whose request name is ``name``."""
        sel = self.name == name
        return Samples(
            self.end_s[sel],
            self.latency_ms[sel],
            self.ok[sel],
            self.name[sel],
            self.start_s,
            self.stop_s,
        )


class LoadGenerator(Protocol):
    """What the search needs from a load generator (Locust in the driver, a simulation in tests)."""

    def set_users(self, users: int) -> None:
        """Change the number of concurrent users; returns once they are running."""
        ...

    def count_since(self, t: float) -> int:
        """Number of requests completed at or after time ``t``."""
        ...

    def window(self, start_s: float, stop_s: float) -> Samples:
        """Requests completed in ``[start_s, stop_s]``."""
        ...


@dataclass(frozen=True, slots=True)
class Step:
    """One instruction of the search: hold ``users`` and measure a window."""

    phase: str
    users: int
    settle_s: float
    min_samples: int
    min_s: float
    max_s: float


@dataclass(slots=True)
class _Level:
    users: int
    p99_ms: float | None
    error_ratio: float
    requests: int
    rps: float = 0.0


@dataclass(slots=True)
class CapacitySearch:
    """State machine of the capacity search (see module docstring).

    Call :meth:`next_step`, run it, feed the window to :meth:`observe`; repeat until
    :meth:`next_step` returns ``None``. ``probe_users`` asks for a P99 probe at that load.
    """

    settings: RunSettings
    probe_users: int | None = None
    phase: str = "ramp"
    users: int = 0
    lo: _Level | None = None
    hi: _Level | None = None
    last_p99_ms: float | None = None
    measurement: Samples | None = None
    probe: Samples | None = None
    status: str = "running"
    reason: str = ""
    retried_measure: bool = False
    trajectory: list[WindowRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.users = self.settings.min_users
        if self.probe_users is not None:
            self.probe_users = max(1, int(self.probe_users))

    # -- decisions -----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the search has a final status."""
        return self.status != "running"

    def _settle(self) -> float:
        last = (self.last_p99_ms or 0.0) / 1000.0
        first = WARMUP_S if not self.trajectory else 0.0
        return min(max(self.settings.settle_s, 2.0 * last, first), MAX_SETTLE_S)

    def next_step(self) -> Step | None:
        """The next window to run, or ``None`` when the search is finished."""
        if self.done:
            return None
        s = self.settings
        settle = self._settle()
        if self.phase == "ramp":
            return Step("ramp", self.users, settle, min(RAMP_MIN_SAMPLES, s.min_samples), 0.5, 1.5)
        if self.phase == "refine":
            return Step(
                "refine", self.users, settle, min(REFINE_MIN_SAMPLES, s.min_samples), 0.75, 2.0
            )
        # Gated windows need enough samples for a P99 confidence interval.
        gated = max(s.min_samples, P99_CI_SAMPLES)
        if self.phase == "measure":
            return Step("measure", self.users, settle, gated, s.measure_s, 3 * s.measure_s)
        if self.phase == "probe":
            return Step("probe", self.users, settle, gated, s.probe_s, 3 * s.probe_s)
        raise AssertionError(f"unknown phase {self.phase}")

    def precise_enough(self, w: Samples, phase: str = "measure") -> bool:
        """Whether a gated window's intervals are narrow enough to end it.

        A window keeps growing (up to its ``max_s``, within the time cap) while a 95 % interval
        it is judged on has a half-width above a quarter of the threshold: a verdict with a
        wide interval would come out inconclusive, so measuring longer is the cheaper fix.
        The measure window is judged on its capacity (block bootstrap of the throughput); the
        probe, and a measure window that doubles as the probe, on its P99 (order statistics).
        """
        ok = w.end_s[w.ok]
        if ok.size == 0:
            return True
        want = max(self.settings.threshold / 4, MIN_PRECISION)
        if phase == "probe" or self.probe_users in (None, self.users):
            p99 = w.p99_ms()
            ci = quantile_ci(w.ok_latencies(), 0.99)
            if p99 is None or ci is None or p99 <= 0 or (ci[1] - ci[0]) / 2 / p99 > want:
                return False
            if phase == "probe":
                return True
        rate, lo, hi = rate_ci(ok, w.start_s, w.stop_s, n_boot=PRECISION_BOOT)
        if not (math.isfinite(lo) and math.isfinite(hi)) or rate <= 0:
            return False
        return (hi - lo) / 2 / rate <= want

    def _too_many_errors(self, w: Samples) -> bool:
        # A short window holds few requests: allow binomial noise around the cap (3 sigma) so
        # an acceptable error rate does not read as overload. The measure window applies the
        # cap itself.
        cap, n = self.settings.max_error_ratio, w.requests
        allowed = cap * n + 3.0 * math.sqrt(max(cap * (1.0 - cap) * n, 0.0))
        return w.failures > allowed

    def _is_good(self, w: Samples) -> bool:
        p99 = w.p99_ms()
        return (
            p99 is not None and p99 <= self.settings.target_p99_ms and not self._too_many_errors(w)
        )

    def _in_band(self, level: _Level) -> bool:
        t = self.settings.target_p99_ms
        return level.p99_ms is not None and level.p99_ms >= t * (1.0 - self.settings.tolerance)

    def _start_measure(self) -> None:
        assert self.lo is not None
        self.phase, self.users = "measure", self.lo.users

    def _finish(self, status: str, reason: str = "") -> None:
        self.phase, self.status, self.reason = "done", status, reason

    def abort(self, reason: str) -> None:
        """End the search as inconclusive (time cap, unreachable host, interrupted...)."""
        self._finish("inconclusive", reason)

    def observe(self, w: Samples, step: Step) -> None:
        """Feed the window measured for ``step``; updates the state and the trajectory."""
        s = self.settings
        p99 = w.p99_ms()
        if p99 is not None:
            self.last_p99_ms = p99
        level = _Level(step.users, p99, w.error_ratio, w.requests, w.rps)
        good = self._is_good(w)
        decision = ""
        if w.requests == 0:
            decision = "no request completed: measure again"  # the time cap bounds this
        elif step.phase in ("ramp", "refine") and w.successes == 0:
            decision = "all requests failed"
            self.measurement = w  # keep the failures: they must show in the result
            self._finish("inconclusive", self._error_reason(w, step.users))
        elif step.phase == "ramp":
            previous = self.lo
            if good:
                self.lo = level
                if step.users >= s.max_users:
                    decision = "at max_users"
                    self._start_measure()
                elif self._in_band(level) and self._saturated(level, previous):
                    decision = "P99 in band, throughput saturated"
                    self._start_measure()
                else:
                    self.users = min(s.max_users, self._ramp_next(step.users, p99))
                    decision = f"ramp to {self.users}"
            else:
                self.hi = level
                if self.lo is None:
                    too_many = self._too_many_errors(w)
                    if too_many:
                        decision = "too many errors at min_users"
                        self.measurement = w  # keep the failures: they must show in the result
                        self._finish("inconclusive", self._error_reason(w, step.users))
                    else:
                        decision = "over target at min_users"
                        self._finish(
                            "inconclusive", self._over_reason(w, step.users, "at min_users")
                        )
                else:
                    decision = "over target: refine"
                    self._refine_or_measure()
        elif step.phase == "refine":
            if good:
                self.lo = level
            else:
                self.hi = level
            decision = "good" if good else "over target"
            self._refine_or_measure()
        elif step.phase == "measure":
            decision = self._after_measure(w, level)
        elif step.phase == "probe":
            self.probe = w
            decision = "probe measured"
            self._finish("converged")
        self.trajectory.append(
            WindowRecord(
                phase=step.phase,
                users=step.users,
                start_s=w.start_s,
                end_s=w.stop_s,
                requests=w.requests,
                failures=w.failures,
                rps=w.rps,
                p99_ms=p99,
                decision=decision,
            )
        )

    @staticmethod
    def _saturated(level: _Level, previous: _Level | None) -> bool:
        # Below the knee P99 is flat in users (about the service time): a P99 in the band
        # says nothing there. Stop early only once more users no longer bring throughput.
        if previous is None or previous.rps <= 0:
            return False
        return level.rps < previous.rps * (1.0 + SATURATION_GAIN)

    def _ramp_next(self, users: int, p99_ms: float | None) -> int:
        # Closed loop: latency grows about linearly with users once saturated, so
        # target / P99 estimates the headroom. At least double, at most x4 per step.
        factor = 2.0
        if p99_ms:
            factor = min(max(RAMP_HEADROOM * self.settings.target_p99_ms / p99_ms, 2.0), 4.0)
        return max(users + 1, int(users * factor))

    def _refine_or_measure(self) -> None:
        assert self.lo is not None and self.hi is not None
        if self.hi.users - self.lo.users <= 1 or self._in_band(self.lo):
            self._start_measure()
        else:
            self.phase = "refine"
            self.users = self._refine_next(self.lo, self.hi)

    def _refine_next(self, lo: _Level, hi: _Level) -> int:
        # Interpolate where P99 crosses the middle of the band (P99 is near-linear in users
        # once saturated), but stay a quarter of the interval inside it, so a noisy or
        # convex curve still shrinks the interval like bisection would.
        span = hi.users - lo.users
        margin = max(1, span // 4)
        aim = self.settings.target_p99_ms * (1.0 - self.settings.tolerance / 2.0)
        if lo.p99_ms is not None and hi.p99_ms is not None and hi.p99_ms > lo.p99_ms:
            guess = lo.users + (aim - lo.p99_ms) / (hi.p99_ms - lo.p99_ms) * span
        else:
            guess = lo.users + span / 2.0
        return int(min(max(math.floor(guess), lo.users + margin), hi.users - margin))

    def _after_measure(self, w: Samples, level: _Level) -> str:
        s = self.settings
        if w.error_ratio > s.max_error_ratio:
            self.measurement = w
            self._finish("inconclusive", self._error_reason(w, level.users))
            return "error ratio above cap"
        if w.successes < s.min_samples:
            self._finish(
                "inconclusive",
                f"too few samples at the operating point: {w.successes} successful requests in "
                f"{w.duration_s:.1f} s at {level.users} users, {s.min_samples} needed "
                f"(raise max_duration_s / measure_s, or lower min_samples)",
            )
            return "too few samples"
        p99 = level.p99_ms or 0.0
        if p99 > s.target_p99_ms * (1 + s.tolerance) and not self.retried_measure:
            # The measuring window disagrees with the search window: step one level down once.
            self.retried_measure = True
            lower = max(s.min_users, min(level.users - 1, math.floor(level.users * 0.9)))
            if lower < level.users:
                self.hi = level
                self.lo = _Level(lower, None, 0.0, 0)
                self.users = lower
                return f"P99 {p99:.1f} ms over target: re-measure at {lower}"
        self.measurement = w
        if self.probe_users is not None and self.probe_users != level.users:
            self.phase, self.users = "probe", self.probe_users
            return f"measured; probe at {self.probe_users}"
        self.probe = w if self.probe_users is not None else None
        self._finish("converged")
        return "measured"

    def _error_reason(self, w: Samples, users: int) -> str:
        sample = "; ".join(_top_errors(w.error_texts)) or "no error text"
        return (
            f"error ratio {w.error_ratio:.1%} ({w.failures} of {w.requests} requests failed) at "
            f"{users} users, above the {self.settings.max_error_ratio:.1%} cap; errors: {sample}"
        )

    def _over_reason(self, w: Samples, users: int, where: str) -> str:
        p99 = w.p99_ms()
        p99_text = f"{p99:.1f} ms" if p99 is not None else "n/a"
        return (
            f"P99 {p99_text} {where} ({users} users) already exceeds the "
            f"{self.settings.target_p99_ms:g} ms target: no operating point meets it "
            f"(raise target_p99_ms or lower min_users)"
        )


def _top_errors(texts: Sequence[str], limit: int = 3) -> list[str]:
    counts: dict[str, int] = {}
    for t in texts:
        counts[t] = counts.get(t, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [f"{text} (x{n})" for text, n in ranked]


def run_search(
    search: CapacitySearch,
    load: LoadGenerator,
    clock: Clock,
    *,
    on_window: Callable[[Step, Samples], None] | None = None,
    should_stop: Callable[[], str | None] | None = None,
) -> None:
    """Drive ``search`` to completion with ``load`` and ``clock``, within ``max_duration_s``.

    ``on_window`` is told about every finished window (progress reporting).
    ``should_stop`` may return a reason to abort (e.g. the parent asked to stop).
    The time cap is checked on every tick: a run never outlives it by more than one tick.
    """
    t0 = clock.now()
    deadline = t0 + search.settings.max_duration_s
    while (step := search.next_step()) is not None:
        load.set_users(step.users)
        settle_end = clock.now() + step.settle_s
        while clock.now() < settle_end:
            if clock.now() >= deadline:
                break
            clock.sleep(min(TICK_S, settle_end - clock.now()))
        mark = clock.now()
        next_check = mark
        while True:
            now = clock.now()
            if now >= deadline:
                search.abort(
                    f"time cap reached: {search.settings.max_duration_s:g} s elapsed before the "
                    f"search converged (phase {step.phase} at {step.users} users); raise "
                    f"max_duration_s or narrow min_users..max_users"
                )
                return
            stop_reason = should_stop() if should_stop else None
            if stop_reason:
                search.abort(stop_reason)
                return
            elapsed = now - mark
            n = load.count_since(mark)
            if elapsed >= step.max_s:
                break
            if n >= step.min_samples and elapsed >= step.min_s:
                if step.phase not in ("measure", "probe"):
                    break
                if now >= next_check:  # a gated window also waits for a tight interval
                    # ...but keeps a quarter of the time cap for what follows (probe, verdict)
                    if deadline - now < RESERVE_RATIO * search.settings.max_duration_s:
                        break
                    if search.precise_enough(load.window(mark, now), step.phase):
                        break
                    next_check = now + PRECISION_CHECK_S
            clock.sleep(TICK_S)
        w = load.window(mark, clock.now())
        search.observe(w, step)
        if on_window:
            on_window(step, w)


def _endpoint_results(w: Samples) -> dict[str, EndpointResult]:
    out: dict[str, EndpointResult] = {}
    for name in sorted(set(w.name.tolist())):
        sub = w.for_name(name)
        pct = percentiles(sub.ok_latencies())
        out[name] = EndpointResult(
            name=name,
            capacity_rps=sub.rps,
            p50_ms=pct["p50_ms"],
            p95_ms=pct["p95_ms"],
            p99_ms=pct["p99_ms"],
            requests=sub.requests,
            failures=sub.failures,
            error_ratio=sub.error_ratio,
        )
    return out


def build_result(
    search: CapacitySearch,
    *,
    name: str,
    host: str,
    elapsed_s: float,
    epoch_offset: float | None = None,
    generator_cpu_ratio: float | None = None,
    extra: dict[str, object] | None = None,
) -> CapacityResult:
    """Turn a finished search into a :class:`CapacityResult`.

    ``epoch_offset`` converts the search clock to UNIX time (for Prometheus windows).
    """
    w = search.measurement
    status = search.status if search.status != "running" else "inconclusive"
    reason = search.reason
    if (
        status == "converged"
        and generator_cpu_ratio is not None
        and (generator_cpu_ratio > GENERATOR_CPU_CAP)
    ):
        status = "inconclusive"
        reason = (
            f"the load generator was saturated: {generator_cpu_ratio:.0%} of a core during the "
            f"measurement (cap {GENERATOR_CPU_CAP:.0%}), which inflates latency; use the fast "
            f"client, fewer users, or more load-generator CPU"
        )
    if w is None:
        pct: dict[str, float | None] = {"p50_ms": None, "p95_ms": None, "p99_ms": None}
        users, cap, req, fail, err, dur = (search.lo.users if search.lo else 0), 0.0, 0, 0, 0.0, 0.0
        endpoints: dict[str, EndpointResult] = {}
        errors: tuple[str, ...] = ()
        start = stop = None
        cap_ci = p99_ci = None
    else:
        pct = percentiles(w.ok_latencies())
        users = _measured_users(search)
        cap, req, fail, err, dur = w.rps, w.requests, w.failures, w.error_ratio, w.duration_s
        endpoints = _endpoint_results(w)
        errors = tuple(_top_errors(w.error_texts))
        start, stop = w.start_s, w.stop_s
        ok = w.ok_latencies()
        p99_ci = _ci(quantile_ci(ok, 0.99)) if ok.size else None
        cap_ci = _ci(rate_ci(w.end_s[w.ok], w.start_s, w.stop_s)[1:]) if ok.size else None
    probe = None
    if search.probe is not None and search.probe_users is not None:
        pw = search.probe
        pp = percentiles(pw.ok_latencies())
        probe = ProbeResult(
            users=search.probe_users,
            p50_ms=pp["p50_ms"],
            p99_ms=pp["p99_ms"],
            requests=pw.requests,
            failures=pw.failures,
            duration_s=pw.duration_s,
            p99_ci=_ci(quantile_ci(pw.ok_latencies(), 0.99)) if pw.successes else None,
        )
    off = epoch_offset
    return CapacityResult(
        name=name,
        host=host,
        status=status,
        reason=reason,
        capacity_rps=cap,
        p50_ms=pct["p50_ms"],
        p95_ms=pct["p95_ms"],
        p99_ms=pct["p99_ms"],
        users=users,
        requests=req,
        failures=fail,
        error_ratio=err,
        measure_s=dur,
        elapsed_s=elapsed_s,
        target_p99_ms=search.settings.target_p99_ms,
        endpoints=endpoints,
        probe=probe,
        trajectory=tuple(search.trajectory),
        error_samples=errors,
        generator_cpu_ratio=generator_cpu_ratio,
        window_start_epoch=(start + off) if (start is not None and off is not None) else None,
        window_end_epoch=(stop + off) if (stop is not None and off is not None) else None,
        capacity_ci=cap_ci,
        p99_ci=p99_ci,
        settings=search.settings.to_dict(),
        extra=dict(extra or {}),
    )


def _ci(pair: tuple[float, float] | None) -> tuple[float, float] | None:
    """An interval with finite bounds, else None."""
    if pair is None or not all(math.isfinite(v) for v in pair):
        return None
    return (float(pair[0]), float(pair[1]))


def _measured_users(search: CapacitySearch) -> int:
    for rec in reversed(search.trajectory):
        if rec.phase == "measure":
            return rec.users
    # no measure window: the window kept as measurement (e.g. all errors) was the last one
    return search.trajectory[-1].users if search.trajectory else 0
