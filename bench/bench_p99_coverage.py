"""Coverage of the 95 % P99 interval on autocorrelated latencies: old (iid) vs new (batch means).

Latencies are lognormal, ``exp(sigma * z_t)`` with ``z_t`` a stationary AR(1) of unit variance
(``z_t = phi z_{t-1} + sqrt(1 - phi**2) e_t``), so the true P99 of the stationary distribution
is known analytically: ``exp(sigma * Phi^-1(0.99))``. Each cell is the fraction of simulated
windows whose interval holds it. "old" is the iid order-statistic interval alone (the ranks of
``stats._order_statistic_ranks``), "new" is :func:`pytest_mlload.stats.quantile_ci` (the same
ranks widened by batch means over the samples in completion order). Seeded; pure CPU.

    python bench/bench_p99_coverage.py            # 1000 windows per cell
    python bench/bench_p99_coverage.py --reps 300
"""

from __future__ import annotations

import argparse
import math

import numpy as np
from scipy import stats as st
from scipy.signal import lfilter

from pytest_mlload import stats

SIGMA = 0.35


def ar1_latencies(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """One stationary window of ``n`` AR(1) lognormal latencies."""
    e = rng.standard_normal(n) * math.sqrt(1.0 - phi * phi)
    z = lfilter([1.0], [1.0, -phi], e) + rng.standard_normal() * phi ** np.arange(1, n + 1)
    return np.exp(SIGMA * z)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000, help="windows per cell")
    args = parser.parse_args()
    truth = math.exp(SIGMA * float(st.norm.ppf(0.99)))
    print(f"P99 95 % interval coverage, {args.reps} windows per cell (nominal 0.95)\n")
    print("| phi | n | old (iid order statistics) | new (batch means) | new/old width |")
    print("| --- | --- | --- | --- | --- |")
    for phi in (0.0, 0.5, 0.9, 0.98):
        for n in (1000, 2000, 5000):
            rng = np.random.default_rng(20261127 + int(phi * 100) * 7 + n)
            ranks = stats._order_statistic_ranks(n, 0.99, 0.95)
            assert ranks is not None
            lower, upper = ranks
            old = new = 0
            widths: list[float] = []
            for _ in range(args.reps):
                x = ar1_latencies(rng, n, phi)
                part = np.partition(x, (lower - 1, upper - 1))
                lo_old, hi_old = part[lower - 1], part[upper - 1]
                ci = stats.quantile_ci(x, 0.99)
                assert ci is not None
                old += lo_old <= truth <= hi_old
                new += ci[0] <= truth <= ci[1]
                widths.append((ci[1] - ci[0]) / (hi_old - lo_old))
            label = "iid" if phi == 0 else f"AR(1) {phi:g}"
            print(
                f"| {label} | {n} | {old / args.reps:.3f} | {new / args.reps:.3f} | "
                f"{float(np.median(widths)):.2f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
