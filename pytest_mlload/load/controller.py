"""The adaptive capacity search: observations in, decisions out.

Nothing here imports Locust or reads a clock of its own. :func:`run_search` drives a
:class:`CapacitySearch` with any :class:`LoadGenerator` and :class:`Clock`: the Locust driver
process passes real ones, the unit tests and benchmarks pass the simulated service from
:mod:`pytest_mlload.testing.simulate` with a fake clock, so the same code is exercised everywhere.

The search, for a P99 target ``T``. A level is *good* when its window's P99 (all requests,
failures with the time they took) is at or under ``T`` and its errors are under the cap.

0. **Probe** (optional, first). Before the search, hold the baseline's user count and measure
   P99 there, so a P99 regression is judged at the same load as the baseline, not at the
   controlled P99 (which would only measure controller noise). The probe is the check
   window: the same warm-up, the same length and growth rule, from the same fresh start, so
   a check run (below) and the baseline's probes are one procedure. Measured after a search,
   on a warmed server, probes read P99 a few per cent lower and steadier than a check window
   does, and the P99 gate then called unchanged builds slower (8 of 50 on the real demo).
1. **Ramp.** Start at ``min_users`` and multiply the user count by 2 to 4 (by the headroom
   ``T / P99``) while levels stay good, up to ``max_users``. A first window over the target
   at ``min_users`` is measured once more before the target is called unreachable (a cold
   server's one-off stall lands in that window).
2. **Refine.** Interpolate (safeguarded like bisection) on the user count between the highest
   good level ``lo`` and the lowest bad level ``hi`` until they are adjacent, or ``lo``'s
   P99 is within ``tolerance`` under ``T`` (close enough: throughput barely moves there).
3. **Knee.** Some servers get slower per request past some concurrency, so throughput peaks
   and *falls* beyond it. Once a good level's throughput is clearly below the best good
   level's (by more than 5 % and more than both windows' noise), the search stops climbing and
   bisects between the best level's measured neighbours for the peak (a few bounded steps):
   the operating point is the best throughput that meets the target, not the highest load
   that does. ``knee_users`` and a note say where throughput falls. A ramp step can jump over
   the peak (x4 users, throughput up only x1.2): once per search, a step whose throughput
   grew less than the square root of its users' ratio has its geometric middle measured.
   Two long windows whose difference stays within noise are a plateau, not a fall; a fall
   in short windows is measured again at length only when it exceeds one standard error.
4. **Measure.** Hold the chosen level for a longer window (``measure_s``, extended until
   ``min_samples`` requests): that window *is* the operating point. Its successful-request
   throughput is the capacity. When its P99 is over ``T`` or its errors over the cap, the
   search steps down (about 10 % fewer users) and measures again, at most
   ``MAX_STEP_DOWNS`` times: a converged result's P99 is never above its target.

**Check mode** (``hold_users=N``): no search. After the warm-up, one measure window at ``N``
users (the baseline's reference load, where its runs measured P99), kept so the whole run
stays within ``CHECK_TOTAL_S``; it is both the measurement and the probe, so throughput and P99
are judged against the baseline's figures at that same load. Its P99 may exceed the target:
that is the P99 gate's to judge, not a step down's. A window that reads a regression is held
again later, in a run of its own (:func:`pytest_mlload.flow.confirm_check`).

A search that ends at ``max_users`` still under the target reports ``bound="max_users"``: its
capacity is only a lower bound.

The gated windows grow, never into the last quarter of the time cap, while the 95 % interval
of a figure they are judged on is wider than +-threshold/4: the measure window up to three
times ``measure_s``, on its capacity (and its P99 when it is the run's P99 figure: no probe
asked); the probe and the check window up to ``CHECK_TOTAL_S`` (or 3 x ``probe_s``), on
their P99 and throughput.
A probe asked at the operating load is a window of its own: the measure window is kept
because its P99 met the target, so its P99 is biased low.

Every level change is followed by a settle period (``settle_s`` or twice the last P99,
whichever is longer) whose samples are discarded, so the transient is never measured.
Windows are sized by sample count, bounded in time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from pytest_mlload.config import RunSettings
from pytest_mlload.load import slo
from pytest_mlload.results import (
    CapacityResult,
    EndpointResult,
    OpenLoopResult,
    ProbeResult,
    WindowRecord,
)
from pytest_mlload.stats import min_samples_for_quantile, percentiles, quantile_ci, rate_ci

if TYPE_CHECKING:
    from pytest_mlload.load.streaming import StreamSamples

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
# Past the knee: a good level's throughput this far under the best good level's (and more than
# both windows' noise) means throughput falls with load. Lower than this is noise on a plateau.
KNEE_MARGIN = 0.05
KNEE_NOISE_Z = 2.5  # ...and more than this many standard errors of the difference
# A fall seen only in short windows is measured again when it exceeds this many standard
# errors: on a saturated plateau short windows alone read falls of 5-10 % at z ~0.5; past
# the simulated knees (bench_knee.py) the falls read z 2-4.
MAYBE_Z = 1.0
KNEE_BATCHES = 10  # sub-windows a window's throughput noise is estimated from (batch means)
MIN_BATCHES = 5
MIN_BATCH_REQUESTS = 10
MAX_CONFIRMS = 3  # re-measurements of a fall within noise, per search
CONFIRM_MIN_SAMPLES = 400  # a re-measurement holds twice a refine window: +-5 % Poisson noise
SEARCH_PHASES = ("ramp", "refine", "confirm", "knee")
MAX_KNEE_STEPS = 8  # golden-section steps around the peak: a bracket of ~50 users to adjacent
GOLDEN = 0.382  # the new point's place in the larger side (golden-section search)
MAX_STEP_DOWNS = 3  # measure windows over target/cap before the search gives up
STEP_DOWN_RATIO = 0.9  # each step down holds ~10 % fewer users
ERROR_STEP_DOWN_RATIO = 0.95  # ...or ~5 % (at least one) when only the error cap was breached
CHECK_TOTAL_S = 10.0  # check mode: warm-up + settle + the one window stay within this
# SLO mode: a search window may last until it holds this many times the requests that can
# resolve the attainment target (at the last window's rate), up to SLO_MAX_SHARE of the time
# cap; an unresolved first level is measured again (longer) up to SLO_RETRIES times before it
# counts as bad.
SLO_WINDOW_MARGIN = 1.5
SLO_MAX_SHARE = 0.25
SLO_RETRIES = 2
# A first window over the target at min_users is measured once more before the search calls
# the target unreachable there: a cold server's one-off stall lands in that window.
COLD_RETRIES = 1


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
    """Raw per-request records of one window: completion time, latency, success, name;
    ``stream`` the stream figures row for row, when any request of the window streamed."""

    end_s: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    name: np.ndarray
    start_s: float
    stop_s: float
    error_texts: tuple[str, ...] = ()
    stream: StreamSamples | None = None

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

    def p99_ms(self) -> float | None:
        """P99 of every request's raw latency, failures included with the time they took.

        A failure is part of what users wait for: a timeout or a slow 503 that left the
        percentiles would let a change that turns slow requests into errors improve P99.
        None for an empty window.
        """
        lat = self.latency_ms
        return float(np.percentile(lat, 99)) if lat.size else None

    def rps_se(self) -> float:
        """Standard error of :attr:`rps`: the larger of Poisson count noise and batch means.

        ``sqrt(successes) / duration`` is a cautious floor (closed-loop completions are
        usually more regular than Poisson, but a heavy-tailed service swings on time scales a
        short window cannot see); the spread of ``KNEE_BATCHES`` sub-window rates catches
        slower swings such as stalls. Infinite for a window too small to estimate anything.
        """
        ok = self.end_s[self.ok]
        batches = min(KNEE_BATCHES, ok.size // MIN_BATCH_REQUESTS)
        if batches < MIN_BATCHES:
            return math.inf
        edges = np.linspace(self.start_s, self.stop_s, batches + 1)
        counts = np.histogram(ok, bins=edges)[0]
        rates = counts / (self.duration_s / batches)
        batch_se = float(np.std(rates, ddof=1) / math.sqrt(batches))
        return max(batch_se, math.sqrt(ok.size) / self.duration_s)

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
            stream=self.stream.select(sel) if self.stream is not None else None,
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
    rps_se: float = math.inf
    good: bool = False
    duration_s: float = 0.0
    clean: bool = True  # errors under the cap (a level may be bad by its P99 alone)
    headroom: float | None = None  # SLO mode: smallest limit / figure (slo.headroom)


@dataclass(slots=True)
class CapacitySearch:
    """State machine of the capacity search (see module docstring).

    Call :meth:`next_step`, run it, feed the window to :meth:`observe`; repeat until
    :meth:`next_step` returns ``None``. ``probe_users`` asks for a P99 probe at that load.
    ``hold_users`` is check mode: measure that load only; that window is also the probe.
    """

    settings: RunSettings
    probe_users: int | None = None
    hold_users: int | None = None
    phase: str = "ramp"
    users: int = 0
    lo: _Level | None = None
    hi: _Level | None = None
    last_p99_ms: float | None = None
    measurement: Samples | None = None
    probe: Samples | None = None
    status: str = "running"
    reason: str = ""
    note: str = ""
    bound: str = ""
    knee_users: int | None = None
    step_downs: int = 0
    knee_steps: int = 0
    confirms: int = 0
    bend_checked: bool = False  # a bent ramp step's midpoint was measured (once per search)
    resume: tuple[str, int] | None = None
    slo_retries: int = 0  # SLO mode: longer re-measurements of an unresolved first level
    cold_retries: int = 0  # re-measurements of min_users after its window missed the target
    last_rate: float = 0.0  # requests/s of the last window (sizes SLO search windows)
    levels: list[_Level] = field(default_factory=list)
    trajectory: list[WindowRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.users = self.settings.min_users
        if self.probe_users is not None:
            self.probe_users = max(1, int(self.probe_users))
        if self.hold_users is not None:
            self.hold_users = max(1, int(self.hold_users))
            self.probe_users = self.hold_users  # the held window is the probe
            self.phase, self.users = "measure", self.hold_users
        elif self.probe_users is not None:
            self.phase, self.users = "probe", self.probe_users  # first, as a check window

    # -- decisions -----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the search has a final status."""
        return self.status != "running"

    @property
    def check(self) -> bool:
        """True in check mode (``hold_users`` given)."""
        return self.hold_users is not None

    @property
    def slo(self) -> bool:
        """True in SLO mode (a streaming SLO is set): goodness is the SLO attainment and the
        capacity the goodput (see :mod:`pytest_mlload.load.slo`)."""
        return self.settings.slo_mode

    def _settle(self) -> float:
        last = (self.last_p99_ms or 0.0) / 1000.0
        first = WARMUP_S if not self.trajectory else 0.0
        # MAX_SETTLE_S bounds the automatic part only: a settle_s the user set is a minimum
        return max(self.settings.settle_s, min(max(2.0 * last, first), MAX_SETTLE_S))

    def next_step(self) -> Step | None:
        """The next window to run, or ``None`` when the search is finished.

        In SLO mode a search window holds the requests that can show the attainment target
        (73 for 0.95; more while it is unresolved, up to a longer ``max_s`` sized by the last
        window's rate), and a gated window at least as many.
        """
        step = self._plain_step()
        if step is None or not self.slo:
            return step
        need = slo.min_window_samples(self.settings)
        if step.phase in ("measure", "probe"):
            return replace(step, min_samples=max(step.min_samples, need))
        longest = 2.0 * step.max_s
        if self.last_rate > 0:  # long enough for the requests that can resolve attainment
            cap = SLO_MAX_SHARE * self.settings.max_duration_s
            longest = max(longest, min(SLO_WINDOW_MARGIN * need / self.last_rate, cap))
        return replace(step, min_samples=need, max_s=longest)

    def _plain_step(self) -> Step | None:
        if self.done:
            return None
        s = self.settings
        settle = self._settle()
        if self.phase == "ramp":
            return Step("ramp", self.users, settle, min(RAMP_MIN_SAMPLES, s.min_samples), 0.5, 1.5)
        if self.phase in ("refine", "knee"):
            return Step(
                self.phase, self.users, settle, min(REFINE_MIN_SAMPLES, s.min_samples), 0.75, 2.0
            )
        if self.phase == "confirm":
            return Step("confirm", self.users, settle, CONFIRM_MIN_SAMPLES, 1.0, 3.0)
        # Gated windows need enough samples for a P99 confidence interval.
        gated = max(s.min_samples, P99_CI_SAMPLES)
        if self.phase == "probe" or (self.phase == "measure" and self.check):
            # A verdict in about CHECK_TOTAL_S: the window may grow for precision only as far
            # as that (or 3 x probe_s, for slow endpoints) and the time cap allow. A recording
            # run's probe is this same window, so both sides of the P99 gate are one procedure.
            longest = max(s.measure_s, CHECK_TOTAL_S - settle, 3 * s.probe_s)
            return Step(self.phase, self.users, settle, gated, s.measure_s, longest)
        if self.phase == "measure":
            return Step("measure", self.users, settle, gated, s.measure_s, 3 * s.measure_s)
        raise AssertionError(f"unknown phase {self.phase}")

    def precise_enough(self, w: Samples, phase: str = "measure") -> bool:
        """Whether a gated window's intervals are narrow enough to end it.

        A window keeps growing (up to its ``max_s``, within the time cap) while a 95 % interval
        it is judged on has a half-width above a quarter of the threshold: a verdict with a
        wide interval would come out inconclusive, so measuring longer is the cheaper fix.
        The measure window is judged on its capacity (block bootstrap of the throughput); the
        probe, and a measure window that stands for it (no probe asked, or check mode), on
        its P99 (order statistics of every request's latency, in completion order). In SLO
        mode the capacity is the goodput, and no window (search windows too) ends while its
        attainment is unresolved.
        """
        if self.slo and slo.attainment(w, self.settings).decision == "unresolved":
            return False  # an unresolved level is not a decision: measure on (up to max_s)
        if phase not in ("measure", "probe"):
            return True
        if not w.ok.any():
            return True
        good = slo.conforming_view(w, self.settings)  # the window itself outside SLO mode
        ok = good.end_s[good.ok]
        if ok.size == 0:
            return True  # nothing met the SLOs: the attainment already says so
        want = max(self.settings.threshold / 4, MIN_PRECISION)
        if phase == "probe" or self.probe_users is None or self.check:
            p99 = w.p99_ms()
            ci = quantile_ci(w.latency_ms, 0.99)
            if p99 is None or ci is None or p99 <= 0 or (ci[1] - ci[0]) / 2 / p99 > want:
                return False
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
        if self.slo:  # errors already lower attainment; the cap still applies on its own
            meets = slo.attainment(w, self.settings).decision == "meets"
            return meets and not self._too_many_errors(w)
        p99 = w.p99_ms()
        return (
            p99 is not None and p99 <= self.settings.target_p99_ms and not self._too_many_errors(w)
        )

    def _in_band(self, level: _Level) -> bool:
        if self.slo:  # the binding SLO's figure within the tolerance under its limit
            h = level.headroom
            return h is not None and h * (1.0 - self.settings.tolerance) <= 1.0
        t = self.settings.target_p99_ms
        return level.p99_ms is not None and level.p99_ms >= t * (1.0 - self.settings.tolerance)

    def _start_measure(self, level: _Level | None = None) -> None:
        level = level or self.lo
        assert level is not None
        self.phase, self.users = "measure", level.users

    def _finish(self, status: str, reason: str = "") -> None:
        self.phase, self.status, self.reason = "done", status, reason

    def abort(self, reason: str) -> None:
        """End the search as inconclusive (time cap, unreachable host, interrupted...)."""
        self._finish("inconclusive", reason)

    def observe(self, w: Samples, step: Step) -> None:
        """Feed the window measured for ``step``; updates the state and the trajectory."""
        p99 = w.p99_ms()
        if p99 is not None:
            self.last_p99_ms = p99
        level = self._level(w, step.users)
        self.last_rate = w.requests / w.duration_s
        decision = ""
        if w.requests == 0:
            decision = "no request completed: measure again"  # the time cap bounds this
        elif self._unstreamed(w):
            decision = "no streamed request"
            self.measurement = w
        elif step.phase in SEARCH_PHASES and w.successes == 0 and self.lo is None:
            decision = "all requests failed"
            self.measurement = w  # keep the failures: they must show in the result
            self._finish("inconclusive", self._error_reason(w, step.users))
        elif step.phase in SEARCH_PHASES:
            self.levels.append(level)
            decision = self._after_search_window(level, w, step.phase)
        elif step.phase == "measure":
            decision = self._after_measure(w, level)
        elif step.phase == "probe":
            self.probe = w
            self.phase, self.users = "ramp", self.settings.min_users
            decision = f"probe measured; search from {self.users}"
        if self.slo and w.requests:
            decision = f"{slo.attainment(w, self.settings).describe()}: {decision}"
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

    def _level(self, w: Samples, users: int) -> _Level:
        """A window's level; in SLO mode its rate (and the rate's noise) is the goodput."""
        rated = slo.conforming_view(w, self.settings)
        return _Level(
            users,
            w.p99_ms(),
            w.error_ratio,
            w.requests,
            rated.rps,
            rated.rps_se(),
            self._is_good(w),
            w.duration_s,
            not self._too_many_errors(w),
            slo.headroom(w, self.settings) if self.slo else None,
        )

    def _slo_retry(self, w: Samples) -> bool:
        """SLO mode: an unresolved level with no good one below it is measured again (the
        next window is sized by this one's rate) rather than ending the search there."""
        if not self.slo or self.lo is not None or self.slo_retries >= SLO_RETRIES:
            return False
        if slo.attainment(w, self.settings).decision != "unresolved":
            return False
        self.slo_retries += 1
        self.levels.pop()  # the level is measured again: do not pool the short window
        return True

    def _cold_retry(self, level: _Level) -> bool:
        """A first level over the target (errors under the cap) is measured once more before
        it ends the search: a cold server's one-off stall lands in that window (MLServer's
        forest: ~90 ms per worker ~1 s after its first request)."""
        if self.lo is not None or level.good or not level.clean:
            return False
        if self.cold_retries >= COLD_RETRIES:
            return False
        self.cold_retries += 1
        self.levels.pop()  # the level is measured again: do not pool the stalled window
        return True

    def _unstreamed(self, w: Samples) -> bool:
        """End the search when TTFT/TPOT SLOs are set but nothing streamed (no figures)."""
        s = self.settings
        if not (s.ttft_p99_ms > 0 or s.tpot_p99_ms > 0) or w.stream is not None:
            return False
        names = "/".join(n for n in ("ttft_p99_ms", "tpot_p99_ms") if getattr(s, n) > 0)
        self._finish("inconclusive", slo.NO_STREAM.format(names=names))
        return True

    def _after_search_window(self, level: _Level, w: Samples, phase: str) -> str:
        if phase == "knee":
            return self._knee_next()
        if phase == "confirm":
            assert self.resume is not None
            self.phase, self.users = self.resume
            return self._check_knee("")
        if self._slo_retry(w):
            return "attainment unresolved with no good level yet: measure again, longer"
        if self._cold_retry(level):
            return "over target at min_users: measure again (a cold start must not decide)"
        if level.good:
            self.lo = level
        else:
            self.hi = level if self.hi is None or level.users <= self.hi.users else self.hi
        if self.lo is None:  # bad at min_users
            if not level.clean:
                self.measurement = w  # keep the failures: they must show in the result
                self._finish("inconclusive", self._error_reason(w, level.users))
                return "too many errors at min_users"
            self._finish("inconclusive", self._over_reason(w, level.users, "at min_users"))
            return "over target at min_users"
        return self._check_knee(self._ramp_or_refine(level, phase))

    def _ramp_or_refine(self, level: _Level, phase: str) -> str:
        """The step a search without a knee takes next (sets phase and users)."""
        s = self.settings
        if phase == "ramp":
            previous = next((x for x in reversed(self.levels[:-1]) if x.good), None)
            if not level.good:
                self._refine_or_measure()
                return "over target: refine" if self.phase == "refine" else "over target"
            if level.users >= s.max_users:
                self._start_measure()
                return "at max_users"
            if self._in_band(level) and self._saturated(level, previous):
                self._start_measure()
                return "P99 in band, throughput saturated"
            self.users = min(s.max_users, self._ramp_next(level))
            return f"ramp to {self.users}"
        self._refine_or_measure()
        if level.good:
            return "good"
        return "too many errors" if self._err_only(level) else "over target"

    def _check_knee(self, decision: str) -> str:
        """Divert to the knee search when throughput clearly fell; confirm it when it may have.

        A fall by more than the margin but within the windows' noise is measured again (the
        best level first: the highest of several noisy rates is biased up), at most
        ``MAX_CONFIRMS`` times; then the plain step goes ahead.
        """
        evidence, best, fell = self._knee_evidence()
        sep = "; " if decision else ""
        if evidence == "clear" and best is not None and fell is not None:
            self.phase, self.resume = "knee", None
            return (
                f"{decision}{sep}throughput fell from {best.rps:.1f} req/s at {best.users} users "
                f"to {fell.rps:.1f} at {fell.users}: look for the peak; " + self._knee_next()
            )
        if (
            evidence == "maybe"
            and best is not None
            and fell is not None
            and self.confirms < MAX_CONFIRMS
            and self.phase in ("ramp", "refine", "measure")
        ):
            self.confirms += 1
            self.resume = (self.phase, self.users)
            again = best if best.requests <= fell.requests else fell
            self.phase, self.users = "confirm", again.users
            return (
                f"{decision}{sep}throughput may fall past {best.users} users "
                f"({best.rps:.1f} -> {fell.rps:.1f} req/s at {fell.users}, within noise): "
                f"measure {again.users} again"
            )
        if evidence == "" and self.phase == "ramp" and (bend := self._bend()) is not None:
            mid, text = bend
            self.bend_checked = True
            self.resume = (self.phase, self.users)
            self.phase, self.users = "confirm", mid
            return f"{decision}{sep}{text}: measure {mid} first"
        self.resume = None
        return decision

    def _bend(self) -> tuple[int, str] | None:
        """The midpoint of the last ramp step when throughput grew far less than the users.

        A ramp step of x4 users that brings x1.2 throughput bent somewhere in between: the
        server saturated there, or peaked and fell (a knee the two windows cannot show). One
        window at the step's geometric middle tells them apart; once per search.
        """
        good = [x for x in self._pooled() if x.good]
        if self.bend_checked or len(good) < 2:
            return None
        prev, top = good[-2], good[-1]
        if top.users - prev.users < 3 or prev.rps <= 0 or top.rps <= 0:
            return None
        grew, more = top.rps / prev.rps, top.users / prev.users
        if grew >= math.sqrt(more):
            return None
        mid = min(max(round(math.sqrt(top.users * prev.users)), prev.users + 1), top.users - 1)
        return mid, (
            f"throughput grew x{grew:.2f} for x{more:.1f} users ({prev.users} -> {top.users}): "
            f"it bent in between"
        )

    def _pooled(self) -> list[_Level]:
        """The search windows pooled per user count (repeat measurements of one load)."""
        by: dict[int, list[_Level]] = {}
        for x in self.levels:
            by.setdefault(x.users, []).append(x)
        out = []
        for users, xs in sorted(by.items()):
            d = sum(x.duration_s for x in xs)
            if len(xs) == 1 or d <= 0:
                out.append(xs[-1])
                continue
            rps = sum(x.rps * x.duration_s for x in xs) / d
            se = math.sqrt(sum((x.rps_se * x.duration_s) ** 2 for x in xs)) / d
            last = xs[-1]
            out.append(
                _Level(
                    users,
                    last.p99_ms,
                    last.error_ratio,
                    sum(x.requests for x in xs),
                    rps,
                    se,
                    all(x.good for x in xs),
                    d,
                    all(x.clean for x in xs),
                )
            )
        return out

    def _err_only(self, level: _Level) -> bool:
        if self.slo:  # every SLO figure under its limit: the level is bad by its errors
            return level.headroom is not None and level.headroom >= 1.0
        return level.p99_ms is not None and level.p99_ms <= self.settings.target_p99_ms

    # -- the knee --------------------------------------------------------------------------
    def _best_good(self) -> _Level | None:
        good = [x for x in self._pooled() if x.good]
        return max(good, key=lambda x: (x.rps, -x.users)) if good else None

    def _knee_evidence(self) -> tuple[str, _Level | None, _Level | None]:
        """("clear" | "maybe" | "", best good level, the higher level that fell most).

        The higher level may be over the P99 target (its throughput still shows the fall),
        but not over the error cap: goodput lost to errors is not a knee.
        """
        best = self._best_good()
        if best is None:
            return "", None, None
        # In SLO mode a level that misses the SLOs has little goodput by definition: that is
        # the SLO's edge, not a knee; only good levels past the best show goodput falling.
        above = [
            x
            for x in self._pooled()
            if x.clean and x.users > best.users and (x.good or not self.slo)
        ]
        if not above:
            return "", best, None
        fell = min(above, key=lambda x: x.rps)
        gap = best.rps - fell.rps
        if gap <= KNEE_MARGIN * best.rps:
            return "", best, fell
        se = math.sqrt(best.rps_se**2 + fell.rps_se**2)
        # The best of several noisy levels reads high and the worst low: only levels measured
        # again at length (fresh, unbiased windows) make the evidence clear. Two such levels
        # still within noise are a plateau: re-measuring them would spend the confirmations
        # a clearer fall further up needs. A short-window fall under one standard error is
        # that noise too: re-measuring it walked down the demo's production-mix plateau,
        # three windows of ~2.7 s, for no knee.
        if min(best.requests, fell.requests) < CONFIRM_MIN_SAMPLES:
            return ("maybe" if gap > MAYBE_Z * se else ""), best, fell
        return ("clear" if gap > KNEE_NOISE_Z * se else ""), best, fell

    def _knee_next(self) -> str:
        """Golden-section step on the larger side between the best level and its neighbours.

        Throughput is taken as unimodal in users: the peak lies between the measured levels
        next to the best one. Each step measures a point inside the larger side; the better of
        it and the best becomes the best, and the bracket shrinks by about 0.618.
        """
        best = self._best_good()
        assert best is not None
        below = [x.users for x in self.levels if x.users < best.users]
        above = [x.users for x in self.levels if x.users > best.users]
        left = max(below) if below else best.users
        right = min(above) if above else best.users
        if self.knee_steps < MAX_KNEE_STEPS and max(best.users - left, right - best.users) > 1:
            self.knee_steps += 1
            if right - best.users >= best.users - left:
                self.users = best.users + max(1, round(GOLDEN * (right - best.users)))
            else:
                self.users = best.users - max(1, round(GOLDEN * (best.users - left)))
            return f"peak near {best.users} ({best.rps:.1f} req/s): try {self.users}"
        self.knee_users = best.users
        fell = [x for x in self._pooled() if x.clean and x.users > best.users]
        worst = min(fell, key=lambda x: x.rps) if fell else None
        self.note = (
            f"throughput falls past {best.users} users ({best.rps:.1f} req/s there"
            + (f", {worst.rps:.1f} req/s at {worst.users}" if worst else "")
            + "): the operating point is that peak, not the highest load under the "
            f"{self.settings.target_p99_ms:g} ms target"
        )
        self._start_measure(best)
        return f"throughput falls past {best.users} users: measure there"

    # -- ramp and refine -------------------------------------------------------------------
    @staticmethod
    def _saturated(level: _Level, previous: _Level | None) -> bool:
        # Below the knee P99 is flat in users (about the service time): a P99 in the band
        # says nothing there. Stop early only once more users no longer bring throughput.
        if previous is None or previous.rps <= 0:
            return False
        return level.rps < previous.rps * (1.0 + SATURATION_GAIN)

    def _ramp_next(self, level: _Level) -> int:
        # Closed loop: latency grows about linearly with users once saturated, so
        # target / P99 estimates the headroom (in SLO mode: the binding SLO's limit / its
        # figure at the attainment quantile). At least double, at most x4 per step.
        users, p99_ms, factor = level.users, level.p99_ms, 2.0
        if self.slo and level.headroom is not None:
            factor = min(max(RAMP_HEADROOM * level.headroom, 2.0), 4.0)
        elif p99_ms:
            factor = min(max(RAMP_HEADROOM * self.settings.target_p99_ms / p99_ms, 2.0), 4.0)
        return max(users + 1, int(users * factor))

    def _refine_or_measure(self) -> None:
        assert self.lo is not None and self.hi is not None
        # SLO mode: goodput still grows with users right up to the SLO's edge (under the
        # batch limit every user adds a stream), so only adjacent levels end the refinement.
        if self.hi.users - self.lo.users <= 1 or (self._in_band(self.lo) and not self.slo):
            self._start_measure()
        else:
            self.phase = "refine"
            self.users = self._refine_next(self.lo, self.hi)

    def _refine_next(self, lo: _Level, hi: _Level) -> int:
        # Interpolate where P99 crosses the middle of the band (P99 is near-linear in users
        # once saturated), but stay a quarter of the interval inside it, so a noisy or
        # convex curve still shrinks the interval like bisection would. A level bad by its
        # errors alone says nothing about where P99 crosses: bisect.
        span = hi.users - lo.users
        margin = max(1, span // 4)
        aim = self.settings.target_p99_ms * (1.0 - self.settings.tolerance / 2.0)
        if (
            lo.p99_ms is not None
            and hi.p99_ms is not None
            and hi.p99_ms > lo.p99_ms
            and not self._err_only(hi)
            and not self.slo  # attainment is not linear in users: bisect
        ):
            guess = lo.users + (aim - lo.p99_ms) / (hi.p99_ms - lo.p99_ms) * span
        else:
            guess = lo.users + span / 2.0
        return int(min(max(math.floor(guess), lo.users + margin), hi.users - margin))

    # -- the operating point ---------------------------------------------------------------
    def _after_measure(self, w: Samples, level: _Level) -> str:
        s = self.settings
        if self.check:
            return self._after_check(w, level)
        over, over_text = self._over_target(w, level)
        errors = w.error_ratio > s.max_error_ratio
        if (over or errors) and w.successes > 0:
            what = (
                f"error ratio {w.error_ratio:.1%} above the {s.max_error_ratio:.1%} cap"
                if errors
                else over_text
            )
            # Errors start sharply above some load and the search windows already bracket
            # it: step finely. A P99 over the target moves about linearly in users: ~10 %.
            ratio = ERROR_STEP_DOWN_RATIO if errors and not over else STEP_DOWN_RATIO
            fewer = min(level.users - 1, math.floor(level.users * ratio))
            lower = max(s.min_users, fewer)
            if lower < level.users and self.step_downs < MAX_STEP_DOWNS:
                # The operating point must meet the target in the window that measures it:
                # step down and measure again, never accept it over the target.
                self.step_downs += 1
                self.hi = level
                self.bound = ""
                self.users = lower
                return f"{what}: step down to {lower} users"
            self.measurement = w  # keep what was seen: it must show in the result
            if errors:
                self._finish("inconclusive", self._error_reason(w, level.users))
            else:
                where = (
                    "at min_users"
                    if level.users <= s.min_users
                    else f"after {self.step_downs} step-downs"
                )
                self._finish("inconclusive", self._over_reason(w, level.users, where))
            return f"{what}: no lower load left to try"
        if errors:
            self.measurement = w
            self._finish("inconclusive", self._error_reason(w, level.users))
            return "error ratio above cap"
        if w.successes < s.min_samples:
            return self._too_few(
                w, level.users, "at the operating point", "raise max_duration_s / measure_s"
            )
        self.measurement = w
        if level.users >= s.max_users and self.knee_users is None:
            self._note_bound(level.p99_ms, over_text)
        self._finish("converged")
        return "measured" + (" (bound: max_users)" if self.bound else "")

    def _note_bound(self, p99: float | None, over_text: str) -> None:
        """The search ended at max_users with the target still met: a lower bound."""
        s = self.settings
        self.bound = "max_users"
        still = (
            over_text
            if self.slo
            else f"P99 {p99 or 0.0:.1f} ms still under the {s.target_p99_ms:g} ms target"
        )
        bound_note = (
            f"stopped at max_users={s.max_users} with {still}: the capacity is a lower "
            f"bound, not the server's limit (raise max_users to find it)"
        )
        self.note = f"{self.note}; {bound_note}" if self.note else bound_note

    def _over_target(self, w: Samples, level: _Level) -> tuple[bool, str]:
        """Whether the measure window misses its objective, and the sentence saying so: P99
        over the target, or (SLO mode) attainment not shown to meet its target."""
        if self.slo:
            att = slo.attainment(w, self.settings)
            treated = ": treated as over target" if att.decision == "unresolved" else ""
            return att.decision != "meets", att.describe() + treated
        p99, target = level.p99_ms, self.settings.target_p99_ms
        over = p99 is not None and p99 > target
        return over, f"P99 {p99 or 0.0:.1f} ms over the {target:g} ms target"

    def _too_few(self, w: Samples, users: int, where: str, way_out: str) -> str:
        """End inconclusive: a gated window held fewer successes than ``min_samples``."""
        self._finish(
            "inconclusive",
            f"too few samples {where}: {w.successes} successful requests in "
            f"{w.duration_s:.1f} s at {users} users, {self.settings.min_samples} needed "
            f"({way_out}, or lower min_samples)",
        )
        return "too few samples"

    def _after_check(self, w: Samples, level: _Level) -> str:
        # Check mode judges this load against the baseline: a P99 over the target or more
        # errors is for the gates to weigh (against the baseline's), not a reason to move.
        s = self.settings
        if w.successes == 0:
            self.measurement = w
            self._finish("inconclusive", self._error_reason(w, level.users))
            return "all requests failed"
        if w.successes < s.min_samples:
            return self._too_few(w, level.users, "in the check window", "run the full search")
        if self.slo and (att := slo.attainment(w, s)).decision == "unresolved":
            self.measurement = self.probe = w
            self._finish(
                "inconclusive",
                f"{att.describe()} at the baseline's {level.users} users: no decision; "
                f"lengthen measure_s or lower slo_attainment",
            )
            return "check: attainment unresolved"
        self.measurement = self.probe = w
        self.note = f"check mode: held the baseline's {level.users} users, no search"
        self._finish("converged")
        return f"check: measured at {level.users} users"

    def _error_reason(self, w: Samples, users: int) -> str:
        sample = "; ".join(_top_errors(w.error_texts)) or "no error text"
        return (
            f"error ratio {w.error_ratio:.1%} ({w.failures} of {w.requests} requests failed) at "
            f"{users} users, above the {self.settings.max_error_ratio:.1%} cap; errors: {sample}"
        )

    def _over_reason(self, w: Samples, users: int, where: str) -> str:
        if self.slo:
            att = slo.attainment(w, self.settings)
            way = (
                "lengthen measure_s or lower slo_attainment"
                if att.decision == "unresolved"
                else "raise the SLO limits, lower slo_attainment or lower min_users"
            )
            return (
                f"{att.describe()} {where} ({users} users): no operating point meets the "
                f"SLOs ({way})"
            )
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
                gated = step.phase in ("measure", "probe")
                if not gated and not search.slo:
                    break
                if now >= next_check:  # a gated window also waits for a tight interval
                    # ...but keeps a quarter of the time cap for what follows (probe, verdict)
                    late = deadline - now < RESERVE_RATIO * search.settings.max_duration_s
                    if gated and late:
                        break
                    if search.precise_enough(load.window(mark, now), step.phase):
                        break
                    next_check = now + PRECISION_CHECK_S
            clock.sleep(TICK_S)
        w = load.window(mark, clock.now())
        search.observe(w, step)
        if on_window:
            on_window(step, w)


def _endpoint_results(w: Samples, settings: RunSettings) -> dict[str, EndpointResult]:
    out: dict[str, EndpointResult] = {}
    good = slo.conforming_view(w, settings)  # SLO mode: each endpoint's capacity is its goodput
    for name in sorted(set(w.name.tolist())):
        sub = w.for_name(name)
        pct = percentiles(sub.latency_ms)
        out[name] = EndpointResult(
            name=name,
            capacity_rps=good.for_name(name).rps,
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
    open_loop: OpenLoopResult | None = None,
) -> CapacityResult:
    """Turn a finished search into a :class:`CapacityResult`.

    ``epoch_offset`` converts the search clock to UNIX time (for Prometheus windows).
    """
    status, reason = _final_status(search, generator_cpu_ratio)
    m = _measurement_figures(search)
    off = epoch_offset
    start, stop = m.start_s, m.stop_s
    return CapacityResult(
        name=name,
        host=host,
        status=status,
        reason=reason,
        capacity_rps=m.capacity_rps,
        p50_ms=m.pct["p50_ms"],
        p95_ms=m.pct["p95_ms"],
        p99_ms=m.pct["p99_ms"],
        users=m.users,
        requests=m.requests,
        failures=m.failures,
        error_ratio=m.error_ratio,
        measure_s=m.measure_s,
        elapsed_s=elapsed_s,
        target_p99_ms=search.settings.target_p99_ms,
        endpoints=m.endpoints,
        probe=_probe_result(search),
        trajectory=tuple(search.trajectory),
        error_samples=m.error_samples,
        generator_cpu_ratio=generator_cpu_ratio,
        window_start_epoch=(start + off) if (start is not None and off is not None) else None,
        window_end_epoch=(stop + off) if (stop is not None and off is not None) else None,
        capacity_ci=m.capacity_ci,
        p99_ci=m.p99_ci,
        settings=search.settings.to_dict(),
        open_loop=open_loop,
        bound=search.bound if status == "converged" else "",
        knee_users=search.knee_users,
        check=search.check,
        note=search.note,
        stream=slo.stream_result(search.measurement, search.settings),
    )


def _final_status(search: CapacitySearch, generator_cpu_ratio: float | None) -> tuple[str, str]:
    """The search's status and reason; a converged search whose generator was saturated (over
    :data:`GENERATOR_CPU_CAP`) is inconclusive, since the generator inflated the latency."""
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
    return status, reason


@dataclass(frozen=True, slots=True, kw_only=True)
class _Measured:
    """The figures of the window a search kept as its measurement (empty when it kept none)."""

    pct: dict[str, float | None]
    users: int
    capacity_rps: float
    requests: int
    failures: int
    error_ratio: float
    measure_s: float
    endpoints: dict[str, EndpointResult]
    error_samples: tuple[str, ...]
    start_s: float | None
    stop_s: float | None
    capacity_ci: tuple[float, float] | None
    p99_ci: tuple[float, float] | None


def _measurement_figures(search: CapacitySearch) -> _Measured:
    """Percentiles, rates, per-endpoint results and 95 % intervals of the measurement window."""
    w = search.measurement
    if w is None:
        return _Measured(
            pct={"p50_ms": None, "p95_ms": None, "p99_ms": None},
            users=search.lo.users if search.lo else 0,
            capacity_rps=0.0,
            requests=0,
            failures=0,
            error_ratio=0.0,
            measure_s=0.0,
            endpoints={},
            error_samples=(),
            start_s=None,
            stop_s=None,
            capacity_ci=None,
            p99_ci=None,
        )
    good = slo.conforming_view(w, search.settings)  # SLO mode: the capacity is the goodput
    return _Measured(
        pct=percentiles(w.latency_ms),
        users=_measured_users(search),
        capacity_rps=good.rps,
        requests=w.requests,
        failures=w.failures,
        error_ratio=w.error_ratio,
        measure_s=w.duration_s,
        endpoints=_endpoint_results(w, search.settings),
        error_samples=tuple(_top_errors(w.error_texts)),
        start_s=w.start_s,
        stop_s=w.stop_s,
        # every request's latency, in completion order (the interval accounts for dependence)
        p99_ci=_ci(quantile_ci(w.latency_ms, 0.99)) if w.requests else None,
        capacity_ci=_rate_interval(good, w),
    )


def _probe_result(search: CapacitySearch) -> ProbeResult | None:
    """The P99 probe's figures, if the search ran one."""
    if search.probe is None or search.probe_users is None:
        return None
    pw = search.probe
    pp = percentiles(pw.latency_ms)
    return ProbeResult(
        users=search.probe_users,
        p50_ms=pp["p50_ms"],
        p99_ms=pp["p99_ms"],
        requests=pw.requests,
        failures=pw.failures,
        duration_s=pw.duration_s,
        p99_ci=_ci(quantile_ci(pw.latency_ms, 0.99)) if pw.requests else None,
        rps_ci=_rate_interval(pw, pw),
        stream=slo.stream_result(pw, search.settings),
    )


def _rate_interval(counted: Samples, w: Samples) -> tuple[float, float] | None:
    """95 % interval of the successful requests/s of ``counted`` over window ``w``'s span
    (``counted`` is ``w`` itself, or its SLO-conforming view)."""
    if not counted.successes:
        return None
    return _ci(rate_ci(counted.end_s[counted.ok], w.start_s, w.stop_s)[1:])


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
