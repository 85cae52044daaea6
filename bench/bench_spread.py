"""How well a short history of baseline runs reads its own run-to-run spread.

Each trial draws ``k`` baseline runs and one new, unchanged run, all ``exp(sigma * z)`` with
``z`` standard normal (multiplicative run-to-run noise of sd ``sigma`` on the log scale, the
model the gate assumes), and computes :func:`pytest_mlload.stats.run_spread` of the baseline
as the gate does. Printed per ``sigma`` and ``k``:

* the runs' own robust scatter ``s_hat`` over the true ``sigma`` (mean and median): what "the
  spread reads low from few runs" amounts to;
* the spread the gate uses (``s_hat`` pooled with the 3 % prior) over the true ``sigma``;
* how often the unchanged run falls below the centre by more than the 99 % half-width
  ``2.576 s sqrt(1 + 1/k)`` (one side: a "fell" past the smallest decidable threshold), with
  ``s`` the true ``sigma`` and with the gate's pooled spread. Within-window noise is left
  out, so this is the history's own part of the false-regression rate.

Seeded; pure CPU (a few seconds).

    python bench/bench_spread.py
    python bench/bench_spread.py --trials 20000
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from pytest_mlload import stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000, help="histories per cell")
    args = parser.parse_args()
    print(f"# bench_spread: run_spread on k lognormal runs, {args.trials} histories per cell\n")
    print(
        "| sigma | k | s_hat / sigma mean | s_hat / sigma median | gate s / sigma mean "
        "| new run past -half-width, true sigma | same, gate's s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for sigma in (0.02, 0.03, 0.05):
        for k in (2, 3, 5, 10):
            rng = np.random.default_rng(20261207 + k + int(sigma * 1000))
            draws = np.exp(sigma * rng.standard_normal((args.trials, k + 1)))
            robust = np.empty(args.trials)
            pooled = np.empty(args.trials)
            past_true = past_gate = 0
            factor = stats.Z99 * math.sqrt(1.0 + 1.0 / k)
            for i, row in enumerate(draws):
                spread = stats.run_spread(row[:k])
                robust[i], pooled[i] = spread.robust, spread.spread
                change = math.log(row[k] / spread.center)
                past_true += change < -factor * sigma
                past_gate += change < -factor * spread.spread
            print(
                f"| {sigma:.0%} | {k} | {robust.mean() / sigma:.3f} "
                f"| {np.median(robust) / sigma:.3f} | {pooled.mean() / sigma:.3f} "
                f"| {past_true / args.trials:.2%} | {past_gate / args.trials:.2%} |"
            )
    print(
        "\nnominal: 0.50 % one-sided with the true sigma and the mean as centre; the median "
        "centre of few runs is noisier, so the true-sigma column can read above it"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
