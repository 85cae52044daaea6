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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
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
RECOVERY_STEP_S = 0.25  # the recovery scan's resolution (openloop.recovery_time_s)


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
    part: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (nan becomes None)."""
        d = asdict(self)
        for k in ("change", "low", "high"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d


def _pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def _half_width(value: float, ci: Any) -> float | None:
    """Relative half-width of a stored ``[low, high]`` interval around ``value``, or None."""
    if not ci or len(ci) != 2 or value <= 0:
        return None
    lo, hi = (float(x) for x in ci)
    return (hi - lo) / 2.0 / value if math.isfinite(lo) and math.isfinite(hi) else None


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
    base_cis: Sequence[Any] = (),
) -> Verdict:
    """One gated comparison; ``base_cis`` are the baseline runs' own intervals (or None)."""
    half_widths = [_half_width(v, ci) for v, ci in zip(base_values, base_cis, strict=False)]
    base, spread = robust_center_and_spread(base_values, half_widths=half_widths)
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


def _precheck(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str,
    record_command: str,
) -> BaselineEntry:
    """Raise for what cannot be compared; return the entry otherwise."""
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
    return entry


def _machine_note(entry: BaselineEntry, fingerprint: dict[str, Any] | None) -> str:
    if fingerprint is None:
        return ""
    fp = fingerprint_differences(entry.fingerprint, fingerprint)
    return f" [baseline from another machine: {', '.join(fp)}]" if fp else ""


def _noted(verdicts: list[Verdict], note: str, part: str) -> list[Verdict]:
    return [replace(v, message=v.message + note, part=part) for v in verdicts]


def evaluate(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str,
    record_command: str = "pytest --mlload-update-baseline",
    fingerprint: dict[str, Any] | None = None,
    part: str = "",
) -> list[Verdict]:
    """All verdicts for ``result`` against ``entry``; raises for what cannot be compared.

    Raises :class:`Inconclusive` (run did not converge / too few samples / errors),
    :class:`MissingBaseline` or :class:`SettingsMismatch`. Returns capacity and P99 verdicts
    (which may themselves be regressions: see :func:`check_no_regression`). With
    ``settings.open_loop`` the P99 verdict uses the open-loop confirmation instead.
    """
    entry = _precheck(
        result, entry, settings, key=key, baseline_path=baseline_path, record_command=record_command
    )
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
            base_cis=[r.capacity_ci_rps for r in entry.runs],
        )
    ]
    verdicts.append(
        _open_loop_verdict(result, entry, key, t)
        if settings.open_loop
        else _probe_verdict(result, entry, key, t)
    )
    return _noted(verdicts, _machine_note(entry, fingerprint), part)


