"""The run page's body as Notion blocks: summary, verdicts, a table per mode, rate limits,
HPA recommendations. Plain data out; Notion's limits (2 000 characters per text, 100
children per block) are respected here."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytest_mlload.notion.report_input import PartInput, RunInput, TestInput

__all__ = ["heading", "paragraph", "rich_text", "run_body", "table"]

_TEXT_MAX = 2000
_ROWS_MAX = 99  # + the header row
_MODES = ("individual", "production", "exploration", "spike")


def rich_text(text: str, link: str | None = None) -> list[dict[str, Any]]:
    """A rich-text array holding ``text`` (cut to Notion's 2 000 characters); empty for ""."""
    if not text:
        return []
    item: dict[str, Any] = {"type": "text", "text": {"content": text[:_TEXT_MAX]}}
    if link:
        item["text"]["link"] = {"url": link}
    return [item]


def heading(text: str, level: int = 2) -> dict[str, Any]:
    """A heading block."""
    kind = f"heading_{level}"
    return {"object": "block", "type": kind, kind: {"rich_text": rich_text(text)}}


def paragraph(text: str, link: str | None = None) -> dict[str, Any]:
    """A paragraph block (the whole text linked when ``link`` is given)."""
    return {
        "object": "block",
        "type": "paragraph",
        "paragraph": {"rich_text": rich_text(text, link)},
    }


def table(header: list[str], rows: list[list[str]]) -> list[dict[str, Any]]:
    """Table blocks with a header row, split so none holds more than 100 rows."""
    out = []
    for start in range(0, max(len(rows), 1), _ROWS_MAX):
        chunk = [header, *rows[start : start + _ROWS_MAX]]
        out.append(
            {
                "object": "block",
                "type": "table",
                "table": {
                    "table_width": len(header),
                    "has_column_header": True,
                    "has_row_header": False,
                    "children": [
                        {
                            "object": "block",
                            "type": "table_row",
                            "table_row": {"cells": [rich_text(c) for c in row]},
                        }
                        for row in chunk
                    ],
                },
            }
        )
    return out


def _f(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _change(test: TestInput, part: str) -> str:
    v = next(
        (v for v in test.verdicts if v.part == part and v.metric in ("capacity", "goodput")), None
    )
    if v is None or v.change_ratio is None:
        return "-"
    text = f"{v.change_ratio * 100:+.1f} %"
    if v.low_ratio is not None and v.high_ratio is not None:
        text += f" [{v.low_ratio * 100:+.1f}, {v.high_ratio * 100:+.1f}]"
    return text


def _label(test: TestInput, p: PartInput) -> str:
    return p.part or "-"


def _mode_tables(run: RunInput, verdict_of: Callable[[TestInput, str], str]) -> list[Any]:
    blocks: list[Any] = []
    header = ["Test", "Part", "Capacity req/s", "P99 ms", "Users", "Errors", "Change", "Verdict"]
    for mode in _MODES:
        rows = [
            [
                t.key,
                _label(t, p),
                _f(p.capacity_rps),
                _f(p.p99_ms),
                "-" if p.users is None else str(p.users),
                "-" if p.error_ratio is None else f"{p.error_ratio:.2%}",
                _change(t, p.part),
                verdict_of(t, p.part),
            ]
            for t in run.tests
            for p in t.parts
            if p.mode == mode
        ]
        if rows:
            blocks += [heading(f"{mode.capitalize()} results", 3), *table(header, rows)]
    return blocks


def _limits_and_hpa(run: RunInput) -> list[Any]:
    blocks: list[Any] = []
    limits = [
        [t.key, _label(t, p), _f(p.rate_limit_rps)]
        for t in run.tests
        for p in t.parts
        if p.rate_limit_rps is not None
    ]
    if limits:
        blocks += [
            heading("Rate limit recommendations"),
            paragraph("Recommended limit = measured capacity x the safety factor."),
            *table(["Test", "Part", "Limit req/s"], limits),
        ]
    hpa = [
        [
            t.key,
            _label(t, p),
            h.key,
            h.priority or "-",
            _f(h.observed, ".3g"),
            _f(h.current, ".3g"),
            _f(h.recommended, ".3g"),
            h.note or "-",
        ]
        for t in run.tests
        for p in t.parts
        for h in p.hpa
    ]
    if hpa:
        header = ["Test", "Part", "Trigger", "Priority", "Observed", "Current", "Recommended"]
        blocks += [heading("HPA trigger recommendations"), *table([*header, "Note"], hpa)]
    return blocks


def run_body(
    run: RunInput,
    *,
    heading_text: str,
    commit: str | None,
    ci_url: str | None,
    mix: tuple[TestInput, PartInput] | None,
    verdict_of: Callable[[TestInput, str], str],
) -> list[dict[str, Any]]:
    """The run page's blocks (top level may exceed 100: the sender appends in chunks)."""
    blocks: list[Any] = [heading("Summary"), paragraph(heading_text)]
    if mix is not None:
        t, p = mix
        blocks.append(
            paragraph(
                f"Mix ({t.key} {p.part or ''}): capacity {_f(p.capacity_rps)} req/s at "
                f"P99 {_f(p.p99_ms)} ms, {verdict_of(t, p.part)}."
            )
        )
    if commit:
        blocks.append(paragraph(f"Commit {commit}"))
    if ci_url:
        blocks.append(paragraph("CI run", link=ci_url))
    blocks += [heading("Verdicts")]
    blocks += table(
        ["Test", "Verdict", "Message"], [[t.key, t.outcome, t.message[:500]] for t in run.tests]
    )
    blocks += _mode_tables(run, verdict_of)
    blocks += _limits_and_hpa(run)
    return blocks
