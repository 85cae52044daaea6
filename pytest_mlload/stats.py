"""Pure statistics for capacity and latency gates: quantiles, confidence intervals, verdicts.

Nothing here imports pytest or Locust or reads a clock; every function is deterministic
(bootstraps take a seeded generator), so the gates built on it are testable without sleeping.

Methods, in one place:

* **Percentiles** are numpy's linear interpolation on the raw samples (no histogram buckets).
* **Quantile confidence intervals** are order-statistic intervals (the number of samples below
  the true q-quantile is Binomial(n, q) for iid samples), widened by batch means of
  ``1[x <= q_hat]`` over contiguous batches when the samples (in completion order) are
  autocorrelated, as queueing latencies are.
* **Throughput confidence intervals** are a (circular) moving-block bootstrap over per-bin
  event counts, so short-range dependence between neighbouring bins (bursts, GC pauses) is
  kept, with small-sample widening for short windows.
* **Comparisons** are prediction intervals on the log scale: a baseline of k runs gives a
  centre (median) and a per-run spread (tie-proof robust scatter pooled with a 3 % prior, see
  :func:`run_spread`); :func:`change_interval` puts between-run variance into every change
  interval and names the smallest threshold the setup can decide, and :func:`decide` reads a
  verdict off it (interval past the threshold: regression; inside: pass; straddling: the point
  estimate decides when the setup can decide the threshold, else inconclusive, saying why).

Ratios are fractions (0.10 means 10 %), latencies are in milliseconds, times in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _st

__all__ = [
    "ChangeInterval",
    "Decision",
    "RunSpread",
    "change_interval",
    "decide",
    "interval_sd",
    "min_samples_for_attainment",
    "min_samples_for_quantile",
    "percentiles",
    "quantile_ci",
    "rate_ci",
    "ratio_change",
    "run_spread",
    "signed_pct",
    "undecidable_reason",
    "wilson_interval",
]

VerdictKind = Literal["pass", "regression", "improvement", "inconclusive"]


def _as_samples(values: ArrayLike, name: str) -> np.ndarray:
    """Flatten to a float64 vector and refuse nan/inf (they would poison every quantile)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers; got nan or inf")
    return arr


def _check_fraction(value: float, name: str) -> None:
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


# --------------------------------------------------------------------------------------------
# Percentiles and their order-statistic confidence intervals
# --------------------------------------------------------------------------------------------


def percentiles(
    latencies_ms: ArrayLike, qs: Sequence[float] = (50, 95, 99)
) -> dict[str, float | None]:
    """Latency percentiles of raw samples, keyed ``"p50_ms"``, ``"p95_ms"``, ``"p99.9_ms"``...

    Method: :func:`numpy.percentile` with linear interpolation between order statistics, on the
    raw samples (no bucketing, so no resolution error). Keys are ``f"p{q:g}_ms"``. Every value is
    ``None`` when there are no samples.
    """
    data = _as_samples(latencies_ms, "latencies_ms")
    qs_list = [float(q) for q in qs]
    for q in qs_list:
        if not (0.0 <= q <= 100.0):
            raise ValueError(f"percentile must be within 0..100, got {q!r}")
    keys = [f"p{q:g}_ms" for q in qs_list]
    if data.size == 0:
        return dict.fromkeys(keys)
    values = np.percentile(data, qs_list, method="linear")
    return {k: float(v) for k, v in zip(keys, values, strict=True)}


