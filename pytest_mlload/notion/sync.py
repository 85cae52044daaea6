"""Send a :class:`~pytest_mlload.notion.payload.RunPayload` to Notion, idempotently.

1. Each database id is resolved to its data source (``databases.retrieve`` ->
   ``data_sources``; the first one) and its schema checked (or, with ``init``, completed).
2. The run page is looked up by ``Run ID`` (``data_sources.query``): updated (properties,
   body replaced) when found, else created with a ``data_source_id`` parent.
3. The run's endpoint rows are looked up by ``Run ID`` and matched on ``Row ID``: each is
   updated or created, related to the run page; rows of this run that the payload no
   longer has go to the trash.

A create that failed ambiguously (timeout, 5xx: it may have happened) is followed by a
new look-up, never by a blind second create; if duplicates exist anyway (a write that
landed after the look-up), the oldest page is kept and the others trashed on the next
sync. So syncing a run any number of times leaves one run page and one row per endpoint.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_mlload.errors import NotionError
from pytest_mlload.notion.payload import RunPayload
from pytest_mlload.notion.schema import (
    ENDPOINT_PROPERTIES,
    RUN_PROPERTIES,
    TITLE,
    check_schema,
    init_properties,
    title_name,
)
from pytest_mlload.notion.settings import NotionSettings
from pytest_mlload.notion.transport import AmbiguousWrite, NotionApi

__all__ = ["SyncOutcome", "send_payload"]

CHILDREN_MAX = 100  # blocks per request


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncOutcome:
    """What one sync did; ``requests`` counts every HTTP request sent (retries included)."""

    run_id: str
    page_id: str
    url: str
    created: bool
    rows_created: int
    rows_updated: int
    rows_trashed: int
    duplicates_trashed: int
    initialised: tuple[str, ...]
    requests: int
    retries: int


@dataclass(frozen=True, slots=True)
class _Source:
    label: str
    id: str
    title: str  # the name of its title property


@dataclass(slots=True)
class _Counts:
    created: int = 0
    updated: int = 0
    trashed: int = 0
    duplicates: int = 0


def _plain(page: Mapping[str, Any], name: str) -> str:
    prop = (page.get("properties") or {}).get(name) or {}
    parts = prop.get(prop.get("type", ""), []) or []
    return "".join(p.get("plain_text") or p.get("text", {}).get("content", "") for p in parts)


def _resolve(api: NotionApi, database_id: str, label: str) -> dict[str, Any]:
    db = api.call(f"retrieve the {label}", "databases.retrieve", database_id=database_id)
    sources = db.get("data_sources") or []
    if not sources:
        raise NotionError(
            f"Notion: the {label} {database_id} has no data source: is it a database that "
            f"the integration can read (Notion-Version 2025-09-03)?"
        )
    ds_id = sources[0]["id"]
    return dict(
        api.call(
            f"retrieve the {label}'s data source", "data_sources.retrieve", data_source_id=ds_id
        )
    )


def prepare(
    api: NotionApi, settings: NotionSettings, *, init: bool
) -> tuple[_Source, _Source, tuple[str, ...]]:
    """Resolve both data sources and check (or with ``init`` complete) their schemas."""
    runs_label = "test-results database (NOTION_TEST_RESULTS_DATABASE_ID)"
    eps_label = "endpoint database (NOTION_ENDPOINT_DATABASE_ID)"
    runs = _resolve(api, settings.runs_database_id, runs_label)
    eps = _resolve(api, settings.endpoints_database_id, eps_label)
    added: list[str] = []
    if init:
        for label, wanted, ds in (
            (runs_label, RUN_PROPERTIES, runs),
            (eps_label, ENDPOINT_PROPERTIES, eps),
        ):
            props = init_properties(wanted, ds, runs["id"])
            if props:
                new = api.call(
                    f"add properties to the {label}",
                    "data_sources.update",
                    data_source_id=ds["id"],
                    properties=props,
                )
                ds["properties"] = new.get("properties") or {**ds["properties"], **props}
                added += [f"{label.split(' (')[0]}: {name}" for name in props]
    check_schema(
        {runs_label: (RUN_PROPERTIES, runs), eps_label: (ENDPOINT_PROPERTIES, eps)},
        init_hint="--mlload-notion-init (or python -m pytest_mlload.notion_sync --init)",
    )
    return (
        _Source(runs_label, runs["id"], title_name(runs)),
        _Source(eps_label, eps["id"], title_name(eps)),
        tuple(added),
    )


def _find(api: NotionApi, source: _Source, prop: str, value: str) -> list[dict[str, Any]]:
    """Pages of ``source`` whose rich-text ``prop`` equals ``value``, oldest first."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "filter": {"property": prop, "rich_text": {"equals": value}},
            "page_size": 100,
        }
        if cursor:
            kwargs["start_cursor"] = cursor
        page = api.call(
            f"query the {source.label}", "data_sources.query", data_source_id=source.id, **kwargs
        )
        out += [p for p in page.get("results") or () if not p.get("in_trash")]
        cursor = page.get("next_cursor") if page.get("has_more") else None
        if not cursor:
            return sorted(out, key=lambda p: (p.get("created_time") or "", p["id"]))