def _probe_verdict(result: CapacityResult, entry: BaselineEntry, key: str, t: float) -> Verdict:
    same = [r for r in entry.runs if r.users == entry.users and r.p99_ms is not None]
    same_load = [r.p99_ms for r in same if r.p99_ms is not None]
    probe = result.probe
    if not same_load:
        return Verdict(
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
    if probe is None or probe.users != entry.users or probe.p99_ms is None:
        return Verdict(
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
    return _compare(
        "p99",
        f"P99 of {key} at the baseline's {entry.users} users",
        "ms",
        probe.p99_ms,
        probe.p99_ci,
        same_load,
        t,
        higher_is_better=False,
        base_cis=[r.p99_ci_ms for r in same],
    )


def open_loop_of(run_extra: dict[str, Any]) -> dict[str, Any] | None:
    """The open-loop figures stored with a result or a baseline run, if any."""
    ol = run_extra.get("open_loop")
    return ol if isinstance(ol, dict) and ol.get("p99_ms") is not None else None


def _open_loop_verdict(result: CapacityResult, entry: BaselineEntry, key: str, t: float) -> Verdict:
    base = [ol for r in entry.runs if (ol := open_loop_of(r.extra))]
    now = open_loop_of(result.extra)
    if not base or now is None:
        why = "the baseline has no open-loop P99" if not base else "this run has none"
        return Verdict(
            "p99_open_loop",
            "inconclusive",
            None,
            None,
            None,
            None,
            None,
            t,
            "ms",
            f"open-loop P99 of {key}: {why}; record one with --mlload-update-baseline",
        )
    rate = base[-1]["rate_rps"]
    same = [b for b in base if abs(b["rate_rps"] / rate - 1) < 0.01]
    ci = tuple(now["p99_ci"]) if now.get("p99_ci") else None
    return _compare(
        "p99_open_loop",
        f"open-loop P99 of {key} at {now['rate_rps']:.1f} req/s",
        "ms",
        now["p99_ms"],
        ci,
        [b["p99_ms"] for b in same],
        t,
        higher_is_better=False,
        base_cis=[b.get("p99_ci") for b in same],
    )  # type: ignore[arg-type]


def spike_figures(run_extra: dict[str, Any]) -> dict[str, Any] | None:
    """The spike figures stored with a result or a baseline run, if any."""
    sp = run_extra.get("spike")
    return sp if isinstance(sp, dict) else None


def evaluate_spike(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str,
    record_command: str = "pytest --mlload-update-baseline",
    fingerprint: dict[str, Any] | None = None,
    part: str = "spike",
) -> list[Verdict]:
    """Spike verdicts: P99 and error ratio during the spike, time to recover.

    P99 uses the interval rule; the error ratio regresses when it rose by more than the
    error cap (absolute); recovery regresses when it took longer than the baseline by more
    than the threshold plus one 0.25 s step of the recovery scan, or did not happen at all.
    """
    entry = _precheck(
        result, entry, settings, key=key, baseline_path=baseline_path, record_command=record_command
    )
    t = settings.threshold
    now = spike_figures(result.extra) or {}
    base_runs = [sp for r in entry.runs if (sp := spike_figures(r.extra))]
    if not base_runs or result.p99_ms is None:
        return [
            Verdict(
                "spike",
                "inconclusive",
                None,
                None,
                None,
                None,
                None,
                t,
                "",
                f"spike of {key}: no spike figures to compare",
                part,
            )
        ]
    verdicts = [
        _compare(
            "spike_p99",
            f"P99 during the spike of {key}",
            "ms",
            result.p99_ms,
            result.p99_ci,
            [b["p99_ms"] for b in base_runs],
            t,
            higher_is_better=False,
            base_cis=[b.get("p99_ci") for b in base_runs],
        )
    ]
    base_err = statistics.median(b["error_ratio"] for b in base_runs)
    rise = result.error_ratio - base_err
    err_verdict = "regression" if rise > settings.max_error_ratio else "pass"
    verdicts.append(
        Verdict(
            "spike_errors",
            err_verdict,
            base_err,
            result.error_ratio,
            rise,
            rise,
            rise,
            settings.max_error_ratio,
            "ratio",
            f"error ratio during the spike of {key}: {base_err:.2%} -> {result.error_ratio:.2%} "
            f"({'past' if err_verdict == 'regression' else 'within'} the "
            f"{settings.max_error_ratio:.2%} allowance)"
            + (f"; {UPDATE_HINT}." if err_verdict == "regression" else ""),
        )
    )
    base_rec = [b["recovery_s"] for b in base_runs if b.get("recovery_s") is not None]
    rec = now.get("recovery_s")
    if base_rec:
        b = float(statistics.median(base_rec))
        limit = b * (1 + t) + RECOVERY_STEP_S
        worse = rec is None or rec > limit
        shown = "did not recover" if rec is None else f"{rec:.2f} s"
        verdicts.append(
            Verdict(
                "spike_recovery",
                "regression" if worse else "pass",
                b,
                rec,
                None,
                None,
                None,
                t,
                "s",
                f"recovery after the spike of {key}: {b:.2f} s -> {shown} (limit "
                f"{limit:.2f} s = baseline + {t * 100:g} % + {RECOVERY_STEP_S} s)"
                + (f"; {UPDATE_HINT}." if worse else ""),
            )
        )
    return _noted(verdicts, _machine_note(entry, fingerprint), part)


def rate_limit_verdicts(
    current: dict[str, float], entries: dict[str, BaselineEntry | None], threshold: float
) -> list[Verdict]:
    """Recommended rate limits that moved past ``threshold`` since the baseline."""
    out: list[Verdict] = []
    for part, now in sorted(current.items()):
        entry = entries.get(part)
        base = entry.latest.extra.get("rate_limit_rps") if entry else None
        if not base:
            out.append(
                Verdict(
                    "rate_limit",
                    "inconclusive",
                    None,
                    now,
                    None,
                    None,
                    None,
                    threshold,
                    "req/s",
                    f"rate limit of {part}: no baseline value",
                    part,
                )
            )
            continue
        change = (now - base) / base
        moved = abs(change) > threshold
        out.append(
            Verdict(
                "rate_limit",
                "regression" if moved else "pass",
                base,
                now,
                change,
                change,
                change,
                threshold,
                "req/s",
                f"recommended rate limit of {part} moved {change * 100:+.1f} % ({base:.1f} -> "
                f"{now:.1f} req/s), {'past' if moved else 'within'} the {threshold * 100:g} % "
                f"threshold" + (f"; {UPDATE_HINT}." if moved else ""),
                part,
            )
        )
    return out


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
