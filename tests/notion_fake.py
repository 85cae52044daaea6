"""A local Notion API (Notion-Version 2025-09-03) for the sync tests: real HTTP on 127.0.0.1.

It speaks the public API's shapes for what the sync uses: ``GET /v1/databases/{id}`` (with
``data_sources``), ``GET|PATCH /v1/data_sources/{id}``, ``POST /v1/data_sources/{id}/query``
(rich_text / select equality filters, ``and``, pagination), ``POST /v1/pages``,
``GET|PATCH /v1/pages/{id}`` (``erase_content``, ``in_trash``) and
``PATCH /v1/blocks/{id}/children``; errors use Notion's body
``{"object": "error", "status", "code", "message"}``. It checks the bearer token and the
Notion-Version header, rejects properties the data source lacks (as Notion does), and
``database_id`` parents (replaced by ``data_source_id`` in 2025-09-03).

Faults are injected with :meth:`FakeNotion.inject`: an error before the request is done,
an error *after* it is done (the ambiguous case: Notion did the write, the client sees a
5xx), or a slow answer after the write (the client times out). Every request is recorded.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSION = "2025-09-03"
_CODES = {
    400: "validation_error",
    401: "unauthorized",
    404: "object_not_found",
    409: "conflict_error",
    429: "rate_limited",
    500: "internal_server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
    529: "service_overload",
}


class ApiError(Exception):
    """An error answer in Notion's format."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code or _CODES[status], message


@dataclass
class Fault:
    """``count`` requests matching ``method`` and ``path`` (a regex) answer ``status``.

    ``after``: do the request first, then answer the error (or, with ``delay_s`` and no
    status, answer it late). ``retry_after`` sets the Retry-After header.
    """

    method: str
    path: str
    status: int | None = None
    count: int = 1
    after: bool = False
    delay_s: float = 0.0
    retry_after: str | None = None
    message: str = "injected fault"

    def matches(self, method: str, path: str) -> bool:
        return self.count > 0 and self.method in ("*", method) and bool(re.search(self.path, path))


@dataclass
class Recorded:
    method: str
    path: str
    body: Any
    at: float
    status: int = 0


@dataclass
class _State:
    databases: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seq: int = 0


def _new_id() -> str:
    return str(uuid.uuid4())


