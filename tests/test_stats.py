"""Unit tests of pytest_mlload.stats: seeded, no clock, no sleeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from pytest_mlload import stats
from pytest_mlload.stats import (
    NU0,
    SIGMA0,
    Decision,
    change_interval,
    decide,
    interval_sd,
    min_samples_for_quantile,
    percentiles,
    quantile_ci,
    rate_ci,
    ratio_change,
    run_spread,
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


def _ar1_latencies(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """Lognormal latencies exp(sigma * z) with z a stationary AR(1) of unit variance."""
    from scipy.signal import lfilter

    e = rng.standard_normal(n) * math.sqrt(1.0 - phi * phi)
    z = lfilter([1.0], [1.0, -phi], e) + rng.standard_normal() * phi ** np.arange(1, n + 1)
    return np.exp(sigma * z)


@pytest.mark.parametrize(("phi", "n"), [(0.9, 2000), (0.9, 5000), (0.0, 2000), (0.0, 5000)])
def test_quantile_ci_p99_coverage_on_autocorrelated_latencies(phi: float, n: int) -> None:
    # Queueing latencies come in slow spells: AR(1) with phi 0.9 made the plain order-statistic
    # interval cover the true P99 in ~63 % of windows. The batch-means widening must bring it
    # to >= 0.90, and must not blow up the interval of independent samples (stay < 0.995).
    rng = np.random.default_rng(99 + int(phi * 10) + n)
    truth = math.exp(SIGMA * float(st.norm.ppf(0.99)))  # stationary z ~ N(0, 1)
    sims, hits, iid_hits = 300, 0, 0
    for _ in range(sims):
        x = _ar1_latencies(rng, n, phi, SIGMA)
        ci = quantile_ci(x, 0.99)
        assert ci is not None
        hits += ci[0] <= truth <= ci[1]
        lower, upper = stats._order_statistic_ranks(n, 0.99, 0.95)  # type: ignore[misc]
        xs = np.sort(x)
        iid_hits += xs[lower - 1] <= truth <= xs[upper - 1]
        assert ci[0] <= xs[lower - 1] and xs[upper - 1] <= ci[1]  # never narrower than iid
    cov, iid = hits / sims, iid_hits / sims
    print(f"P99 CI phi={phi} n={n}: coverage {cov:.3f} (iid order statistics {iid:.3f})")
    assert cov >= 0.90
    if phi == 0.0:
        assert cov <= 0.995
    else:
        assert iid < 0.85  # the case is a real test: the old interval fails it


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


@pytest.mark.parametrize("ci", [None, (math.nan, math.nan), (1.0, math.nan)])
def test_change_interval_without_interval_is_nan(ci: tuple[float, float] | None) -> None:
    c = change_interval(90.0, ci, run_spread([100.0, 101.0, 99.0]))
    assert math.isnan(c.low) and math.isnan(c.high) and math.isnan(c.decidable)
    assert c.change == pytest.approx(-0.1)
    d = decide(c.change, c.low, c.high, 0.1, higher_is_better=True, decidable=c.decidable)
    assert d.verdict == "inconclusive" and "too few samples" in d.reason


def test_change_interval_is_the_prediction_interval() -> None:
    base = run_spread([100.0, 104.0, 97.0], within_sds=[0.01, 0.01, 0.01])
    c = change_interval(90.0, (90.0 * math.exp(-1.96 * 0.03), 90.0 * math.exp(1.96 * 0.03)), base)
    # sigma_d**2 = s**2 (1 + 1/k) + (sigma_new**2 - within**2): the new run's excess only
    sd = math.sqrt(base.spread**2 * (1 + 1 / 3) + (0.03**2 - 0.01**2))
    assert c.sd == pytest.approx(sd, rel=1e-3)
    assert c.low == pytest.approx(math.exp(math.log(0.9) - 1.959964 * sd) - 1, rel=1e-4)
    assert c.high == pytest.approx(math.exp(math.log(0.9) + 1.959964 * sd) - 1, rel=1e-4)
    assert c.decidable == pytest.approx(math.exp(2.575829 * sd) - 1, rel=1e-4)
    # a new run no noisier than the baseline's own windows adds nothing
    tight = change_interval(90.0, (89.0, 91.0), base)
    assert tight.sd == pytest.approx(base.spread * math.sqrt(4 / 3))


def test_two_runs_100_and_150_do_not_make_110_a_certain_regression() -> None:
    base = run_spread([100.0, 150.0], within_sds=[0.0035, 0.0035])
    c = change_interval(110.0, (109.0, 111.0), base)
    assert c.low < -0.10 < c.high  # -12 %, but the two runs disagree by 40 %
    d = decide(
        c.change,
        c.low,
        c.high,
        0.10,
        higher_is_better=True,
        decidable=c.decidable,
        spread=base.spread,
        runs=base.runs,
    )
    assert d.verdict == "inconclusive"
    assert "over 2 baseline runs" in d.reason and "smallest it can decide" in d.reason


def test_one_run_baseline_is_undecidable_at_10_percent_and_says_record() -> None:
    base = run_spread([199.7])
    assert base.spread == pytest.approx(SIGMA0)  # the prior alone
    c = change_interval(185.0, (184.0, 186.0), base)
    # the baseline run kept no interval, so the new run's own window sd counts in full
    sd_new = math.log(186.0 / 184.0) / (2 * 1.959964)
    sd = math.sqrt(2 * SIGMA0**2 + sd_new**2)
    assert c.decidable == pytest.approx(math.expm1(2.575829 * sd), rel=1e-4)
    assert 0.11 < c.decidable < 0.12  # one run cannot decide 10 %...
    d = decide(
        c.change,
        c.low,
        c.high,
        0.10,
        higher_is_better=True,
        decidable=c.decidable,
        spread=base.spread,
        runs=base.runs,
    )
    assert d.verdict == "inconclusive"
    assert "3.0 % over 1 baseline run" in d.reason
    assert "record at least one more baseline run" in d.reason
    # ...but an unchanged run still passes (its whole interval is inside) and a big drop fails
    same = change_interval(199.7, (198.0, 201.4), base)
    assert (
        decide(
            same.change, same.low, same.high, 0.1, higher_is_better=True, decidable=same.decidable
        ).verdict
        == "pass"
    )
    drop = change_interval(150.0, (149.0, 151.0), base)
    assert (
        decide(
            drop.change, drop.low, drop.high, 0.1, higher_is_better=True, decidable=drop.decidable
        ).verdict
        == "regression"
    )


# --------------------------------------------------------------------------- decide

T = 0.10


@pytest.mark.parametrize(
    ("low", "high", "higher_is_better", "verdict"),
    [
        # higher is better (capacity): the bad direction is down; no decidable threshold
        # known, so a straddling interval is inconclusive
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


@pytest.mark.parametrize(
    ("change", "low", "high", "higher_is_better", "decidable", "verdict"),
    [
        # straddling the bad side: the point decides when the setup can decide the threshold
        (-0.12, -0.18, -0.06, True, 0.09, "regression"),
        (-0.08, -0.14, -0.02, True, 0.09, "pass"),
        (-0.10, -0.16, -0.04, True, 0.10, "pass"),  # point exactly at -t: not past it
        (-0.12, -0.18, -0.06, True, 0.11, "inconclusive"),  # D > t: cannot decide
        (0.12, 0.06, 0.18, False, 0.09, "regression"),
        (0.08, 0.02, 0.14, False, 0.09, "pass"),
        (0.12, 0.06, 0.18, False, 0.11, "inconclusive"),
        # straddling the good side is never a failure
        (0.12, 0.06, 0.18, True, 0.09, "improvement"),
        (0.12, 0.06, 0.18, True, 0.11, "pass"),
        (-0.12, -0.18, -0.06, False, 0.09, "improvement"),
        # wholly past or inside: D does not matter
        (-0.25, -0.30, -0.20, True, 0.50, "regression"),
        (0.00, -0.05, 0.05, True, 0.50, "pass"),
    ],
)
def test_decide_point_rule_gated_by_the_decidable_threshold(
    change: float, low: float, high: float, higher_is_better: bool, decidable: float, verdict: str
) -> None:
    d = decide(
        change,
        low,
        high,
        T,
        higher_is_better=higher_is_better,
        decidable=decidable,
        spread=0.048,
        runs=5,
    )
    assert d.verdict == verdict
    assert d.decidable == decidable
    if verdict == "inconclusive":
        assert "run-to-run spread of this setup (4.8 % over 5 baseline runs)" in d.reason
        assert f"the smallest it can decide is {decidable * 100:.1f} %" in d.reason
        # appending past the kept history replaces the oldest run: the way out names both
        assert "record more baseline runs (--mlload-update-baseline appends" in d.reason
        assert "keeping the newest --mlload-history runs)" in d.reason


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
    d = decide(change, low, high, T, higher_is_better=higher_is_better, decidable=0.01)
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
    assert d.decidable is None
    with pytest.raises(AttributeError):
        d.verdict = "regression"  # type: ignore[misc]


# --------------------------------------------------------------------------- baseline history


def test_run_spread_ties_cannot_zero_it() -> None:
    # the MAD of [200, 200, 200, 150, 250] is 0; the mean absolute deviation of the logs is not
    b = run_spread([200.0, 200.0, 200.0, 150.0, 250.0])
    logs = np.log([200.0, 200.0, 200.0, 150.0, 250.0])
    s_hat = math.sqrt(math.pi / 2) * float(np.mean(np.abs(logs - math.log(200.0))))
    assert b.center == 200.0 and b.runs == 5
    assert b.robust == pytest.approx(s_hat) and b.robust > 0.1
    assert b.spread == pytest.approx(math.sqrt((NU0 * SIGMA0**2 + 4 * s_hat**2) / (NU0 + 4)))
    equal = run_spread([200.0] * 5)
    assert equal.robust == 0.0
    assert equal.spread == pytest.approx(SIGMA0 * math.sqrt(NU0 / (NU0 + 4)))


def test_run_spread_prior_and_floor() -> None:
    assert run_spread([412.0]).spread == pytest.approx(SIGMA0)  # one run: the prior alone
    # many tight runs: the prior fades; never below the runs' own within-window sd
    tight = run_spread([100.0, 100.5, 99.5] * 10)
    assert tight.spread < 0.01
    floored = run_spread([100.0, 100.5, 99.5] * 10, within_sds=[0.02, 0.03, None])
    assert floored.spread == pytest.approx(0.025) and floored.within == pytest.approx(0.025)
    # order does not matter; the centre is the median
    assert run_spread([103.0, 100.0, 110.0]) == run_spread([100.0, 103.0, 110.0])
    assert run_spread([103.0, 100.0, 110.0]).center == 103.0


def test_run_spread_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        run_spread([])
    with pytest.raises(ValueError, match="positive"):
        run_spread([-1.0, 2.0])


def test_interval_sd() -> None:
    assert interval_sd(100.0, (100 * math.exp(-0.098), 100 * math.exp(0.098))) == pytest.approx(
        0.05, rel=1e-3
    )
    assert interval_sd(100.0, None) is None
    assert interval_sd(100.0, (math.nan, 1.0)) is None
    assert interval_sd(100.0, (0.0, 110.0)) == pytest.approx(math.log(1.1) / 1.959964, rel=1e-4)
