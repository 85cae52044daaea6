"""The gates of a streaming (LLM) capacity test in SLO mode: goodput, TTFT P99, TPOT P99.

:func:`pytest_mlload.gates.metrics.evaluate` calls these when a streaming SLO is set. Each
comparison goes through the same prediction model as capacity and P99
(:func:`pytest_mlload.gates.metrics._compare`), so the run-to-run spread, the interval, the
decidable threshold and the inconclusive rules are those of plain endpoints:

* **goodput** (higher is better) replaces capacity: requests/s meeting every SLO at the
  operating point, against the runs' ``capacity_rps`` (= goodput in SLO mode), its message
  naming the SLO attainment and its interval;
* **TTFT P99** and **TPOT P99 at the baseline's load** (lower is better): the probe window's
  figures (held at the baseline's user count) against the runs' figures at that count.

A run whose measure window's attainment was unresolved is inconclusive, never a pass; a
token source other than the baseline's (chunks counted instead of usage) is noted on the
verdicts, since chunk counts undercount servers that bundle tokens and TPOT moves with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_mlload.errors import Inconclusive

if TYPE_CHECKING:
    from pytest_mlload.baseline import BaselineEntry
    from pytest_mlload.config import RunSettings
    from pytest_mlload.gates.metrics import Verdict
    from pytest_mlload.results import CapacityResult, StreamResult

__all__ = ["attainment_text", "capacity_names", "check_resolved", "stream_verdicts", "token_note"]

FIGURES = (("ttft_p99", "TTFT P99"), ("tpot_p99", "TPOT P99"))


def attainment_text(st: StreamResult | None) -> str:
    """ "SLO attainment 96.1 % (95 % CI 94.8..97.1 %)", or "" without one."""
    if st is None or st.slo_attainment is None:
        return ""
    ci = st.slo_attainment_ci
    shown = f" (95 % CI {ci[0] * 100:.1f}..{ci[1] * 100:.1f} %)" if ci else ""
    return f"SLO attainment {st.slo_attainment * 100:.1f} %{shown}"


def capacity_names(result: CapacityResult, settings: RunSettings, key: str) -> tuple[str, str, str]:
    """(metric, label, extra) of the capacity comparison: ``goodput`` in SLO mode."""
    extra = f" at {result.users} users"
    if not settings.slo_mode:
        return "capacity", f"capacity of {key}", extra
    text = attainment_text(result.stream)
    return "goodput", f"goodput of {key}", extra + (f", {text}" if text else "")


def check_resolved(result: CapacityResult, key: str) -> None:
    """Raise :class:`Inconclusive` when the measure window's attainment straddles its target."""
    st = result.stream
    if st is None or st.slo_decision != "unresolved":
        return
    target = f"{(st.slo_target or 0.0) * 100:g} %"
    reason = (
        f"{attainment_text(st)} straddles the {target} target at {result.users} users: no "
        f"decision; lengthen measure_s"
    )
    raise Inconclusive(f"{key}: inconclusive, so not a pass: {reason}", reason=reason)


def _figure(st: StreamResult | None, metric: str) -> tuple[float | None, Any]:
    if st is None:
        return None, None
    return getattr(st, f"{metric}_ms"), getattr(st, f"{metric}_ci")


def stream_verdicts(
    result: CapacityResult, entry: BaselineEntry, settings: RunSettings, key: str
) -> list[Verdict]:
    """TTFT P99 and TPOT P99 at the baseline's load (a figure neither side has, such as the
    TPOT of one-token answers, is left out unless its SLO is set)."""
    from pytest_mlload.gates.metrics import _compare, _missing

    users, t = entry.users, settings.threshold
    probe = result.probe
    now = probe.stream if probe is not None and probe.users == users else None
    out = []
    for metric, name in FIGURES:
        label = f"{name} of {key} at the baseline's {users} users"
        values, cis = baseline_figure(entry, metric)
        observed, observed_ci = _figure(now, metric)
        limit_set = getattr(settings, f"{metric}_ms") > 0
        if not values or observed is None:
            if not values and observed is None and not limit_set:
                continue
            why = "the baseline holds none there" if not values else "this run has none there"
            out.append(_missing(metric, t, "ms", f"{label}: {why}; record a baseline again"))
            continue
        out.append(
            _compare(
                metric,
                label,
                "ms",
                observed,
                observed_ci,
                values,
                t,
                higher_is_better=False,
                base_cis=cis,
                prior=settings.run_spread_prior,
            )
        )
    return out


def baseline_figure(entry: BaselineEntry, metric: str) -> tuple[list[float], list[Any]]:
    """The baseline runs' ``metric`` (``ttft`` or ``tpot``) P99 at the entry's reference load,
    with their intervals: one figure per run that has it."""
    values, cis = [], []
    for run in entry.runs:
        point = run.extra.stream.at(entry.users) if run.extra.stream else None
        value = getattr(point, f"{metric}_ms", None) if point else None
        if value is not None:
            values.append(value)
            cis.append(getattr(point, f"{metric}_ci"))
    return values, cis


def token_note(result: CapacityResult, entry: BaselineEntry) -> str:
    """A note when tokens were counted otherwise than in the baseline's latest run."""
    point = entry.latest.extra.stream
    base = next((p.token_source for p in (point.operating, point.probe) if p), "") if point else ""
    now = result.stream.token_source if result.stream else ""
    if not base or not now or base == now:
        return ""
    return (
        f" [tokens counted from {now}, the baseline's from {base}: chunk counts undercount "
        f"servers that bundle tokens, so TPOT moves with the source]"
    )
