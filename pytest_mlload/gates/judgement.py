"""The judge: a run's result, the baseline store and the settings in; a :class:`Judgement` out.

Pytest-free: the plugin calls :func:`judge` and turns a failing judgement into a test failure
(:meth:`Judgement.error`); a script calls the same function and reads the same verdicts.

For every part of the result (``for part, r in result``) the spike gate judges a spike part
and the capacity / P99-at-the-baseline's-load / error-ratio gates every other part
(:mod:`pytest_mlload.gates.metrics`). What cannot be compared (a run that did not converge, no
baseline entry, a baseline measured with other settings) is a verdict as well, with its
message: nothing is reduced to a string, and nothing passes by being skipped. ``checks`` adds
the recommended-rate-limit gate (``"rate_limits"``) and the HPA drift gate (``"hpa"``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from pytest_mlload.baseline import BaselineEntry, environment_fingerprint
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import (
    ConfigError,
    GateFailure,
    Inconclusive,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from pytest_mlload.gates import metrics as gates
from pytest_mlload.gates.metrics import Verdict
from pytest_mlload.results import CapacityResult, part_key, part_name

__all__ = ["CHECKS", "SEVERITY", "Entries", "Judgement", "judge", "worst"]

# Worst first: the outcome of several verdicts is the first kind here that any of them has.
SEVERITY = (
    "regression",
    "inconclusive",
    "settings-mismatch",
    "no-baseline",
    "improvement",
    "pass",
)
CHECKS = ("regression", "rate_limits", "hpa")
_FAILING = frozenset(SEVERITY[:4])


class Entries(Protocol):
    """Where baseline entries come from: a :class:`~pytest_mlload.baseline.BaselineStore`
    (or anything with ``get(key)``)."""

    def get(self, key: str) -> BaselineEntry | None:
        """The entry of ``key``, None when there is none."""
        ...


def worst(kinds: Collection[str], default: str = "pass") -> str:
    """The most severe verdict kind among ``kinds`` (see :data:`SEVERITY`)."""
    return next((k for k in SEVERITY if k in kinds), default)


@dataclass(frozen=True, slots=True, kw_only=True)
class Judgement:
    """Every verdict one test earned, and the outcome they add up to."""

    key: str
    verdicts: tuple[Verdict, ...]

    @property
    def outcome(self) -> str:
        """The worst verdict (``pass`` | ``improvement`` | ``regression`` | ...); a judgement
        without any verdict is ``inconclusive``: nothing was compared."""
        return worst({v.verdict for v in self.verdicts}, default="inconclusive")

    @property
    def failing(self) -> tuple[Verdict, ...]:
        """The verdicts that fail the test."""
        return tuple(v for v in self.verdicts if v.verdict in _FAILING)

    @property
    def passed(self) -> bool:
        """True when the test passes (every verdict a pass or an improvement)."""
        return self.outcome in ("pass", "improvement")

    def error(self) -> GateFailure | None:
        """The exception that fails the test (figures attached), None when it passes.

        Regressions first: one regression makes the whole failure a
        :class:`PerformanceRegression` carrying the first regression's figures.
        """
        if self.passed:
            return None
        outcome = self.outcome
        bad = [v for v in self.failing if v.verdict == outcome] + [
            v for v in self.failing if v.verdict != outcome
        ]
        text = "\n".join(v.message for v in bad)
        exc: GateFailure
        if outcome == "regression":
            first = bad[0]
            exc = PerformanceRegression(
                text,
                metric=first.metric,
                baseline=first.baseline,
                observed=first.observed,
                change_ratio=first.change,
                threshold_ratio=first.threshold,
            )
        elif outcome == "inconclusive":
            exc = Inconclusive(text, reason=bad[0].metric)
        elif outcome == "settings-mismatch":
            exc = SettingsMismatch(text)
        else:
            exc = MissingBaseline(text)
        exc.verdicts = self.failing
        return exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "key": self.key,
            "outcome": self.outcome,
            "verdicts": [v.to_dict() for v in self.verdicts],
        }


def judge(
    result: CapacityResult,
    store: Entries | Mapping[str, BaselineEntry],
    settings: RunSettings,
    *,
    key: str,
    checks: Collection[str] = ("regression",),
    hpa_threshold: float | None = None,
    baseline_path: str = "the baseline file",
    record_command: str = "pytest --mlload-update-baseline",
    fingerprint: dict[str, Any] | None = None,
) -> Judgement:
    """Judge every part of ``result`` against ``store`` (entries keyed ``key[part]``).

    ``checks``: any of ``"regression"`` (capacity, P99 at the baseline's load, errors; spike
    figures for a spike part), ``"rate_limits"`` (a recommended rate limit that fell) and
    ``"hpa"`` (a recommended HPA threshold that drifted past ``hpa_threshold``).
    ``fingerprint`` (default: this machine's) notes a baseline from another machine.
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise ConfigError(f"unknown check(s) {unknown}: choose from {', '.join(CHECKS)}")
    fp = environment_fingerprint() if fingerprint is None else fingerprint
    verdicts: list[Verdict] = []
    parts = [(part_name(key, name), r) for name, r in result]
    if "regression" in checks:
        for part, r in parts:
            pkey = part_key(key, part)
            verdicts += _regression(
                r, store.get(pkey), settings, pkey, part, baseline_path, record_command, fp
            )
    if "rate_limits" in checks:
        current = {part_key(key, p): (p, r) for p, r in parts if r.rate_limit_rps is not None}
        vs = gates.rate_limit_verdicts(
            {k: r for k, (_, r) in current.items()},
            {k: store.get(k) for k in current},
            settings,
        )
        verdicts += [replace(v, part=current[v.part][0]) for v in vs]  # rows are by part
    if "hpa" in checks:
        threshold = _hpa_threshold(hpa_threshold)
        for part, r in parts:
            if r.spike is None:
                entry = store.get(part_key(key, part))
                verdicts.append(_hpa_verdict(r, entry, part, threshold, settings.run_spread_prior))
    return Judgement(key=key, verdicts=tuple(verdicts))


def _regression(
    r: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    key: str,
    part: str,
    baseline_path: str,
    record_command: str,
    fingerprint: dict[str, Any],
) -> list[Verdict]:
    """One part's gates; what cannot be compared becomes one verdict naming why."""
    evaluate = gates.evaluate_spike if r.spike is not None or part == "spike" else gates.evaluate
    try:
        return evaluate(
            r,
            entry,
            settings,
            key=key,
            baseline_path=baseline_path,
            record_command=record_command,
            fingerprint=fingerprint,
            part=part,
        )
    except GateFailure as exc:
        return [verdict_of(exc, part=part, threshold=settings.threshold)]


def verdict_of(exc: GateFailure, *, part: str, threshold: float, metric: str = "") -> Verdict:
    """A gate exception as a verdict, its figures kept where it has them."""
    figures = exc if isinstance(exc, PerformanceRegression) else None
    return Verdict(
        metric=(figures.metric if figures else "") or metric or exc.verdict,
        verdict=exc.verdict,
        baseline=figures.baseline if figures else None,
        observed=figures.observed if figures else None,
        change=figures.change_ratio if figures else None,
        low=None,
        high=None,
        threshold=threshold,
        unit="",
        message=str(exc),
        part=part,
    )


def _hpa_threshold(threshold: float | None) -> float:
    """The HPA drift threshold, the HPA module's default when not given."""
    from pytest_mlload.hpa.recommend import DEFAULT_DRIFT_THRESHOLD

    return DEFAULT_DRIFT_THRESHOLD if threshold is None else threshold


def _hpa_verdict(
    r: CapacityResult, entry: BaselineEntry | None, part: str, threshold: float, prior: float
) -> Verdict:
    """The HPA drift gate of one part against the kept baseline runs with recommendations
    (a run recorded while Prometheus was away keeps none, and must not erase the reference);
    ``prior`` is the assumed run-to-run spread (``RunSettings.run_spread_prior``)."""
    from pytest_mlload.hpa.recommend import assert_hpa_stable

    name = part or "this test"
    try:
        if r.hpa is None:
            raise Inconclusive(
                f"{name}: HPA gate skipped: no HPA report (give --mlload-prometheus-url)",
                reason="no prometheus",
            )
        if not r.hpa.recommended:
            why = "; ".join(r.hpa.warnings) or "no saturated tier"
            raise Inconclusive(
                f"{name}: HPA gate skipped: this run has no recommendation ({why})",
                reason="no hpa data",
            )
        references = [run.extra.hpa for run in entry.runs if run.extra.hpa] if entry else []
        findings = assert_hpa_stable(references, r.hpa, threshold, prior_sd=prior)
    except GateFailure as exc:
        return verdict_of(exc, part=part, threshold=threshold, metric="hpa")
    compared = [f for f in findings if f.status == "ok"]
    worst = max(compared, key=lambda f: abs(f.change_ratio or 0.0))
    return Verdict(
        metric=f"hpa.{worst.key}",
        verdict="pass",
        baseline=worst.baseline,
        observed=worst.now,
        change=worst.change_ratio,
        low=worst.low,
        high=worst.high,
        threshold=threshold,
        unit=worst.unit,
        message=f"{name}: HPA thresholds within {threshold:.0%}; largest move: {worst.describe()}",
        part=part,
        decidable=worst.decidable,
        spread=worst.spread,
    )
