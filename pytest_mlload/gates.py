"""Verdicts: compare a :class:`CapacityResult` with a baseline entry and decide.

Two metrics are gated, each on the figure that carries signal:

* **capacity** (higher is better): successful req/s at the operating point. The observed
  value carries its bootstrap interval; the baseline its own spread over the kept runs.
* **P99 at the baseline's load** (lower is better): P99 measured in a probe window at the
  baseline's user count, against the baseline's P99 at that same count. The P99 *at the
  target* is held there by the controller, so comparing it would only measure control noise.

Each comparison goes through :func:`pytest_mlload.stats.decide`: regression only when the
whole change interval lies past the threshold, pass only when it lies inside, inconclusive
otherwise. Inconclusive, missing baselines and other settings all fail: a gate never passes
silently. These functions raise; they never call pytest.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any

from .baseline import BaselineEntry, fingerprint_differences
from .config import RunSettings
from .errors import (
    GateFailure,
    Inconclusive,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from .results import CapacityResult
from .stats import change_interval, decide, ratio_change, robust_center_and_spread

__all__ = ["Verdict", "check_no_regression", "evaluate"]

UPDATE_HINT = "rerun with --mlload-update-baseline if this change is intended"
# Below this many kept runs the baseline's own spread is unknown, not zero: the observed
# interval is then all the gate uses (two runs give a Student factor of 12.7, i.e. no gate).
MIN_RUNS_FOR_SPREAD = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    """One gated comparison with the numbers behind it."""

    metric: str
    verdict: str  # pass | regression | improvement | inconclusive
    baseline: float | None
    observed: float | None
    change: float | None
    low: float | None
    high: float | None
    threshold: float
    unit: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (nan becomes None)."""
        d = asdict(self)
        for k in ("change", "low", "high"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _spread(values: list[float]) -> tuple[float, float]:
    if len(values) < MIN_RUNS_FOR_SPREAD:
        return float(statistics.median(values)), 0.0
    return robust_center_and_spread(values)


def _compare(
    metric: str,
    label: str,
    unit: str,
    observed: float,
    observed_ci: tuple[float, float] | None,
    base_values: list[float],
    threshold: float,
    *,
    higher_is_better: bool,
    extra: str = "",
) -> Verdict:
    base, spread = _spread(base_values)
    if base <= 0:
        return Verdict(
            metric,
            "inconclusive",
            base,
            observed,
            None,
            None,
            None,
            threshold,
            unit,
            f"{label}: the baseline value is {base:g} {unit}, nothing to compare with",
        )
    change = ratio_change(base, observed)
    low, high = change_interval(observed, observed_ci, base, spread)
    d = decide(change, low, high, threshold, higher_is_better=higher_is_better)
    ci = (
        f"95 % CI {_pct(d.low)}..{_pct(d.high)}"
        if math.isfinite(d.low) and math.isfinite(d.high)
        else "no confidence interval"
    )
    moved = "fell" if change < 0 else "rose"
    head = (
        f"{label} {moved} {abs(change) * 100:.1f} % ({base:.1f} -> {observed:.1f} {unit}"
        f"{extra}, {ci})"
    )
    t = f"{threshold * 100:g} %"
    if d.verdict == "regression":
        msg = f"{head}, past the {t} threshold; {UPDATE_HINT}."
    elif d.verdict == "inconclusive" and not (math.isfinite(d.low) and math.isfinite(d.high)):
        msg = (
            f"{head}: too few samples for a confidence interval, so the run cannot decide; "
            f"lengthen measure_s / probe_s or lower the load's latency."
        )
    elif d.verdict == "inconclusive":
        msg = (
            f"{head}: the interval straddles the {t} threshold, so the run cannot decide; "
            f"rerun, or lengthen measure_s / probe_s for a tighter interval."
        )
    elif d.verdict == "improvement":
        msg = (
            f"{head}: better than the baseline beyond {t}; record it with --mlload-update-baseline."
        )
    else:
        msg = f"{head}: within the {t} threshold."
    return Verdict(metric, d.verdict, base, observed, d.change, d.low, d.high, threshold, unit, msg)


def evaluate(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str,
    record_command: str = "pytest --mlload-update-baseline",
    fingerprint: dict[str, Any] | None = None,
) -> list[Verdict]:
    """All verdicts for ``result`` against ``entry``; raises for what cannot be compared.

    Raises :class:`Inconclusive` (run did not converge / too few samples / errors),
    :class:`MissingBaseline` or :class:`SettingsMismatch`. Returns capacity and P99 verdicts
    (which may themselves be regressions: see :func:`check_no_regression`).
    """
    if not result.converged:
        raise Inconclusive(
            f"{key}: inconclusive, so not a pass: {result.reason}", reason=result.reason
        )
    if result.error_ratio > settings.max_error_ratio:
        raise Inconclusive(
            f"{key}: error ratio {result.error_ratio:.2%} above the "
            f"{settings.max_error_ratio:.2%} cap",
            reason="errors",
        )
    if entry is None:
        raise MissingBaseline(
            f"{key}: no baseline entry in {baseline_path}; a gate never passes without one. "
            f"Record it with: {record_command}"
        )
    wanted = settings.comparable()
    diffs = [
        f"{k}: baseline {entry.settings.get(k)!r}, now {v!r}"
        for k, v in wanted.items()
        if entry.settings.get(k) != v
    ]
    if diffs:
        raise SettingsMismatch(
            f"{key}: the baseline in {baseline_path} was measured with other settings "
            f"({'; '.join(diffs)}), so it is not compared; {UPDATE_HINT} ({record_command})."
        )
    note = ""
    if fingerprint is not None:
        fp = fingerprint_differences(entry.fingerprint, fingerprint)
        if fp:
            note = f" [baseline from another machine: {', '.join(fp)}]"
    t = settings.threshold
    verdicts = [
        _compare(
            "capacity",
            f"capacity of {key}",
            "req/s",
            result.capacity_rps,
            result.capacity_ci,
            [r.capacity_rps for r in entry.runs],
            t,
            higher_is_better=True,
            extra=f" at {result.users} users",
        ),
    ]
    same_load = [r.p99_ms for r in entry.runs if r.users == entry.users and r.p99_ms is not None]
    probe = result.probe
    if not same_load:
        verdicts.append(
            Verdict(
                "p99",
                "inconclusive",
                None,
                None,
                None,
                None,
                None,
                t,
                "ms",
                f"P99 of {key}: the baseline holds no P99 at {entry.users} users",
            )
        )
    elif probe is None or probe.users != entry.users or probe.p99_ms is None:
        verdicts.append(
            Verdict(
                "p99",
                "inconclusive",
                float(statistics.median(same_load)),
                None,
                None,
                None,
                None,
                t,
                "ms",
                f"P99 of {key}: no probe window at the baseline's {entry.users} users "
                f"(run through the mlload fixture, or pass probe_users={entry.users})",
            )
        )
    else:
        verdicts.append(
            _compare(
                "p99",
                f"P99 of {key} at the baseline's {entry.users} users",
                "ms",
                probe.p99_ms,
                probe.p99_ci,
                same_load,
                t,
                higher_is_better=False,
            )
        )
    if note:
        verdicts = [
            Verdict(
                v.metric,
                v.verdict,
                v.baseline,
                v.observed,
                v.change,
                v.low,
                v.high,
                v.threshold,
                v.unit,
                v.message + note,
            )
            for v in verdicts
        ]
    return verdicts


def check_no_regression(verdicts: list[Verdict]) -> None:
    """Raise for the verdicts that fail: regressions first, then inconclusive ones."""
    bad = [v for v in verdicts if v.verdict == "regression"]
    if bad:
        worst = bad[0]
        raise PerformanceRegression(
            "\n".join(v.message for v in bad),
            metric=worst.metric,
            baseline=worst.baseline,
            observed=worst.observed,
            change_ratio=worst.change,
            threshold_ratio=worst.threshold,
        )
    unsure = [v for v in verdicts if v.verdict == "inconclusive"]
    if unsure:
        raise Inconclusive("\n".join(v.message for v in unsure), reason="interval")


def failure_kind(exc: BaseException) -> str:
    """The verdict name of a gate exception (for reports)."""
    return exc.verdict if isinstance(exc, GateFailure) else "error"
