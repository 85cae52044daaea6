"""Verdicts: compare a :class:`CapacityResult` with a baseline entry and decide.

Three metrics are gated, each on the figure that carries signal:

* **capacity** (higher is better): successful req/s at the operating point;
* **P99 at the baseline's load** (lower is better): P99 measured in a probe window at the
  baseline's user count, against the baseline's P99 at that same count (from runs whose
  operating point was at that count, and from runs that probed it while recording). The P99
  *at the target* is held there by the controller, so comparing it would only measure
  control noise;
* **error ratio** (one-sided: only a rise fails), with a Newcombe interval for the rise.

Capacity and P99 go through one prediction model (:func:`pytest_mlload.stats.change_interval`):
the baseline's kept runs give a centre (median) and a per-run spread on the log scale,
pooled with a 3 % prior so one or two runs are not taken as exact, and every change interval
holds that between-run variance. :func:`pytest_mlload.stats.decide` then reads the verdict:
regression when the whole interval lies past the threshold, pass when it lies inside; when it
straddles, the point estimate decides if the setup can decide the threshold at all (its
smallest decidable threshold ``D`` is at or under it), else the verdict is inconclusive and
names the spread and ``D``. Why: with 3 % per-run noise, "pass only when the interval is
inside" fails most unchanged runs, while the point rule gated by ``D`` keeps false
regressions of an unchanged run at <= ~0.5 % per metric.

Inconclusive, missing baselines and other settings all fail: a gate never passes silently.
These functions raise; they never call pytest.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pytest_mlload.baseline import BaselineEntry, fingerprint_differences
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import (
    GateFailure,
    Inconclusive,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from pytest_mlload.results import CapacityResult
from pytest_mlload.stats import (
    SIGMA0,
    Z99,
    Decision,
    RunSpread,
    change_interval,
    decide,
    interval_sd,
    run_spread,
    signed_pct,
    wilson_interval,
)

__all__ = [
    "HistoryReadiness",
    "Verdict",
    "check_no_regression",
    "error_verdict",
    "evaluate",
    "history_readiness",
    "rate_limit_verdicts",
    "readiness_line",
    "regression_messages",
]

# probes at the reference load that make the P99 and held-load throughput references alone
MIN_PROBES = 2
UPDATE_HINT = "rerun with --mlload-update-baseline if this change is intended"
RECOVERY_STEP_S = 0.25  # the recovery scan's resolution (openloop.recovery_time_s)
# A rise in error ratio smaller than this fraction of the error cap is not worth failing a
# build over even when it is certain (0.1 percentage point with the default 1 % cap).
ERROR_ALLOWANCE_OF_CAP = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """One gated comparison with the numbers behind it.

    ``change`` and ``[low, high]`` are the relative change and its 95 % interval (for the
    error ratio: the absolute rise in the ratio); ``decidable`` is the smallest threshold
    this setup can decide (see :func:`pytest_mlload.stats.decide`) and ``spread`` the
    per-run sd (log scale) of the baseline runs behind it, both None where not applicable.
    """

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
    decidable: float | None = None
    spread: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (nan and inf become None)."""
        d = asdict(self)
        for k in ("change", "low", "high", "decidable", "spread"):
            if isinstance(d[k], float) and not math.isfinite(d[k]):
                d[k] = None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _missing(metric: str, threshold: float, unit: str, message: str, **kw: Any) -> Verdict:
    """An inconclusive verdict for a comparison that has nothing to compare."""
    fields: dict[str, Any] = dict(baseline=None, observed=None, change=None, low=None, high=None)
    fields.update(kw)
    return Verdict(
        metric=metric,
        verdict="inconclusive",
        threshold=threshold,
        unit=unit,
        message=message,
        **fields,
    )


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
    prior: float = SIGMA0,
) -> Verdict:
    """One gated comparison; ``base_cis`` are the baseline runs' own intervals (or None);
    ``prior`` is the assumed run-to-run sd (``RunSettings.run_spread_prior``)."""
    if not base_values or min(base_values) <= 0:
        shown = ", ".join(f"{v:g}" for v in base_values) or "none"
        return _missing(
            metric,
            threshold,
            unit,
            f"{label}: the baseline values ({shown} {unit}) leave nothing to compare with; "
            f"record a baseline with --mlload-update-baseline",
            observed=observed,
        )
    base = _base_spread(base_values, base_cis, prior)
    ci = change_interval(observed, observed_ci, base)
    d = decide(
        ci.change,
        ci.low,
        ci.high,
        threshold,
        higher_is_better=higher_is_better,
        decidable=ci.decidable,
        spread=base.spread,
        runs=base.runs,
    )
    moved = "fell" if ci.change < 0 else "rose"
    head = (
        f"{label} {moved} {abs(ci.change) * 100:.1f} % ({base.center:.1f} -> {observed:.1f} "
        f"{unit}{extra}, {_shown_ci(d)})"
    )
    return Verdict(
        metric=metric,
        verdict=d.verdict,
        baseline=base.center,
        observed=observed,
        change=d.change,
        low=d.low,
        high=d.high,
        threshold=threshold,
        unit=unit,
        message=_compare_message(head, d, threshold, base),
        decidable=ci.decidable,
        spread=base.spread,
    )


