"""Unit tests of pytest_mlload.stats: seeded, no clock, no sleeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_mlload import stats
from pytest_mlload.stats import (
    Decision,
    change_interval,
    decide,
    min_samples_for_quantile,
    percentiles,
    quantile_ci,
    rate_ci,
    ratio_change,
    robust_center_and_spread,
)

# --------------------------------------------------------------------------- percentiles


def test_percentiles_match_numpy_linear() -> None:
    data = np.random.default_rng(7).lognormal(3.0, 0.5, 1001)
    got = percentiles(data)
    assert list(got) == ["p50_ms", "p95_ms", "p99_ms"]
    for q in (50, 95, 99):
        assert got[f"p{q}_ms"] == float(np.percentile(data, q))


def test_percentiles_small_known_values_and_custom_keys() -> None:
    got = percentiles([10, 20, 30, 40], qs=(50, 99.9, 100))
    # linear interpolation: position q/100 * (n-1)
    assert got == {"p50_ms": 25.0, "p99.9_ms": pytest.approx(39.97), "p100_ms": 40.0}
    assert all(type(v) is float for v in got.values())


def test_percentiles_empty_is_none() -> None:
    assert percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    assert percentiles(np.array([]), qs=(90,)) == {"p90_ms": None}


def test_percentiles_reject_nan_and_bad_q() -> None:
    with pytest.raises(ValueError, match="finite"):
        percentiles([1.0, math.nan])
    with pytest.raises(ValueError, match="0..100"):
        percentiles([1.0], qs=(101,))


# --------------------------------------------------------------------------- quantile_ci

SIGMA = 0.35


@pytest.mark.parametrize("q", [0.99, 0.5])
def test_quantile_ci_coverage_is_near_nominal(q: float) -> None:
    rng = np.random.default_rng(20240601 + int(q * 100))
    truth = float(st.lognorm.ppf(q, SIGMA))
    sims = 400
    hits = 0
    for _ in range(sims):
        ci = quantile_ci(rng.lognormal(0.0, SIGMA, 2000), q)
        assert ci is not None
        hits += ci[0] <= truth <= ci[1]
    coverage = hits / sims
    print(f"quantile_ci q={q}: coverage {coverage:.3f} over {sims} data sets (nominal 0.95)")
    assert 0.92 <= coverage <= 0.995


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 0.999])
@pytest.mark.parametrize("n", [6, 10, 59, 120, 299, 300, 400, 1000, 2000, 5000])
def test_quantile_ci_ranks_have_exact_binomial_coverage(q: float, n: int) -> None:
    # P(X_(l) <= Q_q <= X_(u)) = P(l <= K <= u - 1), K ~ Binomial(n, q)
    ranks = stats._order_statistic_ranks(n, q, 0.95)
    if n < min_samples_for_quantile(q):
        assert ranks is None
        return
    assert ranks is not None
    lower, upper = ranks
    assert 1 <= lower < upper <= n
    dist = st.binom(n, q)
    miss_low, miss_high = dist.cdf(lower - 1), dist.sf(upper - 1)
    assert 1.0 - miss_low - miss_high >= 0.95 - 1e-12
    if lower > 1 and upper < n:  # neither side pinned: equal-tailed
        assert miss_low <= 0.025 + 1e-12
        assert miss_high <= 0.025 + 1e-12
        # and tight: one rank closer to the centre would break the tail budget
        assert dist.cdf(lower) > 0.025
        assert dist.sf(upper - 2) > 0.025


def test_quantile_ci_too_small_is_none_and_agrees_with_min_samples() -> None:
    rng = np.random.default_rng(3)
    for q, conf in [(0.99, 0.95), (0.5, 0.95), (0.95, 0.9), (0.999, 0.95), (0.01, 0.99)]:
        n_min = min_samples_for_quantile(q, conf)
        assert quantile_ci(rng.random(n_min - 1), q, conf) is None
        assert quantile_ci(rng.random(n_min), q, conf) is not None
        # closed form: the smallest n whose [min, max] covers with probability >= conf
        coverage = lambda n, q=q: 1.0 - q**n - (1.0 - q) ** n  # noqa: E731
        assert coverage(n_min) >= conf > coverage(n_min - 1)
    assert min_samples_for_quantile(0.99) == 299
    assert min_samples_for_quantile(0.5) == 6
    assert quantile_ci([], 0.5) is None


def test_quantile_ci_returns_samples_bracketing_the_point_estimate() -> None:
    data = np.random.default_rng(11).lognormal(0.0, SIGMA, 3000)
    for q in (0.5, 0.95, 0.99):
        ci = quantile_ci(data, q)
        assert ci is not None
        lo, hi = ci
        assert lo in data and hi in data
        assert lo <= float(np.quantile(data, q)) <= hi
    wider = quantile_ci(data, 0.99, 0.999)
    narrow = quantile_ci(data, 0.99, 0.95)
    assert wider is not None and narrow is not None
    assert wider[0] <= narrow[0] and narrow[1] <= wider[1]


def test_quantile_ci_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="q must"):
        quantile_ci([1.0, 2.0], 1.0)
    with pytest.raises(ValueError, match="confidence must"):
        quantile_ci([1.0, 2.0], 0.5, confidence=95)


# --------------------------------------------------------------------------- rate_ci


def _poisson_times(rng: np.random.Generator, rate_rps: float, duration_s: float) -> np.ndarray:
    n = rng.poisson(rate_rps * duration_s)
    return np.sort(rng.uniform(0.0, duration_s, n))


def test_rate_ci_coverage_on_poisson_stream() -> None:
    rng = np.random.default_rng(42)
    truth, duration_s, sims = 180.0, 4.0, 300
    hits = 0
    for _ in range(sims):
        times = _poisson_times(rng, truth, duration_s)
        rate, lo, hi = rate_ci(times, 0.0, duration_s, rng=rng)
        assert rate == times.size / duration_s
        assert lo <= rate <= hi
        hits += lo <= truth <= hi
    coverage = hits / sims
    print(f"rate_ci: coverage {coverage:.3f} over {sims} Poisson streams (nominal 0.95)")
    assert 0.85 <= coverage <= 0.995


def test_rate_ci_point_rate_counts_half_open_window() -> None:
    times = [0.5, 1.0, 1.2, 2.9, 3.0, 3.5]  # 1.0 is inside [1, 3), 3.0 is not
    rate, lo, hi = rate_ci(times, 1.0, 3.0)
    assert rate == 3 / 2.0
    assert lo <= rate <= hi


def test_rate_ci_too_few_bins_is_nan() -> None:
    rate, lo, hi = rate_ci([0.1, 0.2, 0.6], 0.0, 0.75)  # 3 bins of 0.25 s
    assert rate == pytest.approx(4.0)
    assert math.isnan(lo) and math.isnan(hi)


def test_rate_ci_is_reproducible_by_default_and_varies_with_seed() -> None:
    times = _poisson_times(np.random.default_rng(5), 100.0, 5.0)
    assert rate_ci(times, 0.0, 5.0) == rate_ci(times, 0.0, 5.0)
    assert rate_ci(times, 0.0, 5.0) == rate_ci(times, 0.0, 5.0, rng=0)
    assert rate_ci(times, 0.0, 5.0, rng=1) != rate_ci(times, 0.0, 5.0, rng=0)


def test_rate_ci_blocks_keep_serial_dependence() -> None:
    # Same per-bin counts, once in long bursts (runs of 8 bins) and once shuffled: only a
    # block bootstrap sees that the bursty stream's mean is less certain.
    bins = 64
    counts = np.repeat(np.tile([20, 60], bins // 16), 8)
    shuffled = np.random.default_rng(9).permutation(counts)

    def times_for(per_bin: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [i * 0.25 + (np.arange(c) + 0.5) * 0.25 / c for i, c in enumerate(per_bin)]
        )

    rate_b, lo_b, hi_b = rate_ci(times_for(counts), 0.0, bins * 0.25)
    rate_s, lo_s, hi_s = rate_ci(times_for(shuffled), 0.0, bins * 0.25)
    assert rate_b == rate_s == counts.sum() / (bins * 0.25)
    assert hi_b - lo_b > 1.5 * (hi_s - lo_s)


def test_rate_ci_rejects_bad_window() -> None:
    with pytest.raises(ValueError, match="start_s < end_s"):
        rate_ci([1.0], 2.0, 2.0)
    with pytest.raises(ValueError, match="bin_s"):
        rate_ci([1.0], 0.0, 2.0, bin_s=0.0)


# --------------------------------------------------------------------------- comparisons


def test_ratio_change() -> None:
    assert ratio_change(400.0, 328.0) == pytest.approx(-0.18)
    assert ratio_change(100.0, 120.0) == pytest.approx(0.20)
    with pytest.raises(ValueError, match="positive"):
        ratio_change(0.0, 1.0)


def test_change_interval_single_baseline_run() -> None:
    low, high = change_interval(90.0, (85.0, 95.0), 100.0)
    assert (low, high) == pytest.approx((-0.15, -0.05))


def test_change_interval_folds_in_baseline_spread() -> None:
    low, high = change_interval(90.0, (85.0, 95.0), 100.0, baseline_spread_ratio=0.05)
    # each side: the observed and the baseline log half-widths in quadrature
    down = math.hypot(math.log(90.0 / 85.0), math.log(1.05))
    up = math.hypot(math.log(95.0 / 90.0), -math.log(0.95))
    assert low == pytest.approx(0.9 * math.exp(-down) - 1.0)
    assert high == pytest.approx(0.9 * math.exp(up) - 1.0)
    # wider than either part alone, narrower than the worst case of both ends at once
    assert 85.0 / 105.0 - 1.0 < low < 85.0 / 100.0 - 1.0
    assert 95.0 / 100.0 - 1.0 < high < 95.0 / 95.0 - 1.0
    wider = change_interval(90.0, (85.0, 95.0), 100.0, baseline_spread_ratio=0.10)
    assert wider[0] < low and wider[1] > high
    assert change_interval(90.0, (85.0, 95.0), 100.0, 1.0)[1] == math.inf


@pytest.mark.parametrize(
    ("runs", "n_obs", "n_base"), [(5, 500, 800), (5, 1500, 1000), (2, 1000, 1000), (1, 1000, 1000)]
)
def test_change_interval_coverage_against_a_baseline_history(
    runs: int, n_obs: int, n_base: int
) -> None:
    # The gate's whole chain on a known distribution, with no change: the baseline runs' P99s
    # and their own order-statistic intervals (median and spread) against one new run's P99
    # and its interval. The change interval must hold 0 at about the nominal 95 %, also for
    # a history of one or two runs, which has no scatter to speak of.
    rng = np.random.default_rng(5 + runs)
    sims, hits = 1000, 0
    for _ in range(sims):
        history, widths = [], []
        for _ in range(runs):
            x = rng.lognormal(0.0, 0.5, n_base)
            p99 = float(np.percentile(x, 99))
            lo, hi = quantile_ci(x, 0.99)  # type: ignore[misc]
            history.append(p99)
            widths.append((hi - lo) / 2 / p99)
        base, spread = robust_center_and_spread(history, half_widths=widths)
        new = rng.lognormal(0.0, 0.5, n_obs)
        low, high = change_interval(
            float(np.percentile(new, 99)), quantile_ci(new, 0.99), base, spread
        )
        hits += low <= 0.0 <= high
    coverage = hits / sims
    print(f"change_interval, {runs} runs, n={n_obs}/{n_base}: coverage {coverage:.3f} (0.95)")
    assert 0.92 <= coverage <= 0.99


def test_change_interval_contains_point_change() -> None:
    # a bootstrap interval need not contain its point estimate; the change interval must
    low, high = change_interval(100.0, (101.0, 104.0), 100.0)
    assert low == 0.0 and high == pytest.approx(0.04)


@pytest.mark.parametrize("ci", [None, (math.nan, math.nan), (1.0, math.nan)])
def test_change_interval_without_interval_is_nan(ci: tuple[float, float] | None) -> None:
    low, high = change_interval(90.0, ci, 100.0)
    assert math.isnan(low) and math.isnan(high)
    assert decide(ratio_change(100.0, 90.0), low, high, 0.1, higher_is_better=True).verdict == (
        "inconclusive"
    )


# --------------------------------------------------------------------------- decide

T = 0.10


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "verdict"),
    [
        # higher is better (capacity): the bad direction is down
        (-0.30, -0.15, True, "regression"),
        (-0.30, -0.10000001, True, "regression"),
        (-0.30, -0.10, True, "inconclusive"),  # high exactly at -t: not past it
        (-0.15, 0.02, True, "inconclusive"),
        (-0.10, 0.05, True, "pass"),  # low exactly at -t: on the good side
        (-0.05, 0.05, True, "pass"),
        (0.10, 0.30, True, "pass"),  # low exactly at +t: not an improvement yet
        (0.11, 0.30, True, "improvement"),
        (-0.30, 0.30, True, "inconclusive"),
        # lower is better (P99): the bad direction is up
        (0.15, 0.30, False, "regression"),
        (0.10000001, 0.30, False, "regression"),
        (0.10, 0.30, False, "inconclusive"),  # low exactly at +t: not past it
        (-0.02, 0.15, False, "inconclusive"),
        (-0.05, 0.10, False, "pass"),  # high exactly at +t: on the good side
        (-0.05, 0.05, False, "pass"),
        (-0.30, -0.10, False, "pass"),  # high exactly at -t: not an improvement yet
        (-0.30, -0.11, False, "improvement"),
        (-0.30, 0.30, False, "inconclusive"),
    ],
)
def test_decide_branches_and_boundaries(
    low: float, high: float, higher_is_better: bool, verdict: str
) -> None:
    change = (low + high) / 2
    d = decide(change, low, high, T, higher_is_better=higher_is_better)
    assert d.verdict == verdict
    assert (d.change, d.low, d.high) == (change, low, high)
    assert f"{low * 100:+.1f} %" in d.reason and f"{high * 100:+.1f} %" in d.reason
    assert "10.0 %" in d.reason


def test_decide_reasons_read_as_sentences() -> None:
    d = decide(-0.182, -0.21, -0.15, 0.10, higher_is_better=True)
    assert d.reason == (
        "change -18.2 % (interval -21.0 % .. -15.0 %) lies entirely below the -10.0 % threshold"
    )
    d = decide(0.05, -0.02, 0.12, 0.10, higher_is_better=False)
    assert d.verdict == "inconclusive"
    assert "straddles the +10.0 % threshold" in d.reason


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize(
    ("change", "low", "high"),
    [(-0.5, math.nan, math.nan), (0.5, -0.1, math.nan), (math.nan, math.nan, math.nan)],
)
def test_decide_nan_is_inconclusive(
    change: float, low: float, high: float, higher_is_better: bool
) -> None:
    d = decide(change, low, high, T, higher_is_better=higher_is_better)
    assert d.verdict == "inconclusive"
    assert d.reason.startswith("no confidence interval: too few samples")
    assert "nan" not in d.reason


def test_decide_infinite_bound_and_bad_threshold() -> None:
    d = decide(-0.2, -0.3, math.inf, T, higher_is_better=False)
    assert d.verdict == "inconclusive"
    assert decide(-0.2, -0.3, math.inf, T, higher_is_better=True).verdict == "inconclusive"
    with pytest.raises(ValueError, match="threshold"):
        decide(0.0, 0.0, 0.0, -0.1, higher_is_better=True)


def test_decision_is_frozen() -> None:
    d = Decision("pass", 0.0, -0.01, 0.01, "fine")
    with pytest.raises(AttributeError):
        d.verdict = "regression"  # type: ignore[misc]


# --------------------------------------------------------------------------- baseline history


def test_robust_center_and_spread_below_three_runs_has_no_spread() -> None:
    assert robust_center_and_spread([412.0]) == (412.0, 0.0)
    assert robust_center_and_spread([100.0, 104.0]) == (102.0, 0.0)


def test_robust_center_and_spread_five_values() -> None:
    values = [103.0, 100.0, 110.0, 101.0, 102.0]
    center, spread = robust_center_and_spread(values)
    assert center == 102.0
    mad = 1.0  # |deviations| 1, 2, 8, 1, 0
    expected = 1.959964 * math.sqrt(math.pi / 2) * 1.4826 * mad / math.sqrt(5) / 102.0
    assert spread == pytest.approx(expected, rel=1e-5)
    # order does not matter; the wild run at 110 moves neither centre nor spread much
    assert robust_center_and_spread(sorted(values)) == (center, spread)
    assert robust_center_and_spread([103.0, 100.0, 101.0, 101.0, 102.0])[1] == pytest.approx(
        spread, rel=0.02
    )


def test_robust_center_and_spread_of_a_short_history_is_its_windows_error() -> None:
    # one run: as uncertain as its own window (not exact); two runs: their mean's error
    assert robust_center_and_spread([100.0], half_widths=[0.04]) == (100.0, 0.04)
    assert robust_center_and_spread([100.0, 102.0], half_widths=[0.04, None])[1] == 0.04
    _, two = robust_center_and_spread([100.0, 102.0], half_widths=[0.04, 0.04])
    assert two == pytest.approx(0.04 / math.sqrt(2))
    # from three runs on the scatter is the spread: the windows are already in it
    scattered = [100.0, 104.0, 96.0, 103.0, 97.0]
    assert robust_center_and_spread(scattered, half_widths=[0.5] * 5) == (
        robust_center_and_spread(scattered)
    )
    assert robust_center_and_spread([100.0], half_widths=[math.nan]) == (100.0, 0.0)


def test_robust_center_and_spread_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        robust_center_and_spread([])
    assert robust_center_and_spread([-1.0, -2.0, -3.0]) == (-2.0, 0.0)  # nothing to scale by
