"""The JSON report (``--mlload-report``) read into typed records, in one place.

:func:`runs_from_report` is the only code of the Notion sync that looks inside the report
dict. It reads schema 1 (figures such as the rate limit under ``result["extra"]``) and
schema 2 (typed fields at the top level of a result: ``open_loop``, ``spike``, ``hpa``,
``rate_limit_rps``; a result of several parts holds them under ``parts``).

The run id is the report's ``run_id`` when it has one; otherwise it is derived from
``generated_at`` and the sorted test keys, so the same report always maps to the same id
(and a sync run twice updates the same Notion pages).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mlload.errors import NotionError
from pytest_mlload.results import part_name

__all__ = [
    "EndpointFigures",
    "HpaTrigger",
    "PartInput",
    "RunInput",
    "TestInput",
    "VerdictFigures",
    "runs_from_report",
]

SCHEMAS = (1, 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerdictFigures:
    """One gated comparison: ratios (0.10, not 10) and the baseline and observed figures."""

    metric: str
    verdict: str
    part: str
    baseline: float | None
    observed: float | None
    change_ratio: float | None
    low_ratio: float | None
    high_ratio: float | None
    threshold_ratio: float | None
    unit: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointFigures:
    """One request name's figures inside a part's operating-point window."""

    name: str
    capacity_rps: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    requests: int
    error_ratio: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaTrigger:
    """One HPA/KEDA trigger with its recommendation."""

    key: str
    priority: str
    observed: float | None
    current: float | None
    recommended: float | None
    unit: str
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PartInput:
    """One result of a test: the whole test (``part == ""``) or one mode part
    (``individual /v1/embed``, ``production``, ``exploration ...``, ``spike``)."""

    part: str
    status: str
    reason: str
    capacity_rps: float | None
    capacity_ci: tuple[float, float] | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    users: int | None
    error_ratio: float | None
    target_p99_ms: float | None
    endpoints: tuple[EndpointFigures, ...] = ()
    rate_limit_rps: float | None = None
    open_loop_p99_ms: float | None = None
    spike_target_rps: float | None = None
    spike_recovery_s: float | None = None
    hpa: tuple[HpaTrigger, ...] = ()
    window_end_epoch: float | None = None

    @property
    def mode(self) -> str:
        """``individual`` for a whole-test result, else the part's first word."""
        return self.part.split(" ", 1)[0] if self.part else "individual"