def _base_spread(values: Sequence[float], cis: Sequence[Any], prior: float) -> RunSpread:
    """The baseline runs' centre and spread, with their own intervals' sd as the floor."""
    within = [interval_sd(v, ci) for v, ci in zip(values, cis, strict=False)]
    return run_spread(values, within_sds=within, prior_sd=prior)


def _shown_ci(d: Decision) -> str:
    if math.isfinite(d.low) and math.isfinite(d.high):
        return f"95 % CI {signed_pct(d.low)}..{signed_pct(d.high)}"
    return "no confidence interval"


def _compare_message(head: str, d: Decision, threshold: float, base: RunSpread) -> str:
    """The sentence of a comparison: what moved, the threshold, and the way out."""
    t = f"{threshold * 100:g} %"
    spread = (
        f"run-to-run spread {base.spread * 100:.1f} % over {base.runs} baseline "
        f"run{'s' if base.runs != 1 else ''}"
    )
    if d.verdict == "regression":
        msg = f"{head}, past the {t} threshold; {UPDATE_HINT} ({spread})."
    elif d.verdict == "inconclusive" and not (math.isfinite(d.low) and math.isfinite(d.high)):
        msg = (
            f"{head}: too few samples for a confidence interval, so the run cannot decide; "
            f"lengthen measure_s / probe_s or lower the load's latency."
        )
    elif d.verdict == "inconclusive":
        why = d.reason.split("threshold: ", 1)[-1]
        msg = f"{head}: the interval straddles the {t} threshold, so the run cannot decide: {why}."
    elif d.verdict == "improvement":
        msg = (
            f"{head}: better than the baseline beyond {t}; record it with --mlload-update-baseline."
        )
    else:
        msg = f"{head}: within the {t} threshold ({spread})."
    return msg


# --------------------------------------------------------------------------------------------
# Error ratio: one-sided, Newcombe interval for the rise
# --------------------------------------------------------------------------------------------


def error_verdict(
    failures: int,
    requests: int,
    base_failures: int,
    base_requests: int,
    max_error_ratio: float,
    *,
    label: str,
    metric: str = "error_ratio",
    confidence: float = 0.95,
) -> Verdict:
    """Gate a rise in error ratio: ``failures / requests`` against the pooled baseline.

    Method: the rise ``p_new - p_base`` gets Newcombe's hybrid score interval (method 10:
    the Wilson intervals of the two proportions combined in quadrature), which keeps its
    coverage at zero failures where the Wald interval collapses to a point. One-sided: only a
    rise fails. **Regression** iff the interval's lower bound is above 0 (the rise is real)
    *and* the point rise exceeds ``allowance = max_error_ratio / 10`` (0.1 percentage point
    by default: a certain but negligible rise does not fail a build); otherwise pass.
    No requests on either side is inconclusive.
    """
    threshold = max_error_ratio * ERROR_ALLOWANCE_OF_CAP
    if requests <= 0 or base_requests <= 0:
        side = "this run" if requests <= 0 else "the baseline"
        return _missing(
            metric,
            threshold,
            "ratio",
            f"{label}: {side} has no requests, so the error ratio cannot be compared",
        )
    p1, p0 = failures / requests, base_failures / base_requests
    rise = p1 - p0
    low, high = _newcombe(failures, requests, base_failures, base_requests, confidence)
    bad = low > 0 and rise > threshold
    return Verdict(
        metric=metric,
        verdict="regression" if bad else "pass",
        baseline=p0,
        observed=p1,
        change=rise,
        low=low,
        high=high,
        threshold=threshold,
        unit="ratio",
        message=_error_message(
            label, (failures, requests), (base_failures, base_requests), (low, high), threshold
        ),
    )