def _plain(rich: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rich or ():
        content = (r.get("text") or {}).get("content", "")
        if len(content) > 2000:
            raise ApiError(400, "body failed validation: text.content.length should be ≤ 2000")
        out.append({**r, "type": "text", "plain_text": content, "annotations": {}})
    return out


class FakeNotion:
    """The fake API server; use as a context manager (``with FakeNotion(token) as fake``)."""

    def __init__(self, token: str, *, echo_token_in_errors: bool = False) -> None:
        self.token = token
        self.echo = echo_token_in_errors  # a careless server: errors quote the header
        self.state = _State()
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.runs_db = ""  # the two databases of the sync, once add_sync_databases() ran
        self.eps_db = ""

    def add_sync_databases(self) -> None:
        """The test-results and endpoint databases, with only their title properties."""
        self.runs_db = self.add_database("ML Load Test Results")
        self.eps_db = self.add_database("ML Endpoint Statistics")

    # -- setup ----------------------------------------------------------------------------
    def add_database(self, title: str, properties: dict[str, str] | None = None) -> str:
        """A database with one data source whose properties are ``{name: type}`` (a title
        property "Name" is always there); returns the database id."""
        db_id, ds_id = _new_id(), _new_id()
        props = {"Name": "title", **(properties or {})}
        with self.lock:
            self.state.databases[db_id] = {"title": title, "sources": [ds_id]}
            self.state.sources[ds_id] = {
                "title": title,
                "database_id": db_id,
                "properties": {
                    n: {"id": _new_id()[:4], "name": n, "type": t, t: {}} for n, t in props.items()
                },
            }
        return db_id

    def source_of(self, db_id: str) -> str:
        return str(self.state.databases[db_id]["sources"][0])

    def inject(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def live_pages(self, db_id: str) -> list[dict[str, Any]]:
        ds = self.source_of(db_id)
        with self.lock:
            return [p for p in self.state.pages.values() if p["ds"] == ds and not p["in_trash"]]

    def text(self, page: dict[str, Any], name: str) -> str:
        prop = page["properties"].get(name) or {}
        return "".join(r["plain_text"] for r in prop.get(prop.get("type", ""), []) or [])

    # -- server ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> FakeNotion:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else delayed ACKs stall each answer ~40 ms

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                fake._handle(self)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        path = h.path.split("?", 1)[0]
        rec = Recorded(h.command, path, body, time.monotonic())
        with self.lock:
            self.requests.append(rec)
            fault = next((f for f in self.faults if f.matches(h.command, path)), None)
            if fault:
                fault.count -= 1
        status, answer, headers = 200, None, {}
        try:
            if fault and not fault.after and fault.status:
                raise ApiError(fault.status, fault.message)
            self._check_headers(h)
            with self.lock:
                answer = self._route(h.command, path, body)
            if fault and fault.after:
                if fault.delay_s:
                    time.sleep(fault.delay_s)  # a slow answer: the write is already done
                if fault.status:
                    raise ApiError(fault.status, fault.message)
        except ApiError as err:
            status = err.status
            answer = {
                "object": "error",
                "status": err.status,
                "code": err.code,
                "message": err.message,
                "request_id": _new_id(),
            }
            if fault and fault.retry_after is not None and err.status == fault.status:
                headers["Retry-After"] = fault.retry_after
        rec.status = status
        data = json.dumps(answer).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _check_headers(self, h: BaseHTTPRequestHandler) -> None:
        auth = h.headers.get("Authorization") or ""
        if auth != f"Bearer {self.token}":
            quoted = f" (got {auth!r})" if self.echo else ""
            raise ApiError(401, f"API token is invalid.{quoted}")
        if h.headers.get("Notion-Version") != VERSION:
            raise ApiError(
                400, f"Notion-Version {h.headers.get('Notion-Version')} unsupported here"
            )

    # -- API ------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: Any) -> Any:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        match (method, parts):
            case ("GET", ["databases", db_id]):
                return self._database(db_id)
            case ("GET", ["data_sources", ds_id]):
                return self._source(ds_id)
            case ("PATCH", ["data_sources", ds_id]):
                return self._update_source(ds_id, body)
            case ("POST", ["data_sources", ds_id, "query"]):
                return self._query(ds_id, body)
            case ("POST", ["pages"]):
                return self._create_page(body)
            case ("GET", ["pages", page_id]):
                return self._page(page_id)
            case ("PATCH", ["pages", page_id]):
                return self._update_page(page_id, body)
            case ("PATCH", ["blocks", block_id, "children"]):
                return self._append(block_id, body)
        raise ApiError(400, f"Invalid request URL: {method} {path}", "invalid_request_url")

    def _database(self, db_id: str) -> dict[str, Any]:
        db = self.state.databases.get(db_id)
        if db is None:
            raise ApiError(404, f"Could not find database with ID: {db_id}.")
        return {
            "object": "database",
            "id": db_id,
            "title": [
                {"type": "text", "text": {"content": db["title"]}, "plain_text": db["title"]}
            ],
            "data_sources": [
                {"id": ds, "name": self.state.sources[ds]["title"]} for ds in db["sources"]
            ],
        }

    def _source(self, ds_id: str) -> dict[str, Any]:
        ds = self.state.sources.get(ds_id)
        if ds is None:
            raise ApiError(404, f"Could not find data source with ID: {ds_id}.")
        return {
            "object": "data_source",
            "id": ds_id,
            "parent": {"type": "database_id", "database_id": ds["database_id"]},
            "title": [
                {"type": "text", "text": {"content": ds["title"]}, "plain_text": ds["title"]}
            ],
            "properties": json.loads(json.dumps(ds["properties"])),
        }

    def _update_source(self, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.state.sources.get(ds_id)
        if ds is None:
            raise ApiError(404, f"Could not find data source with ID: {ds_id}.")
        for name, config in (body.get("properties") or {}).items():
            if config is None:
                ds["properties"].pop(name, None)
                continue
            (kind, cfg), *_ = config.items()
            if kind == "relation" and cfg.get("data_source_id") not in self.state.sources:
                raise ApiError(400, f"{name}: relation data_source_id does not exist")
            ds["properties"][name] = {"id": _new_id()[:4], "name": name, "type": kind, kind: cfg}
        return self._source(ds_id)

    def _value(self, kind: str, value: dict[str, Any], name: str) -> Any:
        if kind not in value:
            raise ApiError(400, f"{name} is expected to be {kind}.")
        v = value[kind]
        if kind in ("title", "rich_text"):
            return _plain(v)
        if kind == "select" and v is not None:
            if "," in v["name"]:
                raise ApiError(400, f"Invalid select option, commas not allowed: {v['name']}")
            return {"id": v["name"][:4], "name": v["name"], "color": "default"}
        if kind == "relation":
            for ref in v:
                if ref["id"] not in self.state.pages:
                    raise ApiError(400, f"{name}: related page {ref['id']} does not exist")
            return [{"id": ref["id"]} for ref in v]
        if kind == "number" and v is not None and not isinstance(v, int | float):
            raise ApiError(400, f"{name} is expected to be number.")
        return v

    def _set_properties(self, page: dict[str, Any], props: dict[str, Any]) -> None:
        schema = self.state.sources[page["ds"]]["properties"]
        for name, value in (props or {}).items():
            if name not in schema:
                raise ApiError(400, f"{name} is not a property that exists.")
            kind = schema[name]["type"]
            page["properties"][name] = {
                "id": schema[name]["id"],
                "type": kind,
                kind: self._value(kind, value, name),
            }

    def _check_children(self, children: list[Any]) -> None:
        if len(children) > 100:
            raise ApiError(400, "body failed validation: body.children.length should be ≤ 100")
        for block in children:
            kind = block.get("type")
            inner = (block.get(kind) or {}).get("children") or []
            if len(inner) > 100:
                raise ApiError(400, f"body failed validation: {kind}.children.length ≤ 100")

    def _create_page(self, body: dict[str, Any]) -> dict[str, Any]:
        parent = body.get("parent") or {}
        if parent.get("type") != "data_source_id":
            raise ApiError(400, "parent must be a data_source_id with Notion-Version 2025-09-03")
        ds = parent.get("data_source_id")
        if ds not in self.state.sources:
            raise ApiError(404, f"Could not find data source with ID: {ds}.")
        children = body.get("children") or []
        self._check_children(children)
        self.state.seq += 1
        page_id = _new_id()
        page = {
            "id": page_id,
            "ds": ds,
            "in_trash": False,
            "properties": {},
            "created_time": f"2026-12-02T00:00:{self.state.seq:06d}Z",
        }
        self._set_properties(page, body.get("properties") or {})
        self.state.pages[page_id] = page
        self.state.blocks[page_id] = list(children)
        return self._page(page_id)

    def _page(self, page_id: str) -> dict[str, Any]:
        page = self.state.pages.get(page_id)
        if page is None:
            raise ApiError(404, f"Could not find page with ID: {page_id}.")
        ds = page["ds"]
        return {
            "object": "page",
            "id": page_id,
            "created_time": page["created_time"],
            "last_edited_time": page["created_time"],
            "in_trash": page["in_trash"],
            "parent": {
                "type": "data_source_id",
                "data_source_id": ds,
                "database_id": self.state.sources[ds]["database_id"],
            },
            "properties": json.loads(json.dumps(page["properties"])),
            "url": f"https://www.notion.so/{page_id.replace('-', '')}",
        }

    def _update_page(self, page_id: str, body: dict[str, Any]) -> dict[str, Any]:
        page = self.state.pages.get(page_id)
        if page is None:
            raise ApiError(404, f"Could not find page with ID: {page_id}.")
        if "in_trash" in body:
            page["in_trash"] = bool(body["in_trash"])
        if body.get("erase_content"):
            self.state.blocks[page_id] = []
        self._set_properties(page, body.get("properties") or {})
        return self._page(page_id)

    def _append(self, block_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if block_id not in self.state.blocks:
            raise ApiError(404, f"Could not find block with ID: {block_id}.")
        children = body.get("children") or []
        self._check_children(children)
        self.state.blocks[block_id].extend(children)
        return {"object": "list", "results": children, "has_more": False, "next_cursor": None}

    def _matches(self, page: dict[str, Any], flt: dict[str, Any] | None) -> bool:
        if not flt:
            return True
        if "and" in flt:
            return all(self._matches(page, f) for f in flt["and"])
        name = flt["property"]
        prop = page["properties"].get(name)
        for kind in ("rich_text", "title"):
            if kind in flt:
                return self.text(page, name) == flt[kind]["equals"] if prop else False
        if "select" in flt:
            return bool(
                prop and prop["select"] and prop["select"]["name"] == flt["select"]["equals"]
            )
        raise ApiError(400, f"filter not supported by the fake: {flt}")

    def _query(self, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if ds_id not in self.state.sources:
            raise ApiError(404, f"Could not find data source with ID: {ds_id}.")
        size = int(body.get("page_size") or 100)
        if size > 100:
            raise ApiError(400, "body failed validation: body.page_size should be ≤ 100")
        hits = [
            p
            for p in self.state.pages.values()
            if p["ds"] == ds_id and not p["in_trash"] and self._matches(p, body.get("filter"))
        ]
        hits.sort(key=lambda p: p["created_time"], reverse=True)  # newest first, like Notion
        start = int(body.get("start_cursor") or 0)
        chunk = hits[start : start + size]
        more = start + size < len(hits)
        return {
            "object": "list",
            "results": [self._page(p["id"]) for p in chunk],
            "has_more": more,
            "next_cursor": str(start + size) if more else None,
            "type": "page_or_data_source",
            "page_or_data_source": {},
        }