@dataclass(frozen=True, slots=True, kw_only=True)
class TestInput:
    """One capacity test: its parts, verdicts and final outcome."""

    nodeid: str
    key: str
    outcome: str
    message: str
    parts: tuple[PartInput, ...]
    verdicts: tuple[VerdictFigures, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInput:
    """One session's report. ``run_id_derived`` is True when the report had no ``run_id``."""

    run_id: str
    run_id_derived: bool
    schema: int
    generated_at: str
    baseline_path: str | None
    commit: str | None
    ci_url: str | None
    tests: tuple[TestInput, ...]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None  # NaN/inf: no JSON, no Notion number


def _int(value: Any) -> int | None:
    number = _num(value)
    return None if number is None else int(number)


def _pair(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lo, hi = _num(value[0]), _num(value[1])
    return None if lo is None or hi is None else (lo, hi)


def _typed(result: Mapping[str, Any], name: str) -> Any:
    """A typed figure: a top-level field (schema 2), else under ``extra`` (schema 1)."""
    if result.get(name) is not None:
        return result[name]
    extra = result.get("extra")
    return extra.get(name) if isinstance(extra, Mapping) else None


def _hpa(value: Any) -> tuple[HpaTrigger, ...]:
    if not isinstance(value, Mapping):
        return ()
    out = []
    for t in value.get("triggers") or ():
        if not isinstance(t, Mapping):
            continue
        out.append(
            HpaTrigger(
                key=f"{t.get('component', '')}.{t.get('name', '')}",
                priority=str(t.get("priority") or ""),
                observed=_num(t.get("observed")),
                current=_num(t.get("current_threshold")),
                recommended=_num(t.get("recommended")),
                unit=str(t.get("unit") or ""),
                note=str(t.get("note") or t.get("warning") or ""),
            )
        )
    return tuple(out)


def _open_loop_p99(value: Any) -> float | None:
    """P99 of the open-loop window: ``window.p99_ms`` (schema 2) or ``p99_ms`` (schema 1)."""
    if not isinstance(value, Mapping):
        return None
    window = value.get("window")
    return _num(window.get("p99_ms") if isinstance(window, Mapping) else value.get("p99_ms"))


def _flat(results: Any) -> list[Mapping[str, Any]]:
    """Every part's result: a result holding ``parts`` (a run of several) stands for them."""
    out: list[Mapping[str, Any]] = []
    for r in results or ():
        if not isinstance(r, Mapping):
            continue
        parts = r.get("parts")
        if isinstance(parts, Mapping) and parts:
            out += [
                {**sub, "name": name} for name, sub in parts.items() if isinstance(sub, Mapping)
            ]
        else:
            out.append(r)
    by_name: dict[str, Mapping[str, Any]] = {}
    for r in out:  # a part listed twice (alone and inside its run) counts once
        by_name.setdefault(str(r.get("name") or ""), r)
    return list(by_name.values())


def _part(result: Mapping[str, Any], key: str) -> PartInput:
    name = str(result.get("name") or "")
    raw = result.get("endpoints")
    endpoints: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    open_loop = _typed(result, "open_loop")
    spike = _typed(result, "spike")
    return PartInput(
        part=part_name(key, name),
        status=str(result.get("status") or ""),
        reason=str(result.get("reason") or ""),
        capacity_rps=_num(result.get("capacity_rps")),
        capacity_ci=_pair(result.get("capacity_ci")),
        p50_ms=_num(result.get("p50_ms")),
        p95_ms=_num(result.get("p95_ms")),
        p99_ms=_num(result.get("p99_ms")),
        users=_int(result.get("users")),
        error_ratio=_num(result.get("error_ratio")),
        target_p99_ms=_num(result.get("target_p99_ms")),
        endpoints=tuple(
            EndpointFigures(
                name=str(ep_name),
                capacity_rps=_num(ep.get("capacity_rps")),
                p50_ms=_num(ep.get("p50_ms")),
                p95_ms=_num(ep.get("p95_ms")),
                p99_ms=_num(ep.get("p99_ms")),
                requests=_int(ep.get("requests")) or 0,
                error_ratio=_num(ep.get("error_ratio")),
            )
            for ep_name, ep in sorted(endpoints.items())
            if isinstance(ep, Mapping)
        ),
        rate_limit_rps=_num(_typed(result, "rate_limit_rps")),
        open_loop_p99_ms=_open_loop_p99(open_loop),
        spike_target_rps=_num(spike.get("target_rps")) if isinstance(spike, Mapping) else None,
        spike_recovery_s=_num(spike.get("recovery_s")) if isinstance(spike, Mapping) else None,
        hpa=_hpa(_typed(result, "hpa")),
        window_end_epoch=_num(result.get("window_end_epoch")),
    )


def _verdict(v: Mapping[str, Any]) -> VerdictFigures:
    return VerdictFigures(
        metric=str(v.get("metric") or ""),
        verdict=str(v.get("verdict") or ""),
        part=str(v.get("part") or ""),
        baseline=_num(v.get("baseline")),
        observed=_num(v.get("observed")),
        change_ratio=_num(v.get("change")),
        low_ratio=_num(v.get("low")),
        high_ratio=_num(v.get("high")),
        threshold_ratio=_num(v.get("threshold")),
        unit=str(v.get("unit") or ""),
        message=str(v.get("message") or ""),
    )


def derive_run_id(generated_at: str, keys: list[str]) -> str:
    """A stable id for a report without ``run_id``: same report, same id."""
    digest = hashlib.sha256("\n".join([generated_at, *sorted(keys)]).encode()).hexdigest()
    return f"mlload-{digest[:16]}"


def runs_from_report(report: Any, *, source: str = "the report") -> RunInput:
    """Read a ``--mlload-report`` JSON dict; :class:`NotionError` naming what is wrong."""
    if not isinstance(report, Mapping) or not isinstance(report.get("tests"), list):
        raise NotionError(
            f"{source} is not a pytest-mlload JSON report (no 'tests' list); write one with "
            f"pytest --mlload-report report.json"
        )
    schema = report.get("schema")
    if schema not in SCHEMAS:
        raise NotionError(
            f"{source} has schema {schema!r}; this Notion sync reads schemas "
            f"{', '.join(map(str, SCHEMAS))}: upgrade pytest-mlload"
        )
    tests = []
    for t in report["tests"]:
        if not isinstance(t, Mapping) or not t.get("key"):
            continue
        key = str(t["key"])
        tests.append(
            TestInput(
                nodeid=str(t.get("nodeid") or key),
                key=key,
                outcome=str(t.get("outcome") or "not judged"),
                message=str(t.get("message") or ""),
                parts=tuple(_part(r, key) for r in _flat(t.get("results"))),
                verdicts=tuple(_verdict(v) for v in t.get("verdicts") or () if isinstance(v, dict)),
            )
        )
    generated_at = str(report.get("generated_at") or "")
    run_id = str(report.get("run_id") or "")
    return RunInput(
        run_id=run_id or derive_run_id(generated_at, [t.key for t in tests]),
        run_id_derived=not run_id,
        schema=int(schema),
        generated_at=generated_at,
        baseline_path=str(report["baseline"]) if report.get("baseline") else None,
        commit=str(report["commit"]) if report.get("commit") else None,
        ci_url=str(report["ci_url"]) if report.get("ci_url") else None,
        tests=tuple(tests),
    )