@lru_cache(maxsize=256)
def _order_statistic_ranks(n: int, q: float, confidence: float) -> tuple[int, int] | None:
    """1-based ranks (l, u) with ``P(X_(l) <= Q_q <= X_(u)) >= confidence``, or None.

    With K ~ Binomial(n, q) the number of samples below the true quantile,
    ``P(X_(l) <= Q_q <= X_(u)) = P(l <= K <= u - 1)``: the interval misses low with probability
    ``P(K <= l - 1)`` and high with probability ``P(K >= u)``. Each tail gets ``alpha / 2``
    (equal-tailed). When one tail cannot be made that small even with the extreme order
    statistic (``(1-q)**n`` for the minimum, ``q**n`` for the maximum), that rank is pinned to
    the extreme and the unused error budget goes to the other tail. None when even
    ``[min, max]`` covers less than ``confidence``: ``1 - q**n - (1-q)**n < confidence``.
    """
    alpha = 1.0 - confidence
    dist = _st.binom(n, q)
    miss_low_at_min = float(dist.cdf(0))  # P(K <= 0) = (1-q)**n: Q_q below the sample minimum
    miss_high_at_max = float(dist.sf(n - 1))  # P(K >= n) = q**n: Q_q above the sample maximum
    if miss_low_at_min + miss_high_at_max > alpha:
        return None

    tail_low = tail_high = alpha / 2.0
    pin_low = miss_low_at_min > tail_low
    pin_high = miss_high_at_max > tail_high
    if pin_high:
        tail_low = alpha - miss_high_at_max
    if pin_low:
        tail_high = alpha - miss_low_at_min

    if pin_low:
        lower = 1
    else:
        # largest k with P(K <= k) <= tail_low; the lower rank is k + 1. k >= 0 is guaranteed
        # because P(K <= 0) <= tail_low here.
        k = int(dist.ppf(tail_low))
        while k > 0 and dist.cdf(k) > tail_low:
            k -= 1
        while k + 1 < n and dist.cdf(k + 1) <= tail_low:
            k += 1
        lower = k + 1

    if pin_high:
        upper = n
    else:
        # smallest u with P(K >= u) = sf(u - 1) <= tail_high; u <= n is guaranteed because
        # P(K >= n) <= tail_high here.
        m = int(dist.isf(tail_high))
        m = min(max(m, 0), n - 1)
        while m > 0 and dist.sf(m - 1) <= tail_high:
            m -= 1
        while m < n - 1 and dist.sf(m) > tail_high:
            m += 1
        upper = m + 1
    return lower, upper


# Batch means for dependent latencies: ~20 contiguous batches give a variance estimate with 19
# degrees of freedom (Student t_19 = 2.09), while each batch is long enough (>= 100 samples
# at n >= 2000) to hold the short bursts of a queue. Fewer batches widen t; more make them too
# short to absorb the dependence.
QUANTILE_BATCHES = 20


