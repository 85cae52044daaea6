"""The operating point on servers that degrade past a knee, or start failing above a load.

    python bench/bench_knee.py [--seeds 10]     # simulated: fake clock, seconds

The same cases on real demo servers, against a wrk sweep: ``bench/bench_knee_real.py``.

Target (issue 9): capacity within **+-5 %** of the best rate that meets the P99 target (and the
error cap), as measured by an independent sweep over fixed loads, and the knee reported.

``--sim``: :class:`~pytest_mlload.simulate.SimulatedService` with a fake clock. The truth is
:func:`pytest_mlload.simulate.sweep`: user counts 1..40 held one by one on fresh services (no
search involved), 1 s settle and 4 s measured each; the best rate is the highest goodput among
counts whose P99 (all requests) meets the target and whose error ratio is under 1 %. Each case
then runs the capacity search over ``--seeds`` seeds and prints capacity / best rate, the users
chosen against the sweep's, the knee reported, and whether a converged P99 exceeded the target.

A missed target is printed and marked ``(!)``, not an exit status.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from _common import BenchError, header, say, table

from pytest_mlload.config import RunSettings
from pytest_mlload.load.controller import CapacitySearch, build_result, run_search
from pytest_mlload.testing.simulate import FakeClock, SimulatedService, best_rate, sweep

ACCURACY = 0.05
SWEEP_USERS = range(1, 41)


@dataclass(frozen=True)
class KneeCase:
    """A simulated service and the P99 target the search runs against."""

    name: str
    knobs: dict[str, Any]
    target_p99_ms: float


SIM_CASES = (
    KneeCase("knee 8, penalty .25, target 60", {"slots": 64, "knee": 8}, 60.0),
    KneeCase("knee 8, penalty .25, target 120", {"slots": 64, "knee": 8}, 120.0),
    KneeCase("knee 8, penalty .25, target 300", {"slots": 64, "knee": 8}, 300.0),
    KneeCase(
        "knee 8, penalty .1, target 120", {"slots": 64, "knee": 8, "knee_penalty": 0.1}, 120.0
    ),
    KneeCase("knee 8, jitter .5, target 300", {"slots": 64, "knee": 8, "jitter": 0.5}, 300.0),
    KneeCase("errors above 12 (64 slots), target 120", {"slots": 64, "error_above": 12}, 120.0),
    KneeCase("errors above 12 (4 slots), target 120", {"slots": 4, "error_above": 12}, 120.0),
    KneeCase("no knee: 4x20ms, target 120", {"slots": 4}, 120.0),
)


# --------------------------------------------------------------------------- sim


def sim_case(case: KneeCase, seeds: int) -> list[Any]:
    """One table row: the sweep's truth and the search's answers over ``seeds`` seeds."""
    truth_points = sweep(lambda: SimulatedService(**case.knobs, seed=10_000), SWEEP_USERS)
    truth = best_rate(truth_points, case.target_p99_ms)
    settings = RunSettings(target_p99_ms=case.target_p99_ms, max_users=128)
    ratios, users, knees, secs = [], [], [], []
    over = inconclusive = 0
    for seed in range(seeds):
        svc = SimulatedService(**case.knobs, seed=seed)
        search = CapacitySearch(settings)
        clock = FakeClock(svc)
        run_search(search, svc, clock)
        r = build_result(search, name="knee", host="sim://", elapsed_s=clock.now())
        secs.append(r.elapsed_s)
        if not r.converged:
            inconclusive += 1
            continue
        ratios.append(r.capacity_rps / truth.rps)
        users.append(r.users)
        knees.append(r.knee_users)
        over += int(r.p99_ms is not None and r.p99_ms > case.target_p99_ms)
    worst = max((abs(x - 1) for x in ratios), default=float("inf"))
    highest_good = max(
        p.users for p in truth_points if p.p99_ms is not None and p.p99_ms <= case.target_p99_ms
    )
    return [
        case.name,
        f"{truth.rps:.1f} at {truth.users} (highest under target: {highest_good})",
        f"{statistics.median(ratios):.3f}" if ratios else "-",
        f"{min(ratios):.3f}..{max(ratios):.3f}" + ("" if worst <= ACCURACY else " (!)")
        if ratios
        else "- (!)",
        f"{sum(abs(x - 1) <= ACCURACY for x in ratios)}/{seeds}",
        " ".join(str(u) for u in sorted(set(users))) or "-",
        " ".join(sorted({str(k) for k in knees})) or "-",
        f"{over}" + ("" if over == 0 else " (!)"),
        f"{inconclusive}/{seeds}" + ("" if inconclusive == 0 else " (!)"),
        f"{statistics.median(secs):.1f} / {max(secs):.1f}",
    ]


def part_sim(seeds: int) -> None:
    """The simulated part: every case against its independent sweep."""
    header(f"bench_knee --sim: {len(SIM_CASES)} cases x {seeds} seeds, fake clock")
    say(
        "Truth: sweep of fixed user counts 1..40 (fresh service each, 1 s settle + 4 s), best "
        "goodput with P99 <= target and errors <= 1 %. Defaults of RunSettings except "
        "target_p99_ms and max_users=128; service 20 ms, jitter 0.1, overhead 1 ms unless named."
    )
    t0 = time.perf_counter()
    rows = [sim_case(case, seeds) for case in SIM_CASES]
    say(
        table(
            [
                "case",
                "best rate meeting target (req/s at users)",
                "capacity / best, median",
                "min..max (target +-5 %)",
                "within +-5 %",
                "users chosen",
                "knee reported",
                "converged P99 > target",
                "inconclusive",
                "sim s median / max",
            ],
            rows,
        )
    )
    say(f"({time.perf_counter() - t0:.1f} s of CPU time)")


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sim", action="store_true", help="the simulated cases (the only part)")
    p.add_argument("--seeds", type=int, default=10, help="search runs per simulated case")
    args = p.parse_args(argv)
    try:
        part_sim(args.seeds)
    except BenchError as exc:
        say(f"BENCH ERROR: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