def _error_message(
    label: str,
    now: tuple[int, int],
    base: tuple[int, int],
    ci: tuple[float, float],
    threshold: float,
) -> str:
    """The sentence of the error gate: the rise, its interval, the allowance, the way out."""
    (failures, requests), (base_failures, base_requests), (low, high) = now, base, ci
    p1, p0 = failures / requests, base_failures / base_requests
    rise = p1 - p0
    head = (
        f"{label} rose {rise * 100:+.2f} pp ({p0:.2%} = {base_failures}/{base_requests} -> "
        f"{p1:.2%} = {failures}/{requests}, 95 % CI {low * 100:+.2f}..{high * 100:+.2f} pp)"
        if rise >= 0
        else f"{label} fell {-rise * 100:.2f} pp ({p0:.2%} = {base_failures}/{base_requests} "
        f"-> {p1:.2%} = {failures}/{requests})"
    )
    if low > 0 and rise > threshold:
        msg = (
            f"{head}, past the {threshold * 100:.2g} pp allowance with an interval above 0; "
            f"fix the failing requests (see error samples), or {UPDATE_HINT}."
        )
    elif rise > threshold:
        msg = f"{head}: not a certain rise (the interval holds 0), so not a regression."
    else:
        msg = f"{head}: within the {threshold * 100:.2g} pp allowance."
    return msg


def _newcombe(
    failures: int, requests: int, base_failures: int, base_requests: int, confidence: float
) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10) of ``p_new - p_base``."""
    p1, p0 = failures / requests, base_failures / base_requests
    l1, u1 = wilson_interval(failures, requests, confidence)
    l0, u0 = wilson_interval(base_failures, base_requests, confidence)
    rise = p1 - p0
    return (
        rise - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2),
        rise + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2),
    )


def _failures(error_ratio: float, requests: int) -> int:
    return round(error_ratio * requests)


def _errors_of(
    result: CapacityResult,
    runs: Sequence[tuple[float, int]],
    settings: RunSettings,
    label: str,
    metric: str = "error_ratio",
) -> Verdict:
    """The error gate of ``result`` against baseline ``(error_ratio, requests)`` pairs."""
    base_req = sum(n for _, n in runs)
    base_fail = sum(_failures(r, n) for r, n in runs)
    return error_verdict(
        _failures(result.error_ratio, result.requests),
        result.requests,
        base_fail,
        base_req,
        settings.max_error_ratio,
        label=label,
        metric=metric,
    )


def _run_errors(entry: BaselineEntry) -> list[tuple[float, int]]:
    return [(r.error_ratio, r.requests) for r in entry.runs]


def _precheck(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str,
    record_command: str,
    error_cap: bool = True,
) -> tuple[BaselineEntry, Verdict | None]:
    """Raise for what cannot be compared; return the entry and, for a run above the error cap
    whose error gate is a regression, that regression (the run is then judged on it alone).

    With ``error_cap`` a run above ``max_error_ratio`` is never a pass: it is a regression
    when its error ratio certainly rose past the baseline's (:func:`error_verdict`), and
    inconclusive otherwise (a baseline as bad, or nothing to compare with).
    """
    if not result.converged:
        raise Inconclusive(
            f"{key}: inconclusive, so not a pass: {result.reason}", reason=result.reason
        )
    diffs = [] if entry is None else entry.settings_differences(settings, result.mix)
    if error_cap and result.error_ratio > settings.max_error_ratio:
        if entry is not None and not diffs:
            v = _errors_of(result, _run_errors(entry), settings, f"error ratio of {key}")
            if v.verdict == "regression":
                return entry, v
        raise Inconclusive(
            f"{key}: error ratio {result.error_ratio:.2%} above the "
            f"{settings.max_error_ratio:.2%} cap, and not a certain rise over the baseline's, "
            f"so not a pass; fix the failing requests or lower max_users",
            reason="errors",
        )
    if entry is None:
        raise MissingBaseline(
            f"{key}: no baseline entry in {baseline_path}; a gate never passes without one. "
            f"Record it with: {record_command}"
        )
    if diffs:
        raise SettingsMismatch(
            f"{key}: the baseline in {baseline_path} was measured with other settings "
            f"({'; '.join(diffs)}), so it is not compared; {UPDATE_HINT} ({record_command})."
        )
    return entry, None


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

    Raises :class:`Inconclusive` (run did not converge / too few samples / errors above the
    cap without a certain rise), :class:`MissingBaseline` or :class:`SettingsMismatch`.
    Returns capacity (goodput in SLO mode: see :mod:`pytest_mlload.gates.stream`, which adds
    TTFT and TPOT P99), P99 and error-ratio verdicts (which may themselves be regressions: see
    :func:`check_no_regression`); a run above the error cap whose error ratio certainly rose
    returns that error regression alone. With ``settings.open_loop`` the P99 verdict uses the
    open-loop confirmation instead.
    """
    entry, capped = _precheck(
        result, entry, settings, key=key, baseline_path=baseline_path, record_command=record_command
    )
    from pytest_mlload.gates import stream

    note = _machine_note(entry, fingerprint) + (f" [{result.confirm}]" if result.confirm else "")
    if capped is not None:
        return _noted([capped], note, part)
    stream.check_resolved(result, key)
    t = settings.threshold
    metric, label, extra = stream.capacity_names(result, settings, key)
    base = [r.capacity_rps for r in entry.runs]
    base_cis = [r.capacity_ci_rps for r in entry.runs]
    if result.check:  # the held load: compare with the baseline's throughput at that load
        at_load = _rate_at(entry, result.users, goodput=settings.slo_mode)
        if at_load[0]:  # else a baseline from before probes kept their rate: capacities
            base, base_cis = at_load
    verdicts = [
        _compare(
            metric,
            label,
            "req/s",
            result.capacity_rps,
            result.capacity_ci,
            base,
            t,
            higher_is_better=True,
            extra=extra,
            base_cis=base_cis,
            prior=settings.run_spread_prior,
        )
    ]
    verdicts.append(
        _open_loop_verdict(result, entry, key, settings)
        if settings.open_loop and not settings.slo_mode  # SLO mode gates closed-loop figures
        else _probe_verdict(result, entry, key, settings)
    )
    if settings.slo_mode:
        verdicts += stream.stream_verdicts(result, entry, settings, key)
        note += stream.token_note(result, entry)
    verdicts.append(_errors_of(result, _run_errors(entry), settings, f"error ratio of {key}"))
    return _noted(verdicts, note, part)