def _properties(props: Mapping[str, Any], source: _Source) -> dict[str, Any]:
    return {(source.title if k == TITLE else k): v for k, v in props.items()}


def _chunks(blocks: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(blocks), CHILDREN_MAX):
        yield blocks[start : start + CHILDREN_MAX]


def _write_body(
    api: NotionApi, page_id: str, blocks: list[dict[str, Any]], *, present: int
) -> None:
    """Append ``blocks[present:]`` (the first ``present`` are on the page already) in chunks;
    after an ambiguous append (it may have landed), erase the body and write all of it."""
    attempt = 0
    while True:
        try:
            for chunk in _chunks(blocks[present:]):
                api.call(
                    "append the run page body",
                    "blocks.children.append",
                    write_once=True,
                    block_id=page_id,
                    children=chunk,
                )
            return
        except AmbiguousWrite as exc:
            api.pause(attempt, "append the run page body", f"{exc}; rewriting the body")
            attempt, present = attempt + 1, 0
            api.call("erase the run page body", "pages.update", page_id=page_id, erase_content=True)


def _trash(api: NotionApi, pages: list[dict[str, Any]], what: str) -> int:
    for p in pages:
        api.call(f"trash a duplicate {what}", "pages.update", page_id=p["id"], in_trash=True)
    return len(pages)


def _upsert(
    api: NotionApi,
    source: _Source,
    key: tuple[str, str],
    properties: dict[str, Any],
    counts: _Counts,
    *,
    found: list[dict[str, Any]] | None = None,
    children: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Update the page whose ``key`` property matches, or create it; (page, created)."""
    prop, value = key
    what = f"{prop} {value}"
    attempt = 0
    while True:
        pages = _find(api, source, prop, value) if found is None else found
        found = None  # a retry looks again
        if pages:
            counts.duplicates += _trash(api, pages[1:], what)
            erase = {"erase_content": True} if children is not None else {}  # body rewritten
            page = api.call(
                f"update {what}",
                "pages.update",
                page_id=pages[0]["id"],
                properties=properties,
                **erase,
            )
            return {**pages[0], **(page or {})}, False
        body: dict[str, Any] = {
            "parent": {"type": "data_source_id", "data_source_id": source.id},
            "properties": properties,
        }
        if children is not None:
            body["children"] = children[:CHILDREN_MAX]
        try:
            return api.call(f"create {what}", "pages.create", write_once=True, **body), True
        except AmbiguousWrite as exc:
            api.pause(attempt, f"create {what}", f"{exc}; looking again before a new create")
            attempt += 1


def send_payload(
    payload: RunPayload,
    settings: NotionSettings,
    *,
    init: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> SyncOutcome:
    """Write ``payload`` (run page + endpoint rows) within ``settings.deadline_s``.

    Raises :class:`NotionError` (its message free of the token) when it cannot.
    """
    api = NotionApi(settings, clock=clock, sleep=sleep, rng=rng)
    try:
        runs, eps, added = prepare(api, settings, init=init)
        counts = _Counts()
        run_props = _properties(payload.properties, runs)
        page, created = _upsert(
            api, runs, ("Run ID", payload.run_id), run_props, counts, children=payload.children
        )
        # created: the first 100 blocks came with the page; updated: the body was erased
        present = min(len(payload.children), CHILDREN_MAX) if created else 0
        _write_body(api, page["id"], payload.children, present=present)
        rows = _send_rows(api, eps, payload, page["id"])
        return SyncOutcome(
            run_id=payload.run_id,
            page_id=page["id"],
            url=str(page.get("url") or ""),
            created=created,
            rows_created=rows.created,
            rows_updated=rows.updated,
            rows_trashed=rows.trashed,
            duplicates_trashed=counts.duplicates + rows.duplicates,
            initialised=added,
            requests=len(api.sent_at),
            retries=api.retries,
        )
    finally:
        api.close()


def _send_rows(api: NotionApi, eps: _Source, payload: RunPayload, page_id: str) -> _Counts:
    counts = _Counts()
    existing: dict[str, list[dict[str, Any]]] = {}
    for p in _find(api, eps, "Run ID", payload.run_id):
        existing.setdefault(_plain(p, "Row ID"), []).append(p)
    for row in payload.rows:
        props = _properties(row.properties, eps)
        props["Test Run"] = {"relation": [{"id": page_id}]}
        _, created = _upsert(
            api, eps, ("Row ID", row.row_id), props, counts, found=existing.pop(row.row_id, [])
        )
        counts.created += created
        counts.updated += not created
    stale = [p for pages in existing.values() for p in pages]
    for p in stale:
        api.call(
            "trash a row the run no longer has", "pages.update", page_id=p["id"], in_trash=True
        )
    counts.trashed = len(stale)
    return counts