def _batch_ranks(data: np.ndarray, q: float, confidence: float) -> tuple[float, float] | None:
    """Real-valued ranks ``n*q -+ t_{b-1} * sd * n`` from batch means of ``1[x <= q_hat]``.

    ``sd`` is the standard error of the fraction of samples below the sample quantile,
    estimated from the scatter of that fraction over contiguous batches (the batch-means
    estimator of a time-average's variance, which holds for dependent series whose
    dependence is shorter than a batch). None when there are too few samples to batch.
    """
    n = int(data.size)
    b = min(QUANTILE_BATCHES, n // 10)
    if b < 4:
        return None
    q_hat = float(np.quantile(data, q))
    below = (data <= q_hat).astype(np.float64)
    size = n // b
    # the first n - b*size samples are dropped from the batches only (the oldest ones; they
    # still count in the ranks)
    means = below[n - b * size :].reshape(b, size).mean(axis=1)
    sd = float(np.std(means, ddof=1)) / math.sqrt(b)
    t = float(_st.t.ppf(0.5 + confidence / 2.0, b - 1))
    return n * q - t * sd * n, n * q + t * sd * n


def quantile_ci(
    samples: ArrayLike, q: float, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Confidence interval for the ``q``-quantile (``0 < q < 1``), dependence-aware.

    Method, in two parts; the interval returned is the wider of the two on each side:

    1. **Order statistics (iid).** The count of samples below the true quantile is
       Binomial(n, q), so ``[X_(l), X_(u)]`` covers it with probability
       ``P(l <= K <= u-1) >= confidence`` for any continuous distribution. The ranks are
       equal-tailed; when one side would need a rank beyond the sample, that side uses the
       extreme sample and the other side takes the remaining error budget.
    2. **Batch means (dependent samples).** Queueing latencies are autocorrelated: a slow
       spell makes a run of slow requests, so the count below the quantile varies far more
       than Binomial and the iid interval is too narrow (AR(1) latencies with phi 0.9: 63 %
       coverage for a nominal 95 %). ``samples`` are therefore read *in the order given*
       (completion order), cut into ~20 contiguous batches, and the fraction of each batch at
       or below the sample quantile gives the standard error ``sd`` of that fraction. The
       ranks ``n*q -+ t_{b-1} * sd * n`` (rounded outwards) pick the order statistics.

    Taking the wider side means the interval is never narrower than the iid one, so on
    independent samples it keeps at least the nominal coverage (0.96-0.98 in
    ``bench/bench_p99_coverage.py``, from the noise of the batch estimate), and on AR(1)
    latencies with phi 0.9 it covers the true P99 in >= 90 % of windows. A batch rank beyond the
    sample is clipped to the extreme sample: with dependence far longer than a batch
    (phi 0.98 at n = 2000, ~50 independent samples) the interval is then still too narrow,
    as the bench shows (0.48-0.90 at n = 1000-5000).

    Returns None when ``n`` is too small for the iid rule: even ``[min, max]`` covers the
    quantile with probability ``1 - q**n - (1-q)**n`` < ``confidence`` (for the P99 at 95 %,
    ``n < 299``; see :func:`min_samples_for_quantile`, which stays the exact threshold).
    """
    _check_fraction(q, "q")
    _check_fraction(confidence, "confidence")
    data = _as_samples(samples, "samples")
    n = int(data.size)
    if n == 0:
        return None
    ranks = _order_statistic_ranks(n, float(q), float(confidence))
    if ranks is None:
        return None
    lower, upper = ranks
    batch = _batch_ranks(data, float(q), float(confidence))
    if batch is not None:
        # K samples below the true quantile: [X_(l), X_(u)] covers it iff l <= K <= u - 1, so
        # l = floor(low), u = ceil(high) + 1 (rounded outwards), clipped to the sample
        lower = min(lower, max(1, math.floor(batch[0])))
        upper = max(upper, min(n, math.ceil(batch[1]) + 1))
    # partition is O(n): only two order statistics are needed, not a full sort
    part = np.partition(data, (lower - 1, upper - 1))
    return float(part[lower - 1]), float(part[upper - 1])


def min_samples_for_quantile(q: float, confidence: float = 0.95) -> int:
    """Smallest sample count for which :func:`quantile_ci` returns an interval.

    It is the smallest n with ``1 - q**n - (1-q)**n >= confidence`` (the coverage of
    ``[min, max]``), found by the same rank rule :func:`quantile_ci` uses so the two always
    agree. Examples at 95 %: median 6, P95 59, P99 299, P99.9 2995.
    """
    _check_fraction(q, "q")
    _check_fraction(confidence, "confidence")
    q, confidence = float(q), float(confidence)
    alpha = 1.0 - confidence
    # max(q, 1-q)**n <= alpha is necessary, so this is a lower bound on the answer
    n = max(1, math.floor(math.log(alpha) / math.log(max(q, 1.0 - q))))
    while n > 1 and _order_statistic_ranks(n - 1, q, confidence) is not None:
        n -= 1  # guards against rounding in the closed-form start
    while _order_statistic_ranks(n, q, confidence) is None:
        n += 1
    return n


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2.0))


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (sound at 0 and at ``n``, unlike the
    Wald one); ``(0, 1)`` for ``n = 0``. Used for error ratios and for SLO attainment."""
    _check_fraction(confidence, "confidence")
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = k / n
    denom = 1.0 + z * z / n
    mid = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, mid - half), min(1.0, mid + half)


def min_samples_for_attainment(target: float, confidence: float = 0.95) -> int:
    """Fewest requests for which an attainment ``>= target`` can be shown at all.

    With every request conforming the Wilson lower bound is ``n / (n + z**2)``, which reaches
    ``target`` at ``n = z**2 * target / (1 - target)``: 73 requests for 0.95, 381 for 0.99
    at 95 % confidence. A window with fewer cannot decide that a level meets its SLOs.
    """
    _check_fraction(target, "target")
    z = _z(confidence)
    return max(1, math.ceil(z * z * target / (1.0 - target) - 1e-9))


# --------------------------------------------------------------------------------------------
# Throughput and its block-bootstrap interval
# --------------------------------------------------------------------------------------------


def rate_ci(
    event_times_s: ArrayLike,
    start_s: float,
    end_s: float,
    confidence: float = 0.95,
    *,
    bin_s: float = 0.25,
    rng: np.random.Generator | int | None = None,
    n_boot: int = 2000,
) -> tuple[float, float, float]:
    """Events per second inside ``[start_s, end_s)`` and a bootstrap interval: ``(rate, lo, hi)``.

    The rate is ``count / (end_s - start_s)``. For the interval the window is cut into
    ``round(duration / bin_s)`` equal bins (width adjusted so the bins tile the window exactly),
    events are counted per bin, and the per-bin counts are resampled with a **moving-block
    bootstrap**: overlapping blocks of ``round(sqrt(n_bins))`` consecutive bins are drawn with
    replacement and concatenated to the original length, which keeps the short-range dependence
    between neighbouring bins that an iid bootstrap would destroy. Blocks wrap around the end
    of the window (circular block bootstrap) so edge bins are not under-drawn. The spread of the
    resampled rates around the point rate is widened for short windows (block-variance bias
    ``n_bins / (n_bins - block)`` and a Student factor with ``1.5 * n_bins / block`` degrees of
    freedom); the interval is the percentile interval of the widened resampled rates. ``rng``
    defaults to ``default_rng(0)`` so the result is reproducible; pass a Generator or a seed.

    With fewer than 4 bins there is nothing to resample: returns ``(rate, nan, nan)``.
    """
    _check_fraction(confidence, "confidence")
    _check_rate_window(start_s, end_s, bin_s, n_boot)
    times = _as_samples(event_times_s, "event_times_s")
    times = times[(times >= start_s) & (times < end_s)]
    duration_s = end_s - start_s
    rate = float(times.size) / duration_s

    n_bins = max(1, round(duration_s / bin_s))
    if n_bins < 4:
        return rate, math.nan, math.nan
    width_s = duration_s / n_bins
    idx = np.minimum(((times - start_s) / width_s).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    block = max(1, round(math.sqrt(n_bins)))
    boot_rates = _circular_block_rates(counts, block, width_s, rng, n_boot)
    lo, hi = _widened_interval(rate, boot_rates, n_bins, block, confidence)
    return rate, lo, hi


def _check_rate_window(start_s: float, end_s: float, bin_s: float, n_boot: int) -> None:
    """:func:`rate_ci`'s argument checks: a finite, non-empty window, bins and resamples."""
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s:
        raise ValueError(f"need start_s < end_s (finite), got [{start_s!r}, {end_s!r})")
    if not (bin_s > 0 and math.isfinite(bin_s)):
        raise ValueError(f"bin_s must be a positive number of seconds, got {bin_s!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")


def _circular_block_rates(
    counts: np.ndarray,
    block: int,
    width_s: float,
    rng: np.random.Generator | int | None,
    n_boot: int,
) -> np.ndarray:
    """``n_boot`` rates resampled from per-bin ``counts`` with circular blocks of ``block`` bins."""
    n_bins = counts.size
    gen = np.random.default_rng(0 if rng is None else rng)
    n_blocks = -(-n_bins // block)  # ceil
    # Circular blocks (Politis & Romano): a block may wrap from the last bin to the first, so
    # every bin is drawn equally often. Plain moving blocks under-draw the edge bins, which
    # biases the resampled mean and shrinks its spread; with 16 bins that cost ~12 points of
    # coverage in simulation (~82 % for a nominal 95 %).
    starts = gen.integers(0, n_bins, size=(n_boot, n_blocks))
    take = (starts[:, :, None] + np.arange(block)).reshape(n_boot, n_blocks * block)[:, :n_bins]
    take %= n_bins
    rates: np.ndarray = counts[take].mean(axis=1) / width_s
    return rates


def _widened_interval(
    rate: float, boot_rates: np.ndarray, n_bins: int, block: int, confidence: float
) -> tuple[float, float]:
    """The percentile interval of ``boot_rates`` after widening their spread for short windows."""
    # Two small-sample corrections, so that a 4 s window is not overconfident:
    # 1. resampled block means scatter around the sample mean with variance shrunk by
    #    (n_bins - block) / n_bins (each block is centred on a mean it helped form: the block
    #    analogue of the n - 1 in a sample variance);
    # 2. that variance is itself estimated from few blocks, with about 1.5 * n_bins / block
    #    degrees of freedom (Bartlett-window estimator), so widen by the Student/normal ratio.
    # Simulated coverage of the nominal 95 % for a 180/s Poisson stream: 4 s 82 % plain MBB,
    # 90 % after (1), 94 % after (2); 30 s 96 %.
    alpha = 1.0 - confidence
    dof = 1.5 * n_bins / block
    widen = math.sqrt(n_bins / (n_bins - block)) * float(
        _st.t.ppf(1.0 - alpha / 2.0, dof) / _st.norm.ppf(1.0 - alpha / 2.0)
    )
    boot_rates = rate + (boot_rates - rate) * widen
    lo, hi = np.quantile(boot_rates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# Comparison against a baseline
# --------------------------------------------------------------------------------------------


def _check_baseline(baseline: float) -> None:
    if not (math.isfinite(baseline) and baseline > 0):
        raise ValueError(f"baseline must be a positive finite number, got {baseline!r}")


def ratio_change(baseline: float, observed: float) -> float:
    """Relative change ``(observed - baseline) / baseline``: -0.18 means 18 % lower."""
    _check_baseline(baseline)
    return (observed - baseline) / baseline


# Between-run variance: the prior. CI runners differ by ~3 % (sd of log capacity / P99) from
# one job to the next even for an unchanged build; a history of one or two runs cannot show
# that, so it is assumed, weighing as much as the scatter of three runs (two degrees of
# freedom).
SIGMA0 = 0.03
NU0 = 2.0
# Two-sided normal quantiles: the 95 % change interval and the 99 % "decidable" half-width.
Z95 = float(_st.norm.ppf(0.975))
Z99 = float(_st.norm.ppf(0.995))
# E|X - median| = sigma * sqrt(2 / pi) for normal X: the inverse turns a mean absolute
# deviation into a standard deviation.
MEAN_ABS_DEV_TO_SD = math.sqrt(math.pi / 2.0)


def interval_sd(value: float, ci: Sequence[float] | None, confidence: float = 0.95) -> float | None:
    """Standard deviation on the log scale implied by a ``confidence`` interval around ``value``.

    ``log(hi / lo) / (2 z)``: a run's own within-window uncertainty, relative (0.02 = 2 %).
    None when there is no interval, a bound is not finite, or a bound is not positive (no log).
    When only the lower bound is non-positive, the upper side alone gives it:
    ``log(hi / value) / z``.
    """
    if ci is None or len(ci) != 2 or not (math.isfinite(value) and value > 0):
        return None
    lo, hi = sorted(float(b) for b in ci)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= 0:
        return None
    z = float(_st.norm.ppf(0.5 + confidence / 2.0))
    if lo <= 0:
        return max(math.log(hi / value), 0.0) / z
    return math.log(hi / lo) / (2.0 * z)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpread:
    """What a short history of baseline runs says about one metric, on the log scale.

    ``center`` is the median of the runs; ``spread`` the per-run standard deviation ``s`` of
    ``log(value)`` the gate uses (pooled with the prior, never below ``within``); ``robust``
    the runs' own tie-proof scatter ``s_hat`` (0 for one run); ``within`` the median of the
    runs' own within-window sd (0 when they kept no interval); ``runs`` the count ``k``.
    """

    center: float
    spread: float
    robust: float
    within: float
    runs: int

    def smallest_decidable(self) -> float:
        """The smallest threshold a new run, measured as precisely as these runs, can be
        judged at: the 99 % half-width ``exp(2.576 s sqrt(1 + 1/k)) - 1`` of
        :func:`change_interval` when the new run's window adds nothing over theirs.

        What a history can decide at best, known before any run is judged: 11.5 % for one run
        (the 3 % prior), 8.4 % for ten runs whose spread is 3 %.
        """
        return math.expm1(Z99 * self.spread * math.sqrt(1.0 + 1.0 / self.runs))


def run_spread(
    values: Sequence[float],
    *,
    within_sds: Sequence[float | None] = (),
    prior_sd: float = SIGMA0,
    prior_runs: float = NU0,
) -> RunSpread:
    """Centre and run-to-run spread of ``values`` (one metric over the kept baseline runs).

    Method (a prediction model on the log scale, where a 10 % rise and a 10 % fall weigh the
    same and run-to-run noise is multiplicative):

    * centre ``c`` = median of the runs (one lucky run does not move it);
    * ``s_hat`` = ``sqrt(pi/2)`` x the mean absolute deviation of ``log(x_i)`` from their
      median: the sd for normal logs, and unlike the median absolute deviation, ties cannot
      zero it unless every run is equal ([200, 200, 200, 150, 250] gives 0.125, the MAD 0);
    * pooled with the prior: ``s**2 = (NU0 * SIGMA0**2 + (k - 1) * s_hat**2) / (NU0 + k - 1)``,
      ``SIGMA0 = 0.03`` (the 3 % sd CI runners show between jobs), ``NU0 = 2`` (the prior
      weighs as much as three runs' scatter: two degrees of freedom). One run gives
      ``s = 3 %``, and a long history speaks for itself;
    * ``s`` is never below the runs' own within-window sd (``within_sds``, log scale, their
      median): a run cannot repeat more tightly than it measures.
    """
    data = _as_samples(values, "values")
    k = int(data.size)
    if k == 0:
        raise ValueError("need at least one baseline value")
    if np.any(data <= 0):
        raise ValueError(f"baseline values must be positive for a relative change, got {values!r}")
    if not (prior_sd >= 0 and prior_runs >= 0 and prior_runs + k - 1 > 0):
        raise ValueError(f"need prior_sd >= 0 and prior_runs > 0, got {prior_sd!r}, {prior_runs!r}")
    logs = np.log(data)
    robust = MEAN_ABS_DEV_TO_SD * float(np.mean(np.abs(logs - np.median(logs))))
    pooled = math.sqrt((prior_runs * prior_sd**2 + (k - 1) * robust**2) / (prior_runs + k - 1))
    own = [float(w) for w in within_sds if w is not None and math.isfinite(w) and w >= 0]
    within = float(np.median(own)) if own else 0.0
    return RunSpread(
        center=float(np.median(data)),
        spread=max(pooled, within),
        robust=robust,
        within=within,
        runs=k,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeInterval:
    """The relative change of a new run against a baseline history, with its uncertainty.

    ``change`` is the point change against the centre, ``[low, high]`` its 95 % prediction
    interval, ``sd`` the log-scale sd ``sigma_d`` behind it and ``decidable`` the smallest
    threshold this setup can decide (nan when the new run has no interval).
    """

    change: float
    low: float
    high: float
    sd: float
    decidable: float


def change_interval(
    observed: float,
    observed_ci: tuple[float, float] | None,
    base: RunSpread,
) -> ChangeInterval:
    """95 % prediction interval for the relative change of ``observed`` against ``base``.

    Method: a new run of an unchanged system differs from the baseline centre by the
    run-to-run noise of one run (``s``) plus the centre's own error (``s / sqrt(k)``), so on
    the log scale ``sigma_d**2 = s**2 * (1 + 1/k) + max(0, sigma_new**2 - within**2)``: the
    new run's own within-window sd (from ``observed_ci``) adds only its excess over the
    baseline runs' own, which ``s`` already holds. The interval is
    ``exp(log(observed / c) -+ 1.96 sigma_d) - 1``; the smallest decidable threshold is the
    99 % half-width ``exp(2.576 sigma_d) - 1`` (see :func:`decide`).

    With no interval for the new run (None or a nan bound) the result is all nan, which
    :func:`decide` reports as inconclusive ("too few samples"): a point alone never passes.
    An observed value of 0 (nothing got through) has no log; its interval then runs from
    -100 % to its upper bound's change.
    """
    c = base.center
    _check_baseline(c)
    change = ratio_change(c, observed)
    nan = math.nan
    if observed_ci is None or any(math.isnan(b) for b in observed_ci):
        return ChangeInterval(change=change, low=nan, high=nan, sd=nan, decidable=nan)
    k = base.runs
    between = base.spread**2 * (1.0 + 1.0 / k)
    if observed <= 0:
        sd = math.sqrt(between)
        hi = max(observed_ci)
        high = hi / c * math.exp(Z95 * sd) - 1.0 if hi > 0 else -1.0
        return ChangeInterval(
            change=change, low=-1.0, high=max(high, change), sd=sd, decidable=math.expm1(Z99 * sd)
        )
    sd_new = interval_sd(observed, observed_ci) or 0.0
    sd = math.sqrt(between + max(0.0, sd_new**2 - base.within**2))
    centre = math.log(observed / c)
    return ChangeInterval(
        change=change,
        low=math.expm1(centre - Z95 * sd),
        high=math.expm1(centre + Z95 * sd),
        sd=sd,
        decidable=math.expm1(Z99 * sd),
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """A gate verdict with the numbers behind it.

    ``verdict`` is one of ``"pass"``, ``"regression"``, ``"improvement"``, ``"inconclusive"``;
    ``change`` is the point estimate of the relative change, ``[low, high]`` its interval,
    ``reason`` one sentence with the numbers and the threshold, and ``decidable`` the smallest
    threshold the setup can decide (None when not known).
    """

    verdict: VerdictKind
    change: float
    low: float
    high: float
    reason: str
    decidable: float | None = None


def signed_pct(x: float) -> str:
    """A relative change as a signed percentage with one decimal: ``-12.3 %``."""
    return f"{x * 100:+.1f} %"


def undecidable_reason(
    threshold: float, decidable: float, spread: float | None = None, runs: int | None = None
) -> str:
    """Why a straddling interval cannot be decided, with the spread and the way out."""
    t = f"{threshold * 100:g} %"
    d = f"{decidable * 100:.1f} %" if math.isfinite(decidable) else "unbounded"
    who = "the run-to-run spread of this setup"
    if spread is not None and runs is not None:
        plural = "run" if runs == 1 else "runs"
        who += f" ({spread * 100:.1f} % over {runs} baseline {plural})"
    more = (
        "record at least one more baseline run (--mlload-update-baseline appends)"
        if runs == 1
        else (
            "record more baseline runs (--mlload-update-baseline appends, keeping the newest "
            "--mlload-history runs)"
        )
    )
    return (
        f"{who} cannot decide a {t} threshold; the smallest it can decide is {d}: "
        f"raise the threshold, or {more}"
    )


def decide(
    change: float,
    low: float,
    high: float,
    threshold: float,
    *,
    higher_is_better: bool,
    decidable: float | None = None,
    spread: float | None = None,
    runs: int | None = None,
) -> Decision:
    """Read a verdict off a change interval ``[low, high]`` and a relative ``threshold``.

    Method, with ``t = threshold`` and ``D = decidable`` (the 99 % half-width from
    :func:`change_interval`; None means unknown, i.e. never decidable):

    * the interval lies wholly past the bad-side threshold (``high < -t`` when higher is
      better, ``low > t`` when lower is better): **regression**; wholly past the good side:
      **improvement**; on the good side of the bad threshold: **pass** (improvement when it
      straddles the good side, ``smallest <= t`` and the point is past it);
    * it straddles the bad-side threshold: when ``smallest <= t`` the setup can decide it and the
      point estimate does (past ``t`` is a regression, else pass); when ``D > t`` it is
      **inconclusive**, and the reason names the run-to-run spread (``spread`` over ``runs``)
      and ``D``, the smallest threshold this setup can decide.

    Why the point rule: with 3 % noise per run the interval of an unchanged run often pokes
    past a 10 % threshold, so "pass only when wholly inside" fails most clean runs. Gated by
    ``smallest <= t``, the point estimate of an unchanged run crosses ``t`` with probability at most
    ``Phi(-2.576)`` ~ 0.5 %, and a change of twice the threshold stays on the wrong side of it
    with probability below 0.5 %.

    A bound exactly at the threshold counts as not past it. A nan anywhere is inconclusive
    with "no confidence interval: too few samples".
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        raise ValueError(f"threshold must be a non-negative fraction, got {threshold!r}")
    t = threshold
    smallest = math.inf if decidable is None or math.isnan(decidable) else decidable
    if any(math.isnan(v) for v in (change, low, high)):
        point = "" if math.isnan(change) else f"point change {signed_pct(change)}, "
        return Decision(
            "inconclusive",
            change,
            low,
            high,
            f"no confidence interval: too few samples ({point}threshold ±{t * 100:.1f} %)",
            decidable,
        )
    if low > high:
        low, high = high, low
    band = f"change {signed_pct(change)} (interval {signed_pct(low)} .. {signed_pct(high)})"
    # mirror lower-is-better onto higher-is-better: the bad direction is then always down
    lo, hi, pt = (low, high, change) if higher_is_better else (-high, -low, -change)
    verdict, why = _read_interval(
        lo, hi, pt, t, smallest, higher_is_better=higher_is_better, spread=spread, runs=runs
    )
    return Decision(verdict, change, low, high, f"{band} {why}", decidable)


def _read_interval(
    lo: float,
    hi: float,
    pt: float,
    t: float,
    smallest: float,
    *,
    higher_is_better: bool,
    spread: float | None,
    runs: int | None,
) -> tuple[VerdictKind, str]:
    """:func:`decide`'s rule on an interval mirrored so that the bad direction is down.

    Returns the verdict and the clause saying why, worded for the original direction.
    """
    bad, good = (f"-{t * 100:.1f} %", f"+{t * 100:.1f} %")
    if not higher_is_better:
        bad, good = good, bad
    below = "below" if higher_is_better else "above"
    verdict: VerdictKind
    if hi < -t:
        verdict, why = "regression", f"lies entirely {below} the {bad} threshold"
    elif lo > t:
        verdict, why = "improvement", f"lies entirely past {good}"
    elif lo >= -t:
        if hi > t and smallest <= t and pt > t:
            verdict = "improvement"
            why = f"is past {good} (this setup decides from {smallest * 100:.1f} %)"
        else:
            verdict, why = "pass", f"stays within the {bad} threshold"
    elif smallest <= t:
        decided = (
            f"straddles the {bad} threshold; this setup decides from {smallest * 100:.1f} %, "
            "so the point estimate decides"
        )
        verdict = "regression" if pt < -t else "pass"
        why = decided + (": past it" if verdict == "regression" else ": within it")
    else:
        verdict = "inconclusive"
        why = f"straddles the {bad} threshold: " + undecidable_reason(t, smallest, spread, runs)
    return verdict, why