def regression_messages(
    result: CapacityResult,
    entry: BaselineEntry | None,
    settings: RunSettings,
    *,
    key: str,
    baseline_path: str = "the baseline file",
    record_command: str = "pytest --mlload-update-baseline",
    part: str = "",
) -> list[str]:
    """The messages of ``result``'s regression verdicts from :func:`evaluate`; none when it
    cannot be compared (that is the judge's to say). What check mode's confirmation windows
    read (:func:`pytest_mlload.flow.confirm_check`)."""
    try:
        verdicts = evaluate(
            result,
            entry,
            settings,
            key=key,
            baseline_path=baseline_path,
            record_command=record_command,
            part=part,
        )
    except GateFailure:
        return []
    return [v.message for v in verdicts if v.verdict == "regression"]


def _probes_at(entry: BaselineEntry, users: int) -> list[Any]:
    """The probe windows of the baseline's runs that probed ``users`` while recording."""
    return [pr for r in entry.runs if (pr := r.extra.probe) is not None and pr.users == users]


def _p99_at(entry: BaselineEntry, users: int) -> tuple[list[float], list[Any]]:
    """Baseline P99 values (and their intervals) at ``users``, one figure per run: the probes
    of runs that probed there while recording, and, while fewer than ``MIN_PROBES`` did, the
    operating points of runs that operated there.

    A probe is measured the way a run under judgement measures it (first, from a fresh start,
    as a check window); an operating point after a search, on a warmed server, in a window
    kept because its P99 met the target. Mixing the two widens the spread and biases the
    centre low, so once a baseline has enough probes they alone are the reference.
    """
    probes = _probes_at(entry, users)
    if len(probes) >= MIN_PROBES:
        return [pr.p99_ms for pr in probes], [pr.p99_ci for pr in probes]
    values: list[float] = []
    cis: list[Any] = []
    for r in entry.runs:
        pr = r.extra.probe
        if pr is not None and pr.users == users:
            # one figure per run: a run whose probe load is its own operating load holds two
            # windows of one run, and counting both would understate the run-to-run spread
            values.append(pr.p99_ms)
            cis.append(pr.p99_ci)
        elif r.users == users and r.p99_ms is not None:
            values.append(float(r.p99_ms))
            cis.append(r.p99_ci_ms)
    return values, cis


