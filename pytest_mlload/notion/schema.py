"""The two data sources' properties: what the sync writes, and what ``init`` adds.

Names follow ml-loadtest's databases ("ML Load Test Results", "ML Endpoint Statistics"), so
an existing workspace keeps its columns and charts; the figures a chart needs (capacity,
P99, baselines, change % with its interval) are number properties and the verdict a select.
The title property keeps whatever name the data source gives it ("Name" by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytest_mlload.errors import NotionSchemaError

__all__ = [
    "ENDPOINT_PROPERTIES",
    "RUN_PROPERTIES",
    "TITLE",
    "check_schema",
    "init_properties",
    "title_name",
]

TITLE = "Name"  # stands for the data source's title property, whatever it is called

_NUM = "number"
# Figures shared by the run page (the mix) and each endpoint row.
_FIGURES = {
    "RPS": _NUM,
    "P99 (ms)": _NUM,
    "RPS Baseline": _NUM,
    "P99 Baseline (ms)": _NUM,
    "P99 at Baseline Load (ms)": _NUM,
    "RPS Change (%)": _NUM,
    "RPS Change Low (%)": _NUM,
    "RPS Change High (%)": _NUM,
    "P99 Change (%)": _NUM,
    "P99 Change Low (%)": _NUM,
    "P99 Change High (%)": _NUM,
}

RUN_PROPERTIES: dict[str, str] = {
    TITLE: "title",
    "Run ID": "rich_text",
    "Service Name": "select",
    "Service Version": "rich_text",
    "Date": "date",
    "Verdict": "select",
    "Tests": _NUM,
    "Failed Tests": _NUM,
    "Verdicts": "rich_text",
    **_FIGURES,
    "Rate Limit (req/s)": _NUM,
    "Commit": "rich_text",
    "CI Run": "url",
}

ENDPOINT_PROPERTIES: dict[str, str] = {
    TITLE: "title",
    "Row ID": "rich_text",
    "Run ID": "rich_text",
    "Test Run": "relation",
    "Endpoint": "select",
    "Test": "rich_text",
    "Service Name": "select",
    "Service Version": "rich_text",
    "Date": "date",
    "Verdict": "select",
    **_FIGURES,
    "Users": _NUM,
    "Errors (%)": _NUM,
    "Standard Limit": _NUM,
    "Mix RPS": _NUM,
    "Mix P99 (ms)": _NUM,
}


def title_name(data_source: Mapping[str, Any]) -> str:
    """The name of the data source's title property."""
    props = data_source.get("properties") or {}
    return next((n for n, p in props.items() if p.get("type") == "title"), TITLE)


def _config(kind: str, runs_data_source_id: str) -> dict[str, Any]:
    if kind == "relation":
        return {
            "relation": {
                "data_source_id": runs_data_source_id,
                "type": "single_property",
                "single_property": {},
            }
        }
    if kind == _NUM:
        return {"number": {"format": "number"}}
    return {kind: {}}


def _differences(
    wanted: Mapping[str, str], data_source: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    props = data_source.get("properties") or {}
    missing, mistyped = [], []
    for name, kind in wanted.items():
        if name == TITLE:
            continue  # every data source has exactly one title property
        have = props.get(name)
        if have is None:
            missing.append(name)
        elif have.get("type") != kind:
            mistyped.append(f"{name} ({have.get('type')}, expected {kind})")
    return missing, mistyped


def check_schema(
    labelled: Mapping[str, tuple[Mapping[str, str], Mapping[str, Any]]], *, init_hint: str
) -> None:
    """Raise one :class:`NotionSchemaError` naming every missing or mistyped property.

    ``labelled`` maps a label ("test-results database") to (wanted properties, the
    retrieved data source).
    """
    lines, all_missing, all_mistyped = [], [], []
    for label, (wanted, ds) in labelled.items():
        missing, mistyped = _differences(wanted, ds)
        if missing:
            lines.append(f"{label} lacks {', '.join(missing)}")
        if mistyped:
            lines.append(f"{label} has {', '.join(mistyped)}")
        all_missing += [f"{label}: {m}" for m in missing]
        all_mistyped += [f"{label}: {m}" for m in mistyped]
    if not lines:
        return
    fix = []
    if all_missing:
        fix.append(f"add the missing properties with {init_hint}")
    if all_mistyped:
        fix.append("rename or delete the mistyped columns in Notion (init never changes a type)")
    raise NotionSchemaError(
        "Notion schema mismatch: " + "; ".join(lines) + "; " + " and ".join(fix),
        missing=tuple(all_missing),
        mistyped=tuple(all_mistyped),
    )


def init_properties(
    wanted: Mapping[str, str], data_source: Mapping[str, Any], runs_data_source_id: str
) -> dict[str, Any]:
    """The ``data_sources.update`` properties that add what ``data_source`` lacks."""
    missing, _ = _differences(wanted, data_source)
    return {name: _config(wanted[name], runs_data_source_id) for name in missing}
