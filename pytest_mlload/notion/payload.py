"""What is written to Notion for one run: plain data, built without any request.

One run page (properties for charts, and a body with the verdicts and a table per mode) and
one row per endpoint per test. An endpoint's row carries its solo figures (the whole test
for a single-TaskSet test, or the ``individual <endpoint>`` part), like ml-loadtest's rows,
plus its share of the production mix (``Mix RPS``, ``Mix P99 (ms)``) when the test ran one.

Change columns are percent (``-12.5`` for a 12.5 % fall), named ``(%)`` like ml-loadtest's;
``P99 Change`` compares P99 at the baseline's load (the gate's figure), shown in
``P99 at Baseline Load (ms)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_mlload.notion.blocks import rich_text, run_body
from pytest_mlload.notion.report_input import PartInput, RunInput, TestInput, VerdictFigures
from pytest_mlload.notion.schema import RUN_PROPERTIES, TITLE
from pytest_mlload.results import part_key

__all__ = ["BaselineFigures", "RowPayload", "RunPayload", "build_payload"]

# The judge's severity order (gates.judgement.SEVERITY), with the outcomes a test can have
# besides verdicts ("error", "not judged", "recorded"); kept here so the sync needs no scipy.
_SEVERITY = (
    "error",
    "regression",
    "inconclusive",
    "settings-mismatch",
    "no-baseline",
    "not judged",
    "improvement",
    "recorded",
    "pass",
)
_FAILING = _SEVERITY[:5]  # the outcomes that fail a test (and any unknown one)

BaselineFigures = tuple[float | None, float | None]  # (capacity req/s, P99 ms)
BaselineLookup = Callable[[str], BaselineFigures | None]  # baseline key -> figures


@dataclass(frozen=True, slots=True, kw_only=True)
class RowPayload:
    """One endpoint row; the relation to the run page is added when it is sent."""

    row_id: str
    endpoint: str
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPayload:
    """The run page and its endpoint rows, ready to send (and to keep on disk)."""

    run_id: str
    service: str
    version: str
    properties: dict[str, Any]
    children: list[dict[str, Any]]
    rows: tuple[RowPayload, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the pending file)."""
        return {
            "run_id": self.run_id,
            "service": self.service,
            "version": self.version,
            "properties": self.properties,
            "children": self.children,
            "rows": [
                {"row_id": r.row_id, "endpoint": r.endpoint, "properties": r.properties}
                for r in self.rows
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunPayload:
        """Inverse of :meth:`to_dict`."""
        return cls(
            run_id=str(d["run_id"]),
            service=str(d["service"]),
            version=str(d["version"]),
            properties=dict(d["properties"]),
            children=list(d["children"]),
            rows=tuple(
                RowPayload(
                    row_id=str(r["row_id"]),
                    endpoint=str(r["endpoint"]),
                    properties=dict(r["properties"]),
                )
                for r in d["rows"]
            ),
        )


# -- property values --------------------------------------------------------------------


def _title(text: str) -> dict[str, Any]:
    return {"title": rich_text(text)}


def _text(text: str | None) -> dict[str, Any]:
    return {"rich_text": rich_text(text or "")}


def _select(name: str | None) -> dict[str, Any]:
    # Notion refuses commas in option names; 100 characters at most.
    return {"select": {"name": name.replace(",", ";")[:100]} if name else None}


def _number(x: float | None, digits: int = 2) -> dict[str, Any]:
    return {"number": None if x is None else round(x, digits)}


def _pct(ratio: float | None) -> dict[str, Any]:
    return _number(None if ratio is None else ratio * 100)


def _date(iso: str) -> dict[str, Any]:
    return {"date": {"start": iso} if iso else None}


# -- figures ----------------------------------------------------------------------------


def worst(verdicts: Sequence[str], default: str = "not judged") -> str:
    """The most severe verdict of several (unknown kinds rank as errors)."""
    if not verdicts:
        return default
    return min(verdicts, key=lambda v: _SEVERITY.index(v) if v in _SEVERITY else 0)


def _of(test: TestInput, part: str, metric: str) -> VerdictFigures | None:
    return next((v for v in test.verdicts if v.part == part and v.metric == metric), None)


def _part_verdict(test: TestInput, part: str) -> str:
    kinds = [v.verdict for v in test.verdicts if v.part == part]
    return worst(kinds, test.outcome) if kinds else test.outcome


def _figures(test: TestInput, p: PartInput, base: BaselineFigures | None) -> dict[str, Any]:
    """Capacity, P99, their baselines and changes (with intervals) of one part."""
    cap = _of(test, p.part, "capacity") or _of(test, p.part, "goodput")
    p99 = _of(test, p.part, "p99")
    base_cap = cap.baseline if cap and cap.baseline is not None else (base or (None, None))[0]
    base_p99 = p99.baseline if p99 and p99.baseline is not None else (base or (None, None))[1]
    change = cap.change_ratio if cap else None
    if change is None and base_cap and p.capacity_rps is not None:
        change = p.capacity_rps / base_cap - 1  # no gate ran (e.g. recording): point only
    return {
        "RPS": _number(p.capacity_rps),
        "P99 (ms)": _number(p.p99_ms),
        "RPS Baseline": _number(base_cap),
        "P99 Baseline (ms)": _number(base_p99),
        "P99 at Baseline Load (ms)": _number(p99.observed if p99 else None),
        "RPS Change (%)": _pct(change),
        "RPS Change Low (%)": _pct(cap.low_ratio if cap else None),
        "RPS Change High (%)": _pct(cap.high_ratio if cap else None),
        "P99 Change (%)": _pct(p99.change_ratio if p99 else None),
        "P99 Change Low (%)": _pct(p99.low_ratio if p99 else None),
        "P99 Change High (%)": _pct(p99.high_ratio if p99 else None),
    }


def _mix(run: RunInput) -> tuple[TestInput, PartInput] | None:
    """The run's mix figures: the first production part, else the only result of the run."""
    every = [(t, p) for t in run.tests for p in t.parts]
    prod = next(((t, p) for t, p in every if p.part == "production"), None)
    return prod or (every[0] if len(every) == 1 else None)


# -- rows -------------------------------------------------------------------------------


def _solo_endpoint(test: TestInput, p: PartInput) -> str | None:
    if p.part.startswith("individual "):
        return p.part[len("individual ") :]
    if p.part == "":
        return p.endpoints[0].name if len(p.endpoints) == 1 else test.key
    return None


def _rows_of(
    run: RunInput, test: TestInput, common: dict[str, Any], lookup: BaselineLookup
) -> list[RowPayload]:
    rows: dict[str, dict[str, Any]] = {}
    for p in test.parts:
        endpoint = _solo_endpoint(test, p)
        if endpoint is not None:
            row = rows.setdefault(endpoint, {})
            row.update(_figures(test, p, lookup(part_key(test.key, p.part))))
            row["Users"] = _number(p.users, 0)
            row["Errors (%)"] = _pct(p.error_ratio)
            row["Standard Limit"] = _number(p.rate_limit_rps)
            row["Verdict"] = _select(_part_verdict(test, p.part))
        elif p.part == "production":
            for ep in p.endpoints:
                row = rows.setdefault(ep.name, {"Verdict": _select(_part_verdict(test, p.part))})
                row["Mix RPS"] = _number(ep.capacity_rps)
                row["Mix P99 (ms)"] = _number(ep.p99_ms)
    out = []
    for endpoint, figures in sorted(rows.items()):
        title = f"{endpoint} — {common['title_tail']}"
        props = {
            TITLE: _title(title),
            "Row ID": _text(f"{run.run_id}|{test.key}|{endpoint}"),
            "Run ID": _text(run.run_id),
            "Endpoint": _select(endpoint),
            "Test": _text(test.key),
            **common["shared"],
            **figures,
        }
        out.append(
            RowPayload(
                row_id=f"{run.run_id}|{test.key}|{endpoint}", endpoint=endpoint, properties=props
            )
        )
    return out


# -- the run page -----------------------------------------------------------------------


def _run_properties(
    run: RunInput, common: dict[str, Any], ci: Mapping[str, str], lookup: BaselineLookup
) -> dict[str, Any]:
    outcomes = [t.outcome for t in run.tests]
    props: dict[str, Any] = {
        TITLE: _title(f"Load Test — {common['title_tail']}"),
        "Run ID": _text(run.run_id),
        **common["shared"],
        "Verdict": _select(worst(outcomes)),
        "Tests": _number(len(run.tests), 0),
        "Failed Tests": _number(sum(o in _FAILING or o not in _SEVERITY for o in outcomes), 0),
        "Verdicts": _text("; ".join(f"{t.key}: {t.outcome}" for t in run.tests)),
        "Commit": _text(run.commit or ci.get("commit")),
        "CI Run": {"url": run.ci_url or ci.get("ci_url") or None},
    }
    mix = _mix(run)
    if mix is not None:
        test, part = mix
        props.update(_figures(test, part, lookup(part_key(test.key, part.part))))
        props["Rate Limit (req/s)"] = _number(part.rate_limit_rps)
    else:
        props.update({name: {"number": None} for name in _figures_names()})
        props["Rate Limit (req/s)"] = {"number": None}
    return props


def _figures_names() -> list[str]:
    return [n for n in RUN_PROPERTIES if n.startswith(("RPS", "P99"))]


def build_payload(
    run: RunInput,
    *,
    service: str,
    version: str,
    ci: Mapping[str, str] | None = None,
    baseline: BaselineLookup | None = None,
) -> RunPayload:
    """Everything to write for ``run``. ``baseline`` gives figures for parts no gate judged
    (e.g. a recording session); ``ci`` the commit and CI run URL when the report lacks them."""
    lookup: BaselineLookup = baseline or (lambda _key: None)
    when = run.generated_at.rstrip("Z")
    common = {
        "title_tail": f"{service} — {version} — {when}",
        "shared": {
            "Service Name": _select(service),
            "Service Version": _text(version),
            "Date": _date(run.generated_at),
        },
    }
    rows = [row for test in run.tests for row in _rows_of(run, test, common, lookup)]
    ci = ci or {}
    overall = worst([t.outcome for t in run.tests])
    text = (
        f"{service} {version}: overall verdict {overall} over {len(run.tests)} capacity "
        f"test(s). Run {run.run_id}, report generated {run.generated_at}."
    )
    return RunPayload(
        run_id=run.run_id,
        service=service,
        version=version,
        properties=_run_properties(run, common, ci, lookup),
        children=run_body(
            run,
            heading_text=text,
            commit=run.commit or ci.get("commit"),
            ci_url=run.ci_url or ci.get("ci_url"),
            mix=_mix(run),
            verdict_of=_part_verdict,
        ),
        rows=tuple(rows),
    )
