"""How often the gate's verdicts are right: A/A false failures and detection of regressions.

    python bench/bench_verdicts.py [--sim] [--sim-runs 200]          # fast, simulated (default)
    python bench/bench_verdicts.py --sim --noise-only [--noise-runs 50]  # issue 9 tables only
    python bench/bench_verdicts.py --sim --noise-only --until-ready 10   # record while flagged
    python bench/bench_verdicts.py --real [--runs 20] [--jitter 0.03]  # real demo server, full
                                                                       # search and check mode

Targets (issue 4): A/A runs (no change) fail at most 1 in 50 (<= 2 %); a 20 % capacity drop
or a 25 % P99 rise is caught in at least 49 of 50 runs (>= 98 %); each run within the core
gate's 30 s budget.

Method, both parts. A baseline history of ``HISTORY`` runs is recorded the way
``--mlload-update-baseline`` records it (:meth:`BaselineEntry.with_run`). Every run after the
first probes P99 at the baseline's user count first (``probe_users = entry.users``, as the
plugin does), and so does every judged run; each is judged by
:func:`pytest_mlload.gates.evaluate` with the default 10 % threshold.

* An A/A run *fails* when any verdict is ``regression`` or ``inconclusive``, or when evaluate
  raises (e.g. :class:`~pytest_mlload.errors.Inconclusive` for a run that did not converge).
* A changed run is *caught* when any verdict is ``regression``.

``--sim``: :class:`~pytest_mlload.simulate.SimulatedService` with a fake clock, so hundreds of
runs take seconds and the truth is exact. Cases per service configuration: A/A; service time
x 1.25 (capacity -20 %, P99 at the baseline load +25 %); slots x 0.8 at the same service time
(capacity -20 %; in a saturated closed loop the P99 at a fixed user count rises by the same
1.25, so a pure "capacity only" change does not exist there). Each case runs twice: against
one fixed baseline (seeds 0..4, as a CI job would see it) and against a fresh baseline per run
(the rate over baselines, which a single fixed baseline cannot show). Sim seconds per run are
the fake clock's, i.e. what the run would take for real.

``--real``: a demo server on 127.0.0.1 (own process, stopped by PID); ``run_capacity`` with a
seed-style TaskSet (``seed_tasks.GetWork``). After the baseline, A/A runs (slowdown 1.0) and
slowed runs (slowdown 1.25) alternate, so drift of the machine hits both alike. Wall seconds
per run are the load driver's (search, probe, open-loop confirmation); the time queued for the
machine-wide load lock behind other load runs, plus child start-up, is printed separately.
Every run is bounded by ``run_capacity``'s time cap. The default server is 8 slots x 10 ms
(800 req/s, target P99 60 ms): measured on a 2-core machine, its runs take 14-17 s in the driver
against 18-20 s (one slowed run 41 s) for 4 x 20 ms, its windows hold four times the samples,
and Locust's CPU stays at 12-18 % of a core (well under the 80 % where the generator itself
inflates latency).

``--sim`` also prints the issue 9 tables (``--noise-only``: just those): run-to-run lognormal
noise of 0 %, 3 % and 5 % on the service time (every run, baseline runs too, draws its own
multiplier, as CI runners differ from one job to the next) and a heavy-tailed service (jitter
sigma 0.5), each judged after a full search and in check mode. Run ``i`` gets a fresh baseline
of ``--history`` full searches (default 5, the figures' basis; the plugin keeps 10 by default
since c26508c; seeds ``20_000 + s i ...``, ``s = max(10, 2 x history)``); the A/A run and the
slowed run (service time x 1.25) of that index are judged against it, by a full search and by
a check run (``hold_users = probe_users = entry.users``). Every converged full search (baseline runs
included) is also checked for a measured P99 above its target. Each fresh baseline's
record-time line (:func:`pytest_mlload.gates.metrics.history_readiness`: does every gated
figure's smallest decidable threshold fit the threshold?) is computed, and the verdicts are
split by it; ``--until-ready N`` records on past ``--history`` runs while the line flags the
baseline, up to ``N`` runs, as a team following the line's advice would.

A missed target is printed, not an exit status; the exit status is non-zero only when
something broke.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import _common
import numpy as np
from _common import BenchError, cv, demo_server, header, pct, say, skip_locust_patch, table

skip_locust_patch()

from pytest_mlload.baseline import BaselineEntry, BaselineRun  # noqa: E402
from pytest_mlload.config import RunSettings  # noqa: E402
from pytest_mlload.errors import GateFailure, LoadError  # noqa: E402
from pytest_mlload.flow import confirm_check  # noqa: E402
from pytest_mlload.gates.metrics import (  # noqa: E402
    evaluate,
    history_readiness,
    readiness_line,
    regression_messages,
)
from pytest_mlload.load.controller import CapacitySearch, build_result, run_search  # noqa: E402
from pytest_mlload.results import CapacityResult  # noqa: E402
from pytest_mlload.testing.simulate import FakeClock, SimulatedService  # noqa: E402

HISTORY = 5
KEY = "bench_verdicts::work"
FINGERPRINT = {"bench": "bench_verdicts"}  # one fixed fingerprint: no "other machine" note
AA_TARGET = 1 / 50
DETECT_TARGET = 49 / 50
BUDGET_S = 30.0
SLOWDOWN = 1.25


# --------------------------------------------------------------------------- judging


@dataclass
class Outcome:
    """One judged run."""

    verdicts: dict[str, str]  # metric -> verdict; {"run": kind} when evaluate raised
    result: CapacityResult | None
    changes: dict[str, float | None] = field(default_factory=dict)
    bounds: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    reason: str = ""
    seconds: float = 0.0  # sim seconds, or the load driver's wall seconds
    lock_wait_s: float = 0.0  # wall seconds before the driver started (lock queue + start-up)
    same_load: int = 0  # baseline runs whose P99 was measured at the probe's user count

    @property
    def failed(self) -> bool:
        """Any regression or inconclusive verdict, or no verdict at all."""
        return any(v != "pass" and v != "improvement" for v in self.verdicts.values())

    @property
    def caught(self) -> bool:
        """Any regression verdict."""
        return any(v == "regression" for v in self.verdicts.values())

    @property
    def inconclusive(self) -> bool:
        """An inconclusive verdict or run (and no regression)."""
        return not self.caught and any(
            v not in ("pass", "improvement", "regression") for v in self.verdicts.values()
        )


def judge(result: CapacityResult, entry: BaselineEntry, settings: RunSettings) -> Outcome:
    """Verdicts of ``result`` against ``entry`` exactly as the gate computes them."""
    try:
        vs = evaluate(result, entry, settings, key=KEY, baseline_path="(bench)")
    except GateFailure as exc:
        return Outcome({"run": exc.verdict}, result, reason=str(exc).splitlines()[0])
    return Outcome(
        {v.metric: v.verdict for v in vs},
        result,
        {v.metric: v.change for v in vs},
        {v.metric: (v.low, v.high) for v in vs},
        "; ".join(v.message for v in vs if v.verdict not in ("pass", "improvement")),
    )


def record(
    entry: BaselineEntry | None,
    result: CapacityResult,
    settings: RunSettings,
    history: int = HISTORY,
) -> BaselineEntry:
    """Append ``result`` to the history as ``--mlload-update-baseline`` does.

    The result of a run recorded while the entry exists should carry a probe at the entry's
    reference load (``probe_users=entry.users``, as the plugin asks for): it is kept with the
    run (:class:`~pytest_mlload.baseline.RunExtras`), so the P99 gate has one figure per run
    at a common load.
    """
    if not result.converged:
        raise BenchError(f"baseline run did not converge: {result.reason}")
    if entry is None:
        return BaselineEntry.from_result(KEY, result, settings, FINGERPRINT)
    return entry.with_run(BaselineRun.from_result(result), settings, FINGERPRINT, history)


def ready(entry: BaselineEntry, settings: RunSettings) -> bool:
    """Whether the record-time line of ``entry`` says it decides the threshold (every figure)."""
    return all(i.ready for i in history_readiness(entry, settings))


def by_readiness(flags: Sequence[bool], outs: Sequence[Outcome], what: str) -> str:
    """How many of ``outs`` were ``what`` (inconclusive, caught), split by the record-time line
    of the baseline each was judged against: ``flagged / ready``."""
    cells = []
    for flag in (False, True):
        runs = [o for f, o in zip(flags, outs, strict=True) if f is flag]
        cells.append(f"{sum(getattr(o, what) for o in runs)}/{len(runs)}")
    return " / ".join(cells)


def reference_load(entry: BaselineEntry | None) -> int | None:
    """The user count a baseline-recording run probes (None for the first run)."""
    return entry.users if entry is not None else None


# --------------------------------------------------------------------------- summaries


def count_of(outs: Sequence[Outcome], metric: str, verdict: str) -> int:
    return sum(1 for o in outs if o.verdicts.get(metric) == verdict)


def median_change(outs: Sequence[Outcome], metric: str) -> str:
    vals = [c for o in outs if (c := o.changes.get(metric)) is not None]
    return f"{statistics.median(vals) * 100:+.1f} %" if vals else "-"


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def worst_bounds(outs: Sequence[Outcome], *, changed: bool) -> str:
    """The interval bound closest to the wrong verdict, over all runs, per metric.

    A/A: the lowest capacity bound and the highest P99 bound (a pass needs them inside
    -threshold / +threshold). Changed: the highest capacity bound and the lowest P99 bound (a
    regression needs them past the threshold). Shows the margin the verdicts had.
    """
    out = []
    for metric, side_aa, side_ch in (("capacity", 0, 1), ("p99", 1, 0)):
        side = side_ch if changed else side_aa  # 0: low bound (take the min), 1: high (max)
        vals = [v for o in outs if (bd := o.bounds.get(metric)) and _finite(v := bd[side])]
        pick = min if side == 0 else max
        out.append(f"{pick(vals) * 100:+.1f} %" if vals else "-")  # type: ignore[type-var]
    return " / ".join(out)


def covers_zero(outs: Sequence[Outcome]) -> str:
    """A/A: how many change intervals contain 0 (a sound 95 % interval: at least 95 %)."""
    parts = []
    for metric in ("capacity", "p99"):
        bs = [b for o in outs if (b := o.bounds.get(metric)) and _finite(b[0]) and _finite(b[1])]
        hit = sum(1 for lo, hi in bs if lo <= 0 <= hi)  # type: ignore[operator]
        parts.append(f"{metric} {hit}/{len(bs)}")
    return "change intervals containing 0: " + ", ".join(parts)


def row(name: str, kind: str, outs: Sequence[Outcome], seconds: str) -> list[Any]:
    """One table row: the headline count against its target, then the breakdown."""
    n = len(outs)
    if kind == "A/A":
        bad = sum(o.failed for o in outs)
        headline = f"{bad}/{n} fail ({bad / n:.1%})" + ("" if bad / n <= AA_TARGET else " (!)")
    else:
        hit = sum(o.caught for o in outs)
        headline = f"{hit}/{n} caught ({hit / n:.1%})" + (
            "" if hit / n >= DETECT_TARGET else " (!)"
        )
    return [
        name,
        headline,
        f"{count_of(outs, 'capacity', 'regression')}/{count_of(outs, 'p99', 'regression')}",
        f"{count_of(outs, 'capacity', 'inconclusive')}/{count_of(outs, 'p99', 'inconclusive')}",
        sum(1 for o in outs if "run" in o.verdicts),
        f"{median_change(outs, 'capacity')} / {median_change(outs, 'p99')}",
        worst_bounds(outs, changed=kind != "A/A"),
        seconds,
    ]


HEADERS = [
    "case",
    "verdict count (target)",
    "regr cap/p99",
    "inconcl cap/p99",
    "no verdict",
    "median change cap / p99",
    "worst bound cap / p99",
]


def spread_line(label: str, outs: Sequence[Outcome]) -> str:
    caps = [o.result.capacity_rps for o in outs if o.result and o.result.converged]
    p99s = [
        o.result.probe.p99_ms
        for o in outs
        if o.result and o.result.probe and o.result.probe.p99_ms is not None
    ]
    users = sorted({o.result.users for o in outs if o.result and o.result.converged})
    return (
        f"{label}: run-to-run CV capacity {pct(cv(caps))}, probe P99 {pct(cv(p99s))}; "
        f"operating users seen {users}"
    )


def same_load_line(outs: Sequence[Outcome]) -> str:
    """How many baseline P99s the P99 gate had: fewer than 3 means no baseline spread."""
    k = [o.same_load for o in outs]
    few = sum(1 for x in k if x < 3)
    return (
        f"baseline P99s at the probe's load: median {statistics.median(k):g} of {HISTORY}, "
        f"< 3 (spread from their own windows only) in {few}/{len(k)} runs"
    )


def reasons(outs: Sequence[Outcome], limit: int = 3) -> list[str]:
    """The first few messages of failing runs, for the diagnosis: regressions first."""
    failing = sorted((o for o in outs if o.failed and o.reason), key=lambda o: not o.caught)
    return [o.reason for o in failing][:limit]


# --------------------------------------------------------------------------- part 1: simulated


@dataclass(frozen=True)
class SimCase:
    """A baseline service, a changed service (None: A/A) and the P99 target."""

    name: str
    base: dict[str, Any]
    change: dict[str, Any] | None
    target_p99_ms: float
    settings: dict[str, Any] = field(default_factory=dict)  # RunSettings overrides


SIM_COMMON = {"jitter": 0.1, "overhead_ms": 1.0}
LONG_WINDOWS = {"measure_s": 12.0, "probe_s": 8.0, "max_duration_s": 90.0}
SIM_CASES = (
    # heavy-tailed service times (lognormal sigma 0.5): a noisier P99 than the rest
    SimCase("4x20ms jitter .5 A/A", {"slots": 4, "service_ms": 20.0, "jitter": 0.5}, None, 120.0),
    SimCase(
        "4x20ms jitter .5 x1.25",
        {"slots": 4, "service_ms": 20.0, "jitter": 0.5},
        {"service_ms": 25.0},
        120.0,
    ),
    # the same service with windows long enough for its tail (a verdict takes ~45 s)
    SimCase(
        "jitter .5, long windows A/A",
        {"slots": 4, "service_ms": 20.0, "jitter": 0.5},
        None,
        120.0,
        LONG_WINDOWS,
    ),
    SimCase(
        "jitter .5, long windows x1.25",
        {"slots": 4, "service_ms": 20.0, "jitter": 0.5},
        {"service_ms": 25.0},
        120.0,
        LONG_WINDOWS,
    ),
    SimCase("4x20ms A/A", {"slots": 4, "service_ms": 20.0}, None, 120.0),
    SimCase("4x20ms service x1.25", {"slots": 4, "service_ms": 20.0}, {"service_ms": 25.0}, 120.0),
    SimCase("5x20ms A/A", {"slots": 5, "service_ms": 20.0}, None, 120.0),
    SimCase("5->4 slots x20ms", {"slots": 5, "service_ms": 20.0}, {"slots": 4}, 120.0),
    SimCase("8x10ms A/A", {"slots": 8, "service_ms": 10.0}, None, 60.0),
    SimCase("8x10ms service x1.25", {"slots": 8, "service_ms": 10.0}, {"service_ms": 12.5}, 60.0),
    SimCase("10x10ms A/A", {"slots": 10, "service_ms": 10.0}, None, 60.0),
    SimCase("10->8 slots x10ms", {"slots": 10, "service_ms": 10.0}, {"slots": 8}, 60.0),
)


def sim_settings(case: SimCase) -> RunSettings:
    # max_users above every operating point here (10 slots x 60 ms / 10 ms = 60 users)
    return RunSettings(target_p99_ms=case.target_p99_ms, max_users=128, **case.settings)


def sim_run(
    knobs: dict[str, Any], seed: int, settings: RunSettings, probe_users: int | None
) -> CapacityResult:
    svc = SimulatedService(**{**SIM_COMMON, **knobs, "seed": seed})
    search = CapacitySearch(settings, probe_users=probe_users)
    clock = FakeClock(svc)
    run_search(search, svc, clock)
    return build_result(search, name=KEY, host="sim://", elapsed_s=clock.now())


def sim_baseline(case: SimCase, first_seed: int, settings: RunSettings) -> BaselineEntry:
    """HISTORY converged runs from seeds ``first_seed, first_seed + 1, ...``.

    An inconclusive run is not recorded (``--mlload-update-baseline`` refuses it too; a user
    would rerun), so the next seed is tried, at most 10 seeds in all.
    """
    entry = None
    kept = 0
    for seed in range(first_seed, first_seed + 10):
        r = sim_run(case.base, seed, settings, reference_load(entry))
        if r.converged:
            entry = record(entry, r, settings)
            kept += 1
            if kept == HISTORY:
                return entry
    raise BenchError(f"{case.name}: fewer than {HISTORY} of 10 baseline runs converged")


def sim_case(case: SimCase, n: int, *, fresh: bool) -> tuple[list[Outcome], BaselineEntry]:
    settings = sim_settings(case)
    knobs = {**case.base, **(case.change or {})}
    fixed = sim_baseline(case, 0, settings)
    outs = []
    for i in range(n):
        entry = sim_baseline(case, 10_000 + 10 * i, settings) if fresh else fixed
        r = sim_run(knobs, 1_000 + i, settings, entry.users)
        o = judge(r, entry, settings)
        o.seconds = r.elapsed_s
        o.same_load = sum(1 for b in entry.runs if b.users == entry.users)
        outs.append(o)
    return outs, fixed


def part_sim(
    n: int,
    *,
    fresh_too: bool,
    noise_n: int = 0,
    noise_only: bool = False,
    threshold: float = 0.10,
    history: int = HISTORY,
    until_ready: int = 0,
) -> None:
    """The simulated part, holding the machine-wide load lock.

    The simulation keeps a core busy for minutes: on a small machine that would skew any real
    load run measured meanwhile, so it queues behind them like a load run does.
    """
    from pytest_mlload.load.engine import exclusive_load

    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_load())
            note = f"waited {time.monotonic() - t0:.0f} s for the machine-wide load lock"
        except LoadError as exc:  # the lock's own bounded wait ran out: simulate anyway
            note = f"ran without the machine-wide load lock ({exc})"
        if not noise_only:
            _part_sim(n, fresh_too=fresh_too)
            say()
        if noise_n:
            part_noise(noise_n, threshold, history, until_ready)
    say(f"({note})")


def _part_sim(n: int, *, fresh_too: bool) -> None:
    header(
        f"bench_verdicts --sim: {n} runs per case, baseline history {HISTORY}, threshold "
        f"{RunSettings().threshold:.0%}"
    )
    say(
        "Simulated closed-loop service (jitter 0.1 unless named, overhead 1 ms), fake clock; "
        "defaults of RunSettings except target_p99_ms and max_users=128."
    )
    modes = [("fixed baseline (seeds 0..)", False)] + (
        [("fresh baseline per run", True)] if fresh_too else []
    )
    for label, fresh in modes:
        say()
        say(f"## {label}")
        rows, notes = [], []
        t0 = time.perf_counter()
        for case in SIM_CASES:
            outs, entry = sim_case(case, n, fresh=fresh)
            secs = [o.seconds for o in outs]
            worst = max(secs)
            rows.append(
                row(
                    case.name,
                    "A/A" if case.change is None else "change",
                    outs,
                    f"{statistics.median(secs):.1f} / {worst:.1f}"
                    + ("" if worst <= BUDGET_S else " (!)"),
                )
            )
            if case.change is None:
                notes.append(
                    f"{spread_line(case.name, outs)}; {same_load_line(outs)}; {covers_zero(outs)}"
                )
            if case.change is None:
                notes += [f"{case.name} failed: {m}" for m in reasons(outs, 2)]
            else:
                notes += [
                    f"{case.name} missed: {o.reason or o.verdicts}" for o in outs if not o.caught
                ][:2]
        say(table(HEADERS + ["sim s median / max"], rows))
        for line in notes:
            say(f"- {line}")
        say(f"({time.perf_counter() - t0:.1f} s of CPU time for this table)")


# --------------------------------------------------------------------------- issue 9: noise, check


@dataclass(frozen=True)
class NoiseCase:
    """A service, its run-to-run service-time noise (lognormal sigma) and the P99 target."""

    name: str
    knobs: dict[str, Any]
    noise: float
    target_p99_ms: float
    spell_share: float = 0.0  # share of runs that start in a slow spell (SPELL_* below)


NOISE_CASES = (
    NoiseCase("4x20ms, noise 0 %", {"slots": 4, "service_ms": 20.0}, 0.0, 120.0),
    NoiseCase("4x20ms, noise 3 %", {"slots": 4, "service_ms": 20.0}, 0.03, 120.0),
    NoiseCase("4x20ms, noise 5 %", {"slots": 4, "service_ms": 20.0}, 0.05, 120.0),
    NoiseCase(
        "4x20ms heavy tail (jitter .5), noise 3 %",
        {"slots": 4, "service_ms": 20.0, "jitter": 0.5},
        0.03,
        120.0,
    ),
    NoiseCase(
        "4x20ms, noise 3 %, slow spells",
        {"slots": 4, "service_ms": 20.0},
        0.03,
        120.0,
        spell_share=0.25,
    ),
)
# A run that starts in a slow spell (a cold start's tail, a neighbour's job on the runner):
# service times SPELL_FACTOR x longer for the first SPELL_S seconds (uniform). MLServer's
# forest read P99 140-210 ms instead of 69-118 in about a quarter of its first windows, and
# its spells ended within a search (one within 24 s of a 12 s probe): here up to 12 s, longer
# than the simulated check window (5 s), shorter than a window plus check_gap_s (15 s).
SPELL_FACTOR = 1.6
SPELL_S = (3.0, 12.0)


def noisy_knobs(case: NoiseCase, seed: int, slowdown: float) -> dict[str, Any]:
    """The service of one run: its own run-to-run multiplier (seeded), times ``slowdown``."""
    import numpy as np

    mult = float(np.random.default_rng([seed, 9]).lognormal(0.0, case.noise)) if case.noise else 1.0
    knobs = {**case.knobs}
    knobs["service_ms"] = knobs["service_ms"] * mult * slowdown
    spell = np.random.default_rng([seed, 11])
    if case.spell_share and spell.random() < case.spell_share:
        knobs.update(spell_s=float(spell.uniform(*SPELL_S)), spell_factor=SPELL_FACTOR)
    return knobs


def noise_runs(
    case: NoiseCase,
    seed: int,
    settings: RunSettings,
    *,
    slowdown: float = 1.0,
    hold: int | None = None,
    probe: int | None = None,
    entry: BaselineEntry | None = None,
) -> tuple[CapacityResult, CapacityResult]:
    """A run (in check mode: its first window) and the run judged with check mode's
    confirmation windows against ``entry`` (:func:`pytest_mlload.flow.confirm_check`, on the
    same service; the pause is simulated time with no users, as between two real windows)."""
    svc = SimulatedService(**{**SIM_COMMON, **noisy_knobs(case, seed, slowdown), "seed": seed})
    clock = FakeClock(svc)

    def window() -> CapacityResult:
        t0 = clock.now()
        search = CapacitySearch(settings, probe_users=probe, hold_users=hold)
        run_search(search, svc, clock)
        svc.set_users(0)
        return build_result(search, name=KEY, host="sim://", elapsed_s=clock.now() - t0)

    first = window()
    if hold is None or entry is None:
        return first, first
    regressed = judge_confirm(entry, settings)
    return first, confirm_check(first, window, regressed, settings, pause=clock.sleep)


def judge_confirm(
    entry: BaselineEntry, settings: RunSettings
) -> Callable[[CapacityResult], list[str]]:
    """The regressions a check window reads against ``entry``, for ``confirm_check``."""
    return functools.partial(
        regression_messages, entry=entry, settings=settings, key=KEY, baseline_path="(bench)"
    )


@dataclass
class NoiseTally:
    """Judged runs of one case, per mode and kind, and the P99-over-target count."""

    outs: dict[tuple[str, str], list[Outcome]] = field(default_factory=dict)
    ready: list[bool] = field(default_factory=list)  # per baseline: its record-time line
    kept: list[int] = field(default_factory=list)  # per baseline: the runs it holds
    converged: int = 0
    over_target: list[str] = field(default_factory=list)

    def add(self, mode: str, kind: str, o: Outcome) -> None:
        self.outs.setdefault((mode, kind), []).append(o)

    def check_p99(self, r: CapacityResult, label: str) -> None:
        if r.converged and not r.check:
            self.converged += 1
            if r.p99_ms is not None and r.p99_ms > r.target_p99_ms:
                self.over_target.append(f"{label}: P99 {r.p99_ms:.1f} > {r.target_p99_ms:g} ms")


def noise_case(
    case: NoiseCase, n: int, threshold: float, history: int, until_ready: int = 0
) -> NoiseTally:
    """``n`` (A/A, slowed) pairs, each judged against a fresh baseline of ``history`` runs.

    Baseline ``i`` tries seeds ``20_000 + stride i ...`` (``stride`` = ``max(10, 2 history)``
    seeds, so the default 5 runs keep the seeds they always had). With ``until_ready`` above
    ``history``, recording goes on past ``history`` runs while the record-time line flags the
    baseline, up to ``until_ready`` runs: a team that follows the line's advice.
    """
    settings = RunSettings(target_p99_ms=case.target_p99_ms, max_users=128, threshold=threshold)
    tally = NoiseTally()
    cap = max(history, until_ready)
    stride = max(10, 2 * cap)
    for i in range(n):
        entry: BaselineEntry | None = None
        kept = 0
        for seed in range(20_000 + stride * i, 20_000 + stride * (i + 1)):
            r, _ = noise_runs(case, seed, settings, probe=reference_load(entry))
            tally.check_p99(r, f"baseline seed {seed}")
            if r.converged:
                entry = record(entry, r, settings, cap)
                kept += 1
                if kept >= history and (kept == cap or ready(entry, settings)):
                    break
        tally.kept.append(kept)
        if entry is None or kept < history:
            raise BenchError(
                f"{case.name}: fewer than {history} of {stride} baseline runs converged"
            )
        u = entry.users
        tally.ready.append(ready(entry, settings))
        for kind, slowdown, seed in (("A/A", 1.0, 1_000 + i), ("x1.25", SLOWDOWN, 5_000 + i)):
            full, _ = noise_runs(case, seed, settings, slowdown=slowdown, probe=u)
            tally.check_p99(full, f"{kind} seed {seed}")
            one, check = noise_runs(
                case, seed, settings, slowdown=slowdown, hold=u, probe=u, entry=entry
            )
            for mode, r in (("full", full), ("check", check), ("check, 1 window", one)):
                o = judge(r, entry, settings)
                o.seconds = r.elapsed_s
                tally.add(mode, kind, o)
    return tally


def verdict_counts(outs: Sequence[Outcome]) -> str:
    """regression / inconclusive / pass counts of a list of judged runs."""
    reg = sum(o.caught for o in outs)
    inc = sum(o.inconclusive for o in outs)
    return f"{reg} / {inc} / {len(outs) - reg - inc}"


def best_possible(noise: float, history: int, n_draws: int = 200_000) -> tuple[float, float]:
    """False regressions and misses per 50 of the best rule there is, for run-to-run noise alone.

    An oracle that knows the noise and sees no within-run noise at all compares a new run with
    the median of ``history`` baseline runs on the log scale and cuts at the point that
    minimises the worse of its two error rates (A/A called a regression, a x``SLOWDOWN`` run
    not called one). No gate can beat it, so where it misses the 1/50 and 49/50 targets those
    targets cannot be met from one run against that many baseline runs.
    """
    from scipy.stats import norm

    if noise == 0:
        return 0.0, 0.0
    rng = np.random.default_rng([history, round(noise * 1e4)])
    base = np.median(rng.normal(0.0, noise, (n_draws, history)), axis=1)
    sd = float(np.std(rng.normal(0.0, noise, n_draws) - base))
    shift = -math.log(SLOWDOWN)
    cuts = np.linspace(shift, 0.0, 2001)
    false, missed = norm.cdf(cuts / sd), norm.sf((cuts - shift) / sd)
    i = int(np.argmin(np.maximum(false, missed)))
    return 50 * float(false[i]), 50 * float(missed[i])


def part_noise(n: int, threshold: float, history: int = HISTORY, until_ready: int = 0) -> None:
    more = (
        f" (recorded on while the record-time line flags it, up to {until_ready} runs)"
        if until_ready > history
        else ""
    )
    header(
        f"bench_verdicts --sim, issue 9: run-to-run noise and check mode, {n} runs per case, "
        f"fresh baseline of {history} per run{more}, threshold {threshold:.0%}"
    )
    say(
        "Targets: A/A false regressions <= 1/50 (and no failure: inconclusive counted apart), "
        "slowed service (x1.25 service time) caught >= 49/50. Cells: regression / inconclusive "
        "/ pass."
    )
    rows, p99_rows, ready_rows, notes = [], [], [], []
    t0 = time.perf_counter()
    for case in NOISE_CASES:
        tally = noise_case(case, n, threshold, history, until_ready)
        for mode in ("full", "check", "check, 1 window"):
            aa = tally.outs[(mode, "A/A")]
            slow = tally.outs[(mode, "x1.25")]
            false_reg = sum(o.caught for o in aa)
            caught = sum(o.caught for o in slow)
            secs = [o.seconds for o in aa + slow]
            rows.append(
                [
                    case.name,
                    mode,
                    verdict_counts(aa),
                    f"{false_reg}/{len(aa)}" + ("" if false_reg / len(aa) <= AA_TARGET else " (!)"),
                    verdict_counts(slow),
                    f"{caught}/{len(slow)}"
                    + ("" if caught / len(slow) >= DETECT_TARGET else " (!)"),
                    f"{median_change(slow, 'capacity')} / {median_change(slow, 'p99')}",
                    f"{statistics.median(secs):.1f} / {max(secs):.1f}",
                ]
            )
            notes += [f"{case.name}, {mode}, A/A: {m}" for m in reasons(aa, 2)]
            notes += [
                f"{case.name}, {mode}, slowed not caught: {o.reason or o.verdicts}"
                for o in slow
                if not o.caught
            ][:2]
        p99_rows.append([case.name, tally.converged, len(tally.over_target)])
        ready_rows.append(
            [
                case.name,
                f"{tally.ready.count(False)}/{len(tally.ready)}",
                f"{statistics.median(tally.kept):g} / {max(tally.kept)}",
                *(
                    by_readiness(tally.ready, tally.outs[(m, kind)], what)
                    for m in ("full", "check")
                    for kind, what in (("A/A", "inconclusive"), ("x1.25", "caught"))
                ),
            ]
        )
        notes += tally.over_target[:3]
    say(
        table(
            [
                "case",
                "mode",
                "A/A regr / inconcl / pass",
                "A/A false regressions",
                "x1.25 regr / inconcl / pass",
                "x1.25 caught",
                "x1.25 median change cap / p99",
                "sim s median / max",
            ],
            rows,
        )
    )
    say()
    say(table(["case", "converged full searches", "with P99 over target"], p99_rows))
    say()
    say(
        "What the record-time line said of each fresh baseline (flagged: a figure's smallest "
        "decidable threshold is over the threshold), and the runs judged against it, as "
        "flagged / ready."
    )
    say(
        table(
            [
                "case",
                "baselines flagged",
                "runs kept median / max",
                "full: A/A inconcl",
                "full: x1.25 caught",
                "check: A/A inconcl",
                "check: x1.25 caught",
            ],
            ready_rows,
        )
    )
    say()
    bound_rows = []
    for case in NOISE_CASES:
        runs = (history, 2 * history)
        cells = [f"{f:.2f} / {m:.2f}" for f, m in (best_possible(case.noise, k) for k in runs)]
        bound_rows.append([case.name, *cells])
    say(
        "The best any rule can do against run-to-run noise alone (an oracle cut on the log "
        "change; no within-run noise): expected false regressions / missed slowdowns per 50."
    )
    say(
        table(
            [
                "case",
                f"{history} baseline runs",
                f"{2 * history} baseline runs",
            ],
            bound_rows,
        )
    )
    for line in notes:
        say(f"- {line}")
    say(f"({time.perf_counter() - t0:.1f} s of CPU time for these tables)")


# --------------------------------------------------------------------------- part 2: real server


@dataclass(frozen=True)
class RealConfig:
    """A demo server configuration and the P99 target that puts its knee in the search."""

    slots: int
    service_ms: float
    target_p99_ms: float
    max_users: int

    @property
    def nominal_rps(self) -> float:
        return self.slots / (self.service_ms / 1000.0)


REAL_CONFIGS = {
    "4x20": RealConfig(4, 20.0, 120.0, 64),
    "8x10": RealConfig(8, 10.0, 60.0, 128),
}


def real_run(
    task: type,
    url: str,
    settings: RunSettings,
    probe_users: int | None,
    hold_users: int | None = None,
) -> tuple[CapacityResult | None, float, float, str]:
    """One run_capacity call: (result or None, driver seconds, seconds before the driver, error).

    Driver seconds run from the load driver's own start (after its imports) to the result
    reaching this process: the search, the probe and the open-loop confirmation. The rest of
    the call is queueing for the machine-wide load lock (other load runs) plus the child's
    start-up (interpreter and ``import locust``, about 1-2 s).
    """
    from pytest_mlload.load.engine import run_capacity

    t_call = time.monotonic()
    driver_t0: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if not driver_t0 and isinstance(event.get("elapsed_s"), int | float):
            driver_t0.append(time.monotonic() - float(event["elapsed_s"]))

    try:
        result = run_capacity(
            task,
            host=url,
            settings=settings,
            probe_users=probe_users,
            hold_users=hold_users,
            on_event=on_event,
        )
    except LoadError as exc:  # an overrun or a crashed driver: a failed run, keep going
        result, err = None, f"{type(exc).__name__}: {exc}"[:300]
    else:
        err = ""
    t_end = time.monotonic()
    start = driver_t0[0] if driver_t0 else t_call
    return result, t_end - start, start - t_call, err


def real_check(
    task: type, url: str, settings: RunSettings, entry: BaselineEntry, hold: int | None
) -> tuple[CapacityResult | None, float, float, str]:
    """:func:`real_run` probing ``entry``'s load; in check mode (``hold``) with the plugin's
    confirmation windows (:func:`pytest_mlload.flow.confirm_check`), whose windows and
    pauses count in the driver seconds."""
    r, wall, waited, err = real_run(task, url, settings, entry.users, hold)
    if hold is None or r is None:
        return r, wall, waited, err

    def again() -> CapacityResult:
        more, _, _, why = real_run(task, url, settings, entry.users, hold)
        if more is None:
            raise LoadError(why)
        return more

    t0 = time.monotonic()
    r = confirm_check(r, again, judge_confirm(entry, settings), settings)
    return r, wall + time.monotonic() - t0, waited, err


def real_outcome(
    result: CapacityResult | None, err: str, entry: BaselineEntry, settings: RunSettings
) -> Outcome:
    if result is None:
        return Outcome({"run": "error"}, None, reason=err)
    return judge(result, entry, settings)


def describe(o: Outcome, *, changed: bool = False) -> str:
    r = o.result
    if r is None:
        return f"ERROR {o.reason}"
    probe = r.probe.p99_ms if r.probe and r.probe.p99_ms is not None else float("nan")
    cpu = f"{r.generator_cpu_ratio:.0%}" if r.generator_cpu_ratio is not None else "-"
    v = " ".join(f"{k}={x}" for k, x in o.verdicts.items())
    line = (
        f"{r.capacity_rps:6.1f} req/s at {r.users:3d} users, probe P99 {probe:6.1f} ms, "
        f"gen CPU {cpu}, {o.seconds:4.1f} s (+{o.lock_wait_s:.0f} s queued/start) -> {v}"
    )
    wrong = (not o.caught) if changed else (o.failed and "baseline" not in o.verdicts)
    if o.seconds > BUDGET_S or wrong:
        line += "\n      " + trajectory(r)
    return line


def trajectory(r: CapacityResult) -> str:
    """The windows of a run (phase, users, seconds, requests, P99), to see where time went."""
    parts = [
        f"{w.phase} {w.users}u {w.end_s - w.start_s:.1f}s/{w.requests}req/"
        f"{w.p99_ms if w.p99_ms is not None else float('nan'):.0f}ms"
        for w in r.trajectory
    ]
    first = r.trajectory[0].start_s if r.trajectory else 0.0
    last = r.trajectory[-1].end_s if r.trajectory else 0.0
    return (
        f"windows: {', '.join(parts)}; search {last - first:.1f} s of {r.elapsed_s:.1f} s "
        f"in the driver"
    )


def real_baseline(
    task: type,
    url: str,
    settings: RunSettings,
    jittered: Callable[[float], None],
    block: int,
    history: int,
) -> tuple[BaselineEntry, list[Outcome]]:
    """A fresh baseline of ``history`` full-search runs (each draws its own service time)."""
    entry: BaselineEntry | None = None
    base: list[Outcome] = []
    for i in range(history):
        jittered(1.0)
        r, wall, waited, err = real_run(task, url, settings, reference_load(entry))
        if r is None:
            raise BenchError(f"baseline run {i + 1} of block {block} failed: {err}")
        entry = record(entry, r, settings, history)
        o = Outcome({"baseline": "recorded"}, r, seconds=wall, lock_wait_s=waited)
        base.append(o)
        say(f"  block {block} baseline {i + 1}/{history}: {describe(o)}")
        for note in entry.load_notes():
            say(f"    note: {note}")
    assert entry is not None
    say(
        f"  block {block} baseline: capacity {[x.capacity_rps for x in entry.runs]} req/s, "
        f"users {[x.users for x in entry.runs]}, P99 {[x.p99_ms for x in entry.runs]} ms "
        f"-> reference load {entry.users} users"
    )
    line = readiness_line(f"block {block}", history_readiness(entry, settings), history)
    say(f"  record-time line: {line}")
    return entry, base


def part_real(
    cfg_name: str,
    runs: int,
    jitter: float,
    *,
    modes: Sequence[str] = ("full", "check"),
    block_runs: int = 10,
    history: int = HISTORY,
    seed: int = 9,
) -> None:
    """``runs`` A/A and slowed runs per mode; a fresh baseline every ``block_runs`` runs, so
    the verdicts do not all share one baseline's luck."""
    skip_locust_patch()
    import seed_tasks  # noqa: PLC0415  (imports Locust, unpatched)

    cfg = REAL_CONFIGS[cfg_name]
    settings = RunSettings(target_p99_ms=cfg.target_p99_ms, max_users=cfg.max_users)
    blocks = -(-runs // block_runs)
    header(
        f"bench_verdicts --real: demo {cfg_name} ms ({cfg.nominal_rps:.0f} req/s nominal), "
        f"target P99 {cfg.target_p99_ms:g} ms, service time x lognormal(0, {jitter:g}) drawn "
        f"per run; {runs} x (A/A, slowdown {SLOWDOWN}) in {' and '.join(modes)} mode, "
        f"{blocks} fresh baseline(s) of {history} runs ({block_runs} judged runs each)"
    )
    rng = np.random.default_rng(seed)

    def jittered(factor: float) -> None:
        """This run's service time: the change times a fresh run-to-run draw."""
        draw = float(rng.lognormal(0.0, jitter)) if jitter > 0 else 1.0
        server.set_config(slowdown=factor * draw)

    t_all = time.monotonic()
    outs: dict[tuple[str, str], list[Outcome]] = {
        (m, k): [] for m in modes for k in ("A/A", "slow")
    }
    base: list[Outcome] = []
    flags: list[bool] = []  # per judged round: the record-time line of its block's baseline
    with demo_server(slots=cfg.slots, service_ms=cfg.service_ms) as server:
        say(f"demo server pid {server.pid} at {server.url}")
        for i in range(runs):
            if i % block_runs == 0:
                entry, recorded = real_baseline(
                    seed_tasks.GetWork, server.url, settings, jittered, i // block_runs + 1, history
                )
                base += recorded
            flags.append(ready(entry, settings))
            for mode in modes:
                hold = entry.users if mode == "check" else None
                for kind, factor in (("A/A", 1.0), ("slow", SLOWDOWN)):
                    jittered(factor)
                    r, wall, waited, err = real_check(
                        seed_tasks.GetWork, server.url, settings, entry, hold
                    )
                    o = real_outcome(r, err, entry, settings)
                    o.seconds, o.lock_wait_s = wall, waited
                    outs[(mode, kind)].append(o)
                    say(f"  {mode} {kind} {i + 1}/{runs}: {describe(o, changed=kind == 'slow')}")
        server.set_config(slowdown=1.0)
    total = time.monotonic() - t_all
    say()

    def secs(outs: list[Outcome]) -> str:
        s = [o.seconds for o in outs]
        return f"{statistics.median(s):.1f} / {max(s):.1f}" + ("" if max(s) <= BUDGET_S else " (!)")

    def cpu(outs: list[Outcome]) -> str:
        c = [
            o.result.generator_cpu_ratio
            for o in outs
            if o.result and o.result.generator_cpu_ratio is not None
        ]
        return f"{statistics.median(c):.0%} / {max(c):.0%}" if c else "-"

    rows = []
    for mode in modes:
        aa, slow = outs[(mode, "A/A")], outs[(mode, "slow")]
        rows.append(row(f"{mode}: A/A", "A/A", aa, secs(aa)) + [cpu(aa)])
        rows.append(row(f"{mode}: slowdown {SLOWDOWN}", "change", slow, secs(slow)) + [cpu(slow)])
    say(table(HEADERS + ["driver s median / max", "gen CPU median / max"], rows))
    aa = [o for m in modes for o in outs[(m, "A/A")]]
    slow = [o for m in modes for o in outs[(m, "slow")]]
    over = [
        o.result
        for o in base + outs.get(("full", "A/A"), []) + outs.get(("full", "slow"), [])
        if o.result
        and o.result.converged
        and o.result.p99_ms is not None
        and o.result.p99_ms > o.result.target_p99_ms
    ]
    say(f"- converged full searches with P99 over the target: {len(over)}")
    say(f"- {spread_line('A/A', aa)}; {covers_zero(aa)}")
    say(
        f"- baseline runs: wall s {[round(o.seconds, 1) for o in base]}, "
        f"CV capacity {pct(cv([o.result.capacity_rps for o in base if o.result]))}"
    )
    waits = [o.lock_wait_s for o in base + aa + slow]
    say(
        f"- total {total / 60:.1f} min, of which {sum(waits) / 60:.1f} min before the driver "
        f"started (queued for the machine-wide load lock behind other load runs, plus ~1-2 s "
        f"child start-up per run)"
    )
    for mode in modes:
        aa_, slow_ = outs[(mode, "A/A")], outs[(mode, "slow")]
        say(
            f"- {mode}, by the record-time line of the block (flagged / ready): A/A inconclusive "
            f"{by_readiness(flags, aa_, 'inconclusive')}, slowed caught "
            f"{by_readiness(flags, slow_, 'caught')}"
        )
    for m in reasons(aa, 3):
        say(f"- A/A failure: {m}")
    for o in [o for o in slow if not o.caught][:3]:
        say(f"- slowed run not caught: {o.reason or o.verdicts}")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sim", action="store_true", help="simulated part (default if no part given)")
    p.add_argument("--real", action="store_true", help="real demo-server part (slow)")
    p.add_argument("--sim-runs", type=int, default=200, help="runs per simulated case")
    p.add_argument(
        "--noise-runs", type=int, default=50, help="runs per issue 9 case (--sim); 0: skip them"
    )
    p.add_argument("--noise-only", action="store_true", help="--sim: only the issue 9 tables")
    p.add_argument(
        "--threshold", type=float, default=0.10, help="--sim: threshold of the noise cases"
    )
    p.add_argument("--runs", type=int, default=20, help="A/A and slowed runs per mode (--real)")
    p.add_argument(
        "--jitter", type=float, default=0.03, help="--real: per-run lognormal sigma of service time"
    )
    p.add_argument(
        "--config", choices=sorted(REAL_CONFIGS), default="8x10", help="demo server for --real"
    )
    p.add_argument(
        "--modes", default="full,check", help="--real: comma-separated modes (full, check)"
    )
    p.add_argument(
        "--block-runs", type=int, default=10, help="--real: judged runs per fresh baseline"
    )
    p.add_argument(
        "--history",
        type=int,
        default=HISTORY,
        help=f"baseline runs per fresh baseline (--sim noise tables, --real; default {HISTORY}, "
        "the plugin's --mlload-history default is 10)",
    )
    p.add_argument(
        "--until-ready",
        type=int,
        default=0,
        help="--sim noise tables: record each baseline on past --history runs while the "
        "record-time line flags it, up to this many runs (0: off)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke: 50 simulated runs per case, fixed baseline only",
    )
    args = p.parse_args(argv)
    _common.stop_on_sigterm()  # SIGTERM stops the demo server by PID, as Ctrl-C does
    if args.history < 1:
        p.error(f"--history takes an integer >= 1, got {args.history}")
    if not (args.sim or args.real):
        args.sim = True
    parts: list[Callable[[], None]] = []
    if args.sim:
        n = min(args.sim_runs, 50) if args.quick else args.sim_runs
        noise_n = min(args.noise_runs, 10) if args.quick else args.noise_runs
        parts.append(
            lambda: part_sim(
                n,
                fresh_too=not args.quick,
                noise_n=noise_n,
                noise_only=args.noise_only,
                threshold=args.threshold,
                history=args.history,
                until_ready=args.until_ready,
            )
        )
    if args.real:
        modes = tuple(m for m in args.modes.split(",") if m)
        if not modes or set(modes) - {"full", "check"}:
            p.error(f"--modes takes full and/or check, got {args.modes!r}")
        parts.append(
            lambda: part_real(
                args.config,
                args.runs,
                args.jitter,
                modes=modes,
                block_runs=args.block_runs,
                history=args.history,
            )
        )
    try:
        for part in parts:
            part()
            say()
    except BenchError as exc:
        say(f"BENCH ERROR: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