def _rate_at(entry: BaselineEntry, users: int, *, goodput: bool) -> tuple[list[float], list[Any]]:
    """Baseline throughput (successful requests/s; goodput in SLO mode) at ``users``, one
    figure per run, chosen as :func:`_p99_at` chooses: the probes' rates once ``MIN_PROBES``
    runs probed there (a probe is the window a check run holds; an operating point after a
    search reads a warmed server), else each run's operating point when that was there (the
    longer window, with an interval), or its probe window there. Probes keep no goodput, so in
    SLO mode only operating points count.

    Check mode holds the reference load, which need not be a run's operating point: on a
    server that is not saturated there, comparing with capacities measured at higher loads
    would call an unchanged build slower.
    """
    rated = [pr for pr in _probes_at(entry, users) if pr.rps is not None]
    if not goodput and len(rated) >= MIN_PROBES:
        return [pr.rps for pr in rated], [pr.rps_ci for pr in rated]
    values: list[float] = []
    cis: list[Any] = []
    for r in entry.runs:
        pr = r.extra.probe
        if r.users == users:
            values.append(r.capacity_rps)
            cis.append(r.capacity_ci_rps)
        elif pr is not None and pr.users == users and pr.rps is not None and not goodput:
            values.append(pr.rps)
            cis.append(pr.rps_ci)  # None in baselines older than its interval
    return values, cis


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryReadiness:
    """What one gated figure's kept baseline runs can decide, known when they are recorded.

    ``runs`` and ``spread`` are the figure's run count and run-to-run sd (log scale, pooled
    with the prior as the gate pools it); ``decidable`` the smallest threshold a new run as
    precise as those runs can be judged at (:meth:`RunSpread.smallest_decidable`). Above
    ``threshold``, a run of the unchanged build will often be inconclusive, which fails it.
    """

    figure: str
    runs: int
    spread: float
    decidable: float
    threshold: float

    @property
    def ready(self) -> bool:
        return self.decidable <= self.threshold

    @property
    def floor(self) -> float:
        """What endless runs at this spread could decide: ``exp(2.576 s) - 1``."""
        return math.expm1(Z99 * self.spread)

    @property
    def runs_needed(self) -> int | None:
        """Runs at which this spread decides the threshold (the least ``k`` with
        ``exp(2.576 s sqrt(1 + 1/k)) - 1 <= threshold``), or None when no number does."""
        if self.ready:
            return self.runs
        if self.floor >= self.threshold:
            return None
        ratio = (math.log1p(self.threshold) / (Z99 * self.spread)) ** 2
        return max(self.runs + 1, math.ceil(1.0 / (ratio - 1.0) - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        derived = {"ready": self.ready, "runs_needed": self.runs_needed, "floor": self.floor}
        return {**asdict(self), **derived}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HistoryReadiness:
        """Rebuild from :meth:`to_dict` output (``ready``, ``runs_needed``, ``floor`` are
        derived)."""
        return cls(**{f.name: d[f.name] for f in fields(cls)})


def history_readiness(entry: BaselineEntry, settings: RunSettings) -> list[HistoryReadiness]:
    """The smallest threshold each figure the gate judges can be decided at from ``entry``.

    The figures are those :func:`evaluate` compares: capacity (full search), the throughput
    at the reference load (check mode) and P99 at the reference load (the open-loop P99 with
    ``open_loop``; TTFT and TPOT P99 too in SLO mode), each from the same runs and probes the
    gate reads, with ``settings.run_spread_prior``. A spike entry's figure is its P99 during
    the spike (:func:`evaluate_spike`). A figure with no positive values is left out. Plain
    arithmetic on the stored runs: no load is sent.
    """
    users = entry.users
    spike_p99s, spike_cis = _spike_p99s(entry)
    if spike_p99s:
        figures = [("P99 during the spike", spike_p99s, spike_cis)]
    else:
        p99 = (
            ("open-loop P99", *_open_loop_p99s(entry))
            if settings.open_loop and not settings.slo_mode
            else (f"P99 at {users} users", *_p99_at(entry, users))
        )
        figures = [
            (
                "goodput" if settings.slo_mode else "capacity",
                [r.capacity_rps for r in entry.runs],
                [r.capacity_ci_rps for r in entry.runs],
            ),
            (f"throughput at {users} users", *_rate_at(entry, users, goodput=settings.slo_mode)),
            p99,
        ]
        if settings.slo_mode:
            from pytest_mlload.gates import stream

            figures += [
                (f"{name} at {users} users", *stream.baseline_figure(entry, metric))
                for metric, name in stream.FIGURES
            ]
    out = []
    for figure, values, cis in figures:
        if not values or min(values) <= 0:
            continue
        base = _base_spread(values, cis, settings.run_spread_prior)
        out.append(
            HistoryReadiness(
                figure=figure,
                runs=base.runs,
                spread=base.spread,
                decidable=base.smallest_decidable(),
                threshold=settings.threshold,
            )
        )
    return out


def readiness_line(
    key: str,
    items: Sequence[HistoryReadiness],
    history: int | None = None,
    *,
    notes: Sequence[str] = (),
) -> str:
    """One line for a recorded key: each figure's smallest decidable threshold and, when one
    is over the threshold, the way out: how many more runs would decide it at these spreads
    (``history``: the runs kept, ``--mlload-history``), or the threshold to raise to when no
    number of runs would. ``notes`` (:meth:`BaselineEntry.load_notes`) follow it."""
    line = _readiness_text(key, items, history)
    return line + "".join(f". Note: {n}" for n in notes)


def _readiness_text(key: str, items: Sequence[HistoryReadiness], history: int | None) -> str:
    if not items:
        return f"{key}: no figure to judge in the baseline"
    t = f"{items[0].threshold * 100:g} %"
    shown = "; ".join(
        f"{i.figure} {i.decidable * 100:.1f} % ({i.spread * 100:.1f} % spread, {i.runs} "
        f"run{'s' if i.runs != 1 else ''})"
        for i in items
    )
    if all(i.ready for i in items):
        return f"{key}: decides the {t} threshold: {shown}"
    head = (
        f"{key}: cannot yet decide the {t} threshold: {shown}; unchanged builds may be inconclusive"
    )
    short = [i for i in items if not i.ready]
    if any(i.runs_needed is None for i in short):
        floor = max(i.floor for i in short)
        return (
            f"{head}. No number of runs decides {t} at these spreads (endless runs would "
            f"decide {floor * 100:.1f} %): raise the threshold above that, make runs repeat "
            f"more closely (longer measure_s / probe_s, a quieter runner), or, if a few runs "
            f"read high by chance, record more and see the spread fall"
        )
    more = max((i.runs_needed or 0) - i.runs for i in short)
    total = max(i.runs_needed or 0 for i in short)
    if history is not None and total > history:
        return (
            f"{head}. At these spreads {total} runs would decide it, more than the "
            f"{history} kept: raise --mlload-history to {total} and record {more} more, or raise "
            f"the threshold"
        )
    return (
        f"{head}. At these spreads {more} more run{'s' if more != 1 else ''} would decide it "
        f"(--mlload-update-baseline appends), or raise the threshold"
    )


def _probe_verdict(
    result: CapacityResult, entry: BaselineEntry, key: str, settings: RunSettings
) -> Verdict:
    t = settings.threshold
    same_load, cis = _p99_at(entry, entry.users)
    probe = result.probe
    if not same_load:
        return _missing(
            "p99", t, "ms", f"P99 of {key}: the baseline holds no P99 at {entry.users} users"
        )
    if probe is None or probe.users != entry.users or probe.p99_ms is None:
        return _missing(
            "p99",
            t,
            "ms",
            f"P99 of {key}: no probe window at the baseline's {entry.users} users "
            f"(run through the mlload fixture, or pass probe_users={entry.users})",
            baseline=float(statistics.median(same_load)),
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
        base_cis=cis,
        prior=settings.run_spread_prior,
    )


def _open_loop_verdict(
    result: CapacityResult, entry: BaselineEntry, key: str, settings: RunSettings
) -> Verdict:
    t = settings.threshold
    base = [ol for r in entry.runs if (ol := r.extra.open_loop) is not None]
    now = result.open_loop
    if not base or now is None or now.window is None or now.window.p99_ms is None:
        why = "the baseline has no open-loop P99" if not base else "this run has none"
        if now is not None and now.skipped:
            why += f" ({now.skipped})"
        return _missing(
            "p99_open_loop",
            t,
            "ms",
            f"open-loop P99 of {key}: {why}; record one with --mlload-update-baseline",
        )
    values, cis = _open_loop_p99s(entry)
    return _compare(
        "p99_open_loop",
        f"open-loop P99 of {key} at {now.rate_rps:.1f} req/s",
        "ms",
        now.window.p99_ms,
        now.window.p99_ci,
        values,
        t,
        higher_is_better=False,
        base_cis=cis,
        prior=settings.run_spread_prior,
    )


def _open_loop_p99s(entry: BaselineEntry) -> tuple[list[float], list[Any]]:
    """The baseline's open-loop P99s (and intervals) at the newest run's open-loop rate."""
    base = [ol for r in entry.runs if (ol := r.extra.open_loop) is not None]
    if not base:
        return [], []
    rate = base[-1].rate_rps or 1.0
    same = [b for b in base if abs((b.rate_rps or 0.0) / rate - 1) < 0.01]
    kept = [(b.p99_ms, b.p99_ci) for b in same if b.p99_ms is not None]
    return [p for p, _ in kept], [ci for _, ci in kept]


def _spike_p99s(entry: BaselineEntry) -> tuple[list[float], list[Any]]:
    """The baseline spikes' P99s (and intervals)."""
    kept = [
        (sp.p99_ms, sp.p99_ci)
        for r in entry.runs
        if (sp := r.extra.spike) is not None and sp.p99_ms is not None
    ]
    return [p for p, _ in kept], [ci for _, ci in kept]


def _bound(
    metric: str, label: str, observed: float, bound: float, unit: str, setting: str
) -> Verdict:
    """An absolute bound: regression when ``observed`` exceeds ``bound``, whatever the
    baseline says (so a baseline recorded on a broken service cannot pass forever)."""
    over = observed > bound
    shown = (
        (f"{observed:.2%}", f"{bound:.2%}")
        if unit == "ratio"
        else (f"{observed:.1f} ms", f"{bound:g} ms")
    )
    return Verdict(
        metric=metric,
        verdict="regression" if over else "pass",
        baseline=None,
        observed=observed,
        change=None,
        low=None,
        high=None,
        threshold=bound,
        unit=unit,
        message=f"{label}: {shown[0]}, "
        + (
            f"past the absolute bound {setting} = {shown[1]}; fix the service, or raise "
            f"{setting} if this load is acceptable"
            if over
            else f"within the absolute bound {setting} = {shown[1]}"
        ),
    )


def _spike_bounds(result: CapacityResult, settings: RunSettings, key: str) -> list[Verdict]:
    """``spike_max_p99_ms`` / ``spike_max_error_ratio`` (0 = off) as absolute bounds."""
    out: list[Verdict] = []
    max_p99 = float(getattr(settings, "spike_max_p99_ms", 0.0) or 0.0)
    max_err = float(getattr(settings, "spike_max_error_ratio", 0.0) or 0.0)
    label = f"during the spike of {key}"
    if max_p99 > 0:
        if result.p99_ms is None:
            msg = f"P99 {label}: no P99 to hold to spike_max_p99_ms = {max_p99:g} ms"
            out.append(_missing("spike_p99_bound", max_p99, "ms", msg))
        else:
            out.append(
                _bound(
                    "spike_p99_bound",
                    f"P99 {label}",
                    result.p99_ms,
                    max_p99,
                    "ms",
                    "spike_max_p99_ms",
                )
            )
    if max_err > 0:
        out.append(
            _bound(
                "spike_error_bound",
                f"error ratio {label}",
                result.error_ratio,
                max_err,
                "ratio",
                "spike_max_error_ratio",
            )
        )
    return out


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
    """Spike verdicts: P99 and error ratio during the spike, time to recover, absolute bounds.

    P99 uses the prediction-interval rule of :func:`evaluate`; the error ratio the one-sided
    error gate (:func:`error_verdict`) against the baseline spikes' pooled errors. The error
    cap does not apply (a spike is meant to overload: its errors are judged by that gate, not
    pre-empted as inconclusive). Recovery regresses when it took longer than the baseline by
    more than the threshold plus one 0.25 s step of the recovery scan, or did not happen.
    ``spike_max_p99_ms`` and ``spike_max_error_ratio`` (when > 0) are absolute bounds
    (metrics ``spike_p99_bound``, ``spike_error_bound``) that fail even when the baseline
    looks equally bad.
    """
    entry, _ = _precheck(
        result,
        entry,
        settings,
        key=key,
        baseline_path=baseline_path,
        record_command=record_command,
        error_cap=False,
    )
    t = settings.threshold
    base = [(r, sp) for r in entry.runs if (sp := r.extra.spike) is not None]
    verdicts = _spike_bounds(result, settings, key)
    if not base or result.p99_ms is None:
        verdicts.append(_missing("spike", t, "", f"spike of {key}: no spike figures to compare"))
        return _noted(verdicts, _machine_note(entry, fingerprint), part)
    values, cis = _spike_p99s(entry)
    verdicts.append(
        _compare(
            "spike_p99",
            f"P99 during the spike of {key}",
            "ms",
            result.p99_ms,
            result.p99_ci,
            values,
            t,
            higher_is_better=False,
            base_cis=cis,
            prior=settings.run_spread_prior,
        )
    )
    pooled = [(sp.error_ratio, r.requests) for r, sp in base]
    label = f"error ratio during the spike of {key}"
    verdicts.append(_errors_of(result, pooled, settings, label, metric="spike_errors"))
    base_rec = [sp.recovery_s for _, sp in base if sp.recovery_s is not None]
    if base_rec:
        rec = result.spike.recovery_s if result.spike else None
        verdicts.append(_recovery_verdict(rec, float(statistics.median(base_rec)), t, key))
    return _noted(verdicts, _machine_note(entry, fingerprint), part)


def _recovery_verdict(rec: float | None, base_s: float, t: float, key: str) -> Verdict:
    """Recovery regresses past baseline x (1 + threshold) + one step of the recovery scan."""
    limit = base_s * (1 + t) + RECOVERY_STEP_S
    worse = rec is None or rec > limit
    shown = "did not recover" if rec is None else f"{rec:.2f} s"
    return Verdict(
        metric="spike_recovery",
        verdict="regression" if worse else "pass",
        baseline=base_s,
        observed=rec,
        change=None,
        low=None,
        high=None,
        threshold=t,
        unit="s",
        message=f"recovery after the spike of {key}: {base_s:.2f} s -> {shown} (limit "
        f"{limit:.2f} s = baseline + {t * 100:g} % + {RECOVERY_STEP_S} s)"
        + (f"; {UPDATE_HINT}." if worse else ""),
    )


def rate_limit_verdicts(
    results: Mapping[str, CapacityResult],
    entries: Mapping[str, BaselineEntry | None],
    settings: RunSettings,
) -> list[Verdict]:
    """Recommended rate limits (``capacity x safety_factor``) that fell since the baseline.

    One-sided: only a drop fails (a higher safe rate is good news, never a failure). The
    comparison is the capacity one, through the same prediction model: the observed value is
    the part's ``rate_limit_rps`` with ``capacity_ci x safety_factor`` as its
    interval, the baseline values are the runs' ``extra.rate_limit_rps`` with their
    ``capacity_ci_rps x safety_factor`` as their own intervals where known. ``results`` and
    ``entries`` are keyed by part key; the verdicts carry that key as ``part``.
    """
    out: list[Verdict] = []
    f = settings.safety_factor
    for part, result in sorted(results.items()):
        now = result.rate_limit_rps
        entry = entries.get(part)
        runs = [r for r in entry.runs if r.extra.rate_limit_rps] if entry else []
        label = f"recommended rate limit of {part}"
        if now is None or not runs:
            why = "this run has none" if now is None else "no baseline value"
            out.append(
                _missing(
                    "rate_limit",
                    settings.threshold,
                    "req/s",
                    f"{label}: {why}; record one with --mlload-update-baseline",
                    observed=now,
                    part=part,
                )
            )
            continue
        v = _compare(
            "rate_limit",
            label,
            "req/s",
            float(now),
            _scaled(result.capacity_ci, f),
            [float(r.extra.rate_limit_rps or 0.0) for r in runs],
            settings.threshold,
            higher_is_better=True,
            base_cis=[_scaled(r.capacity_ci_rps, f) for r in runs],
            prior=settings.run_spread_prior,
        )
        if v.verdict == "improvement":
            v = replace(
                v,
                verdict="pass",
                message=v.message.split(": better", 1)[0] + ": higher is fine (one-sided gate).",
            )
        out.append(replace(v, part=part))
    return out


def _scaled(ci: tuple[float, float] | None, factor: float) -> tuple[float, float] | None:
    return (ci[0] * factor, ci[1] * factor) if ci else None


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
