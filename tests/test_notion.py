"""Notion sync against a local Notion API (tests/notion_fake.py) with the real notion-client.

The report is built with the plugin's own records (no load). Retries run on a virtual clock:
every backoff and rate-limiter wait advances it instead of sleeping, so the tests assert on
the waits asked for (Retry-After honoured, deadline kept) without waiting for them.
"""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from notion_fake import FakeNotion, Fault
from plugin_support import converged_result

from pytest_mlload.errors import NotionError, NotionSchemaError
from pytest_mlload.gates.metrics import Verdict
from pytest_mlload.notion import (
    NotionSettings,
    RunPayload,
    payload_from_report,
    retry_pending,
    sync_or_keep,
)
from pytest_mlload.notion.report_input import runs_from_report
from pytest_mlload.notion.schema import ENDPOINT_PROPERTIES, RUN_PROPERTIES
from pytest_mlload.notion.sync import send_payload
from pytest_mlload.notion.transport import RateLimiter
from pytest_mlload.report import tables
from pytest_mlload.results import CapacityResult, EndpointResult, OpenLoopWindow, SpikeResult

TOKEN = "ntn_TESTSECRET_4f1c9a7e2b"


class VirtualClock:
    """A clock that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def _endpoint(name: str, cap: float, p99: float) -> EndpointResult:
    one: EndpointResult = converged_result(capacity_rps=cap, p99_ms=p99).endpoints["/v1/classify"]
    return replace(one, name=name)


def _result(
    name: str, cap: float, p99: float, endpoints: dict[str, EndpointResult], **typed: Any
) -> CapacityResult:
    base: CapacityResult = converged_result(capacity_rps=cap, p99_ms=p99)
    return replace(base, name=name, endpoints=endpoints, **typed)


def _window(rate: float, p99: float) -> OpenLoopWindow:
    return OpenLoopWindow(
        rate_rps=rate,
        sent_rps=rate,
        goodput_rps=rate,
        requests=int(rate * 5),
        failures=0,
        error_ratio=0.0,
        p50_ms=p99 / 2,
        p95_ms=p99 * 0.9,
        p99_ms=p99,
        p99_ci=None,
        dispatch_lag_p95_ms=1.0,
        duration_s=5.0,
    )


def _verdict(part: str, metric: str, verdict: str, base: float, seen: float) -> Verdict:
    change = seen / base - 1
    return Verdict(
        metric=metric,
        verdict=verdict,
        baseline=base,
        observed=seen,
        change=change,
        low=change - 0.03,
        high=change + 0.03,
        threshold=0.10,
        unit="req/s" if metric == "capacity" else "ms",
        message=f"{metric} of {part}",
        part=part,
    )


def make_report(n_endpoints: int = 2) -> dict[str, Any]:
    """The plugin's report: a multi-mode test (one regression) and a single-TaskSet test."""
    names = [f"/v1/ep{i}" for i in range(n_endpoints)]
    parts = [
        _result(
            f"individual {n}",
            100.0 + i,
            90.0,
            {n: _endpoint(n, 100.0 + i, 90.0)},
            rate_limit_rps=70.0 + i,
        )
        for i, n in enumerate(names)
    ]
    prod = _result(
        "production",
        180.0,
        110.0,
        {n: _endpoint(n, 180.0 / len(names), 105.0) for n in names},
        rate_limit_rps=126.0,
    )
    figures = SpikeResult(
        target_rps=300.0,
        base_rps=30.0,
        duration_s=5.0,
        pre=_window(30.0, 80.0),
        spike=_window(300.0, 300.0),
        recovery_s=1.5,
        recovery_limit_s=10.0,
        peak_workers=64,
    )
    spike = _result("spike", 150.0, 300.0, {}, spike=figures)
    multi = tables.TestRecord(
        nodeid="test_m.py::test_modes",
        key="test_m.py::test_modes",
        results=[*parts, prod, spike],
        outcome="regression",
        message="fell",
    )
    multi.verdicts = [
        _verdict(f"individual {names[0]}", "capacity", "regression", 140.0, 100.0),
        _verdict(f"individual {names[0]}", "p99", "pass", 88.0, 90.0),
        _verdict("production", "capacity", "pass", 182.0, 180.0),
    ]
    single = tables.TestRecord(
        nodeid="test_s.py::test_one",
        key="test_s.py::test_one",
        results=[
            _result(
                "test_s.py::test_one",
                200.0,
                100.0,
                {"/v1/classify": _endpoint("/v1/classify", 200.0, 100)},
            )
        ],
        outcome="pass",
    )
    single.verdicts = [_verdict("", "capacity", "pass", 198.0, 200.0)]
    report = tables.json_report(
        [multi, single], meta={"baseline": "b.yaml", "update_baseline": False}
    )
    report["generated_at"] = "2026-12-02T05:00:00Z"
    report["run_id"] = "run-0123456789abcdef"  # one session: the same id every time it is built
    return report


def expected_rows(report: dict[str, Any]) -> set[str]:
    run = runs_from_report(report)
    eps = {f"{run.run_id}|test_s.py::test_one|/v1/classify"}
    for t in report["tests"]:
        for r in t["results"]:
            if r["name"].startswith("individual "):
                eps.add(f"{run.run_id}|{t['key']}|{r['name'][len('individual ') :]}")
    return eps


@pytest.fixture
def fake() -> Any:
    with FakeNotion(TOKEN) as server:
        server.add_sync_databases()
        yield server


def settings_for(fake: FakeNotion, **kw: Any) -> NotionSettings:
    base = dict(
        token=TOKEN,
        runs_database_id=fake.runs_db,
        endpoints_database_id=fake.eps_db,
        base_url=fake.base_url,
        timeout_s=2.0,
    )
    return NotionSettings(**{**base, **kw})


def payload_of(report: dict[str, Any]) -> RunPayload:
    return payload_from_report(report, service="classifier", version="1.4.2", env={})[1]


def send(fake: FakeNotion, payload: RunPayload, clock: VirtualClock, **kw: Any) -> Any:
    init = kw.pop("init", True)
    return send_payload(
        payload,
        settings_for(fake, **kw),
        init=init,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )


def assert_exactly_once(
    fake: FakeNotion, report: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One run page and one row per expected endpoint: nothing lost, nothing doubled."""
    runs = fake.live_pages(fake.runs_db)
    assert len(runs) == 1, [fake.text(p, "Run ID") for p in runs]
    rows = fake.live_pages(fake.eps_db)
    ids = Counter(fake.text(p, "Row ID") for p in rows)
    assert set(ids) == expected_rows(report)
    assert max(ids.values()) == 1, ids
    assert all(p["properties"]["Test Run"]["relation"] == [{"id": runs[0]["id"]}] for p in rows)
    return runs[0], rows


def _num(page: dict[str, Any], name: str) -> Any:
    return page["properties"][name]["number"]


def _sel(page: dict[str, Any], name: str) -> Any:
    return page["properties"][name]["select"]["name"]


# -- schema -----------------------------------------------------------------------------


def test_missing_properties_are_one_error_naming_each_and_the_init_flag(fake: FakeNotion) -> None:
    clock = VirtualClock()
    with pytest.raises(NotionSchemaError) as err:
        send(fake, payload_of(make_report()), clock, init=False)
    text = str(err.value)
    assert "--mlload-notion-init" in text and "--init" in text
    for name in [*RUN_PROPERTIES, *ENDPOINT_PROPERTIES]:
        if name != "Name":
            assert name in text, name
    assert len(err.value.missing) == len(RUN_PROPERTIES) + len(ENDPOINT_PROPERTIES) - 2
    assert not fake.live_pages(fake.runs_db)  # nothing written before the schema is right


def test_a_mistyped_property_is_named_and_init_does_not_change_it(fake: FakeNotion) -> None:
    ds = fake.state.sources[fake.source_of(fake.runs_db)]
    ds["properties"]["RPS"] = {"id": "x", "name": "RPS", "type": "rich_text", "rich_text": {}}
    with pytest.raises(NotionSchemaError, match=r"RPS \(rich_text, expected number\)"):
        send(fake, payload_of(make_report()), VirtualClock())
    assert ds["properties"]["RPS"]["type"] == "rich_text"


def test_init_adds_properties_with_types_and_the_relation(fake: FakeNotion) -> None:
    outcome = send(fake, payload_of(make_report()), VirtualClock())
    runs = fake.state.sources[fake.source_of(fake.runs_db)]["properties"]
    eps = fake.state.sources[fake.source_of(fake.eps_db)]["properties"]
    assert {n: p["type"] for n, p in runs.items()} == RUN_PROPERTIES
    assert {n: p["type"] for n, p in eps.items()} == ENDPOINT_PROPERTIES
    assert eps["Test Run"]["relation"]["data_source_id"] == fake.source_of(fake.runs_db)
    assert len(outcome.initialised) == len(RUN_PROPERTIES) + len(ENDPOINT_PROPERTIES) - 2
    again = send(fake, payload_of(make_report()), VirtualClock())
    assert again.initialised == ()  # nothing left to add


# -- what is written --------------------------------------------------------------------


def test_run_page_and_rows_hold_the_figures_charts_need(fake: FakeNotion) -> None:
    report = make_report()
    clock = VirtualClock()
    outcome = send(fake, payload_of(report), clock)
    run, rows = assert_exactly_once(fake, report)
    assert outcome.created and outcome.rows_created == 3 and outcome.url.startswith("https://")
    import notion_client  # the fake answers pages.retrieve in the shape the client expects

    with notion_client.Client(auth=TOKEN, base_url=fake.base_url) as client:
        page: Any = client.pages.retrieve(page_id=outcome.page_id)
    assert page["url"] == outcome.url and page["parent"]["type"] == "data_source_id"
    # the run page: overall verdict, the mix (production) figures, its change and interval
    assert _sel(run, "Verdict") == "regression"
    assert _sel(run, "Service Name") == "classifier"
    assert fake.text(run, "Service Version") == "1.4.2"
    assert run["properties"]["Date"]["date"]["start"] == "2026-12-02T05:00:00Z"
    assert _num(run, "RPS") == 180.0 and _num(run, "P99 (ms)") == 110.0
    assert _num(run, "RPS Baseline") == 182.0
    assert _num(run, "RPS Change (%)") == pytest.approx(-1.1, abs=0.01)
    assert _num(run, "RPS Change Low (%)") == pytest.approx(-4.1, abs=0.01)
    assert _num(run, "Rate Limit (req/s)") == 126.0
    assert (_num(run, "Tests"), _num(run, "Failed Tests")) == (2, 1)
    # an endpoint row: solo capacity, baseline, change with interval, verdict, mix share
    by_ep = {_sel(p, "Endpoint"): p for p in rows}
    ep0 = by_ep["/v1/ep0"]
    assert _num(ep0, "RPS") == 100.0 and _num(ep0, "RPS Baseline") == 140.0
    assert _num(ep0, "RPS Change (%)") == pytest.approx(-28.57, abs=0.01)
    assert _num(ep0, "RPS Change High (%)") == pytest.approx(-25.57, abs=0.01)
    assert _num(ep0, "P99 Baseline (ms)") == 88.0 and _num(ep0, "P99 at Baseline Load (ms)") == 90
    assert _sel(ep0, "Verdict") == "regression" and _num(ep0, "Standard Limit") == 70.0
    assert _num(ep0, "Mix RPS") == 90.0 and _num(ep0, "Mix P99 (ms)") == 105.0
    assert _sel(by_ep["/v1/ep1"], "Verdict") == "regression"  # no gate of its own: the test's
    assert _sel(by_ep["/v1/classify"], "Verdict") == "pass"
    # the body: verdicts, one table per mode, rate limits
    body = fake.state.blocks[run["id"]]
    headings = [
        b[b["type"]]["rich_text"][0]["text"]["content"]
        for b in body
        if b["type"].startswith("heading")
    ]
    assert headings == [
        "Summary",
        "Verdicts",
        "Individual results",
        "Production results",
        "Spike results",
        "Rate limit recommendations",
    ]


def test_sync_twice_updates_the_same_pages_never_duplicates(fake: FakeNotion) -> None:
    report = make_report()
    first = send(fake, payload_of(report), VirtualClock())
    body = list(fake.state.blocks[first.page_id])
    second = send(fake, payload_of(report), VirtualClock())
    assert second.page_id == first.page_id and not second.created
    assert (second.rows_created, second.rows_updated) == (0, 3)
    assert_exactly_once(fake, report)
    assert fake.state.blocks[first.page_id] == body  # replaced, not appended twice


def test_a_duplicate_left_by_a_late_write_is_trashed_on_the_next_sync(fake: FakeNotion) -> None:
    report = make_report()
    payload = payload_of(report)
    send(fake, payload, VirtualClock())
    with fake.lock:  # a create that landed after our look-up: two pages for one row id
        row = fake.live_pages(fake.eps_db)[0]
        twin = json.loads(json.dumps(row))
        twin["id"], twin["created_time"] = "dup-1", "2026-12-02T00:01:00Z"
        fake.state.pages["dup-1"], fake.state.blocks["dup-1"] = twin, []
    outcome = send(fake, payload, VirtualClock())
    assert outcome.duplicates_trashed == 1
    assert fake.state.pages["dup-1"]["in_trash"]
    assert_exactly_once(fake, report)


def test_long_bodies_and_many_rows_go_in_chunks_of_100(fake: FakeNotion) -> None:
    report = make_report(n_endpoints=130)  # tables split at 99 rows, over 100 blocks
    payload = payload_of(report)
    tables_ = [b for b in payload.children if b["type"] == "table"]
    assert max(len(t["table"]["children"]) for t in tables_) == 100  # header + 99 rows
    payload = replace(payload, children=payload.children * 8)
    assert len(payload.children) > 100
    fake.inject(Fault("PATCH", r"/children$", status=504, after=True))  # appended, then 504
    outcome = send(fake, payload, VirtualClock())
    assert fake.faults[0].count == 0
    assert fake.state.blocks[outcome.page_id] == payload.children  # whole, once, in order
    assert_exactly_once(fake, report)
    queries = sum(r.path.endswith("/query") for r in fake.requests)
    again = send(fake, payload, VirtualClock(), init=False)  # 131 rows: 2 pages of results
    assert (again.rows_created, again.rows_updated) == (0, 131)
    assert sum(r.path.endswith("/query") for r in fake.requests) - queries == 3
    assert_exactly_once(fake, report)
    assert fake.state.blocks[outcome.page_id] == payload.children


# -- faults -----------------------------------------------------------------------------


def test_injected_faults_lose_nothing_duplicate_nothing_and_keep_verdicts(
    fake: FakeNotion,
) -> None:
    report = make_report(n_endpoints=4)
    payload = payload_of(report)
    fake.inject(
        Fault("GET", r"/databases/", status=500),
        Fault("GET", r"/data_sources/", status=529),
        Fault("POST", r"/query$", status=429, retry_after="2", count=2),
        Fault("POST", r"/pages$", status=502, after=True),  # created, but the answer is lost
        Fault("POST", r"/pages$", status=503),
        Fault("POST", r"/pages$", after=True, delay_s=0.5),  # created, answered too late
        Fault("PATCH", r"/children$", status=504, after=True),  # appended, then 504
        Fault("PATCH", r"/pages/", status=429, retry_after="1"),
        Fault("PATCH", r"/pages/", status=409),  # conflict_error: try again
    )
    clock = VirtualClock()
    outcome = send(fake, payload, clock, timeout_s=0.2)
    run, rows = assert_exactly_once(fake, report)
    assert outcome.retries >= 9
    assert all(f.count == 0 for f in fake.faults)  # every fault was met
    assert clock.sleeps.count(2.0) == 2 and 1.0 in clock.sleeps  # Retry-After honoured
    assert clock.now - 1000.0 < 60.0  # within the deadline
    assert fake.state.blocks[run["id"]] == payload.children  # the ambiguous append redone once
    verdicts = {fake.text(p, "Row ID").rsplit("|", 1)[1]: _sel(p, "Verdict") for p in rows}
    assert verdicts == {
        "/v1/classify": "pass",
        "/v1/ep0": "regression",
        "/v1/ep1": "regression",
        "/v1/ep2": "regression",
        "/v1/ep3": "regression",
    }
    assert _sel(run, "Verdict") == "regression"


def test_a_notion_that_stays_down_fails_within_the_deadline(fake: FakeNotion) -> None:
    fake.inject(Fault("*", r".", status=503, count=10_000))
    clock = VirtualClock()
    with pytest.raises(NotionError, match=r"HTTP 503.*gave up after \d+ attempt.*10 s deadline"):
        send(fake, payload_of(make_report()), clock, deadline_s=10.0, backoff_max_s=4.0)
    assert clock.now - 1000.0 <= 10.0
    assert 3 <= len(clock.sleeps) <= 10
    assert all(b >= a / 2 for a, b in zip(clock.sleeps, clock.sleeps[1:], strict=False))


def test_a_retry_after_past_the_deadline_gives_up_at_once(fake: FakeNotion) -> None:
    fake.inject(Fault("GET", r"/databases/", status=429, retry_after="120"))
    clock = VirtualClock()
    with pytest.raises(NotionError, match=r"next wait \(120.0 s\) would pass the 60 s deadline"):
        send(fake, payload_of(make_report()), clock)
    assert clock.sleeps == []


def test_client_errors_are_not_retried_and_say_the_way_out(fake: FakeNotion) -> None:
    clock = VirtualClock()
    with pytest.raises(NotionError, match=r"HTTP 404 object_not_found.*share both databases"):
        send(fake, payload_of(make_report()), clock, runs_database_id="no-such-db")
    assert clock.sleeps == [] and len(fake.requests) == 1


def test_rate_limiter_holds_three_requests_per_second_on_average() -> None:
    clock = VirtualClock()
    limiter = RateLimiter(3.0, 3, clock, clock.sleep)
    times = []
    for _ in range(60):
        limiter.acquire(deadline=float("inf"))
        times.append(clock.now)
    span = times[-1] - times[0]
    assert (len(times) - 3) / span == pytest.approx(3.0, rel=1e-9)  # after the first burst
    for window_s in (1.0, 10.0):  # any window holds at most the burst plus rate x length
        most = max(sum(t <= u < t + window_s for u in times) for t in times)
        assert most <= 3 + 3 * window_s
    steady = max(sum(t <= u < t + 10.0 - 1e-6 for u in times) for t in times[3:])
    assert steady == 30  # 3/s once the burst is spent


def test_a_whole_sync_stays_at_three_requests_per_second(fake: FakeNotion) -> None:
    report = make_report(n_endpoints=12)
    clock = VirtualClock()
    outcome = send(fake, payload_of(report), clock)
    assert outcome.requests == len(fake.requests) >= 20
    elapsed = clock.now - 1000.0
    assert (outcome.requests - 3) / elapsed <= 3.0 + 1e-9  # 3/s on average after one burst
    assert elapsed < 60.0


# -- failures never leak the token, and are kept for later -----------------------------


def test_pending_file_then_retry_pending_sends_it_once(fake: FakeNotion, tmp_path: Path) -> None:
    report = make_report()
    payload = payload_of(report)
    fake.inject(Fault("*", r".", status=500, count=10_000))
    clock = VirtualClock()
    attempt = sync_or_keep(
        payload,
        pending_dir=tmp_path,
        settings=settings_for(fake, deadline_s=5.0),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(2),
    )
    assert attempt.outcome is None and "HTTP 500" in attempt.error
    assert attempt.pending == tmp_path / f"{payload.run_id}.json"
    kept = json.loads(attempt.pending.read_text())
    assert kept["payload"] == payload.to_dict() and TOKEN not in attempt.pending.read_text()
    fake.faults.clear()
    env = {
        "NOTION_TOKEN": TOKEN,
        "NOTION_TEST_RESULTS_DATABASE_ID": fake.runs_db,
        "NOTION_ENDPOINT_DATABASE_ID": fake.eps_db,
        "NOTION_API_BASE_URL": fake.base_url,
    }
    sent = retry_pending(tmp_path, init=True, env=env, clock=clock, sleep=clock.sleep)
    assert [a.outcome is not None for a in sent] == [True]
    assert not list(tmp_path.iterdir())
    assert_exactly_once(fake, report)


def test_the_token_never_appears_in_errors_logs_or_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeNotion("the-right-token", echo_token_in_errors=True) as server:
        server.add_sync_databases()
        report = make_report()
        report["tests"][0]["message"] = f"a test that printed {TOKEN}"  # even from the report
        settings = settings_for(server)
        assert TOKEN not in repr(settings)
        attempt = sync_or_keep(payload_of(report), pending_dir=tmp_path, settings=settings)
        with pytest.raises(NotionError) as raised:
            send_payload(payload_of(report), settings)
    assert "HTTP 401 unauthorized" in attempt.error and "<NOTION_TOKEN>" in attempt.error
    assert attempt.pending is not None
    out = capsys.readouterr()
    traceback = str(raised.getrepr(chain=True))
    seen = [attempt.error, attempt.pending.read_text(), caplog.text, out.out, out.err, traceback]
    assert "<NOTION_TOKEN>" in str(raised.value)  # the server did quote it
    assert raised.value.__context__ is None  # notion-client's error (holding it) is dropped
    assert all(TOKEN not in s for s in seen)


def test_missing_environment_names_every_variable(tmp_path: Path) -> None:
    attempt = sync_or_keep(payload_of(make_report()), pending_dir=tmp_path, env={})
    for name in ("NOTION_TOKEN", "NOTION_TEST_RESULTS_DATABASE_ID", "NOTION_ENDPOINT_DATABASE_ID"):
        assert name in attempt.error
    assert attempt.pending is not None and attempt.pending.exists()


# -- the report -------------------------------------------------------------------------


def test_run_id_is_derived_stably_or_taken_from_the_report() -> None:
    report = make_report()
    del report["run_id"]  # the plugin's reports carry one; older reports did not
    a, b = runs_from_report(report), runs_from_report(json.loads(json.dumps(report)))
    assert a.run_id == b.run_id and a.run_id.startswith("mlload-") and a.run_id_derived
    later = runs_from_report({**report, "generated_at": "2026-12-02T06:00:00Z"})
    assert later.run_id != a.run_id
    given = runs_from_report({**report, "run_id": "gh-1234-1"})
    assert given.run_id == "gh-1234-1" and not given.run_id_derived


def test_schema_1_extra_and_schema_2_typed_fields_give_the_same_run() -> None:
    report = make_report()
    assert report["schema"] == 2
    old = json.loads(json.dumps(report))
    old["schema"] = 1
    for test in old["tests"]:
        for r in test["results"]:
            r["extra"] = {k: r.pop(k) for k in ("rate_limit_rps", "spike", "open_loop", "hpa")}
    assert runs_from_report(old).tests == runs_from_report(report).tests
    for test in report["tests"]:
        for r in test["results"]:
            r["hpa"] = {
                "triggers": [
                    {
                        "component": "api",
                        "name": "cpu",
                        "priority": "primary",
                        "observed": 0.8,
                        "current_threshold": 0.7,
                        "recommended": 0.6,
                        "unit": "ratio",
                        "note": "",
                    }
                ]
            }
    run = runs_from_report(report)
    parts = {p.part: p for p in run.tests[0].parts}
    assert parts["production"].rate_limit_rps == 126.0
    assert parts["spike"].spike_recovery_s == 1.5
    assert parts["production"].hpa[0].recommended == 0.6
    payload = payload_of(report)
    headings = [
        b[b["type"]]["rich_text"][0]["text"]["content"]
        for b in payload.children
        if b["type"].startswith("heading")
    ]
    assert "HPA trigger recommendations" in headings


def test_a_result_holding_its_parts_reads_like_one_result_per_part() -> None:
    report = make_report()
    per_part = runs_from_report(report).tests[0]
    multi = report["tests"][0]
    results = multi["results"]
    combined = {**results[0], "name": multi["key"], "parts": {r["name"]: r for r in results}}
    multi["results"] = [combined]
    assert runs_from_report(report).tests[0] == per_part


def test_a_baseline_file_fills_the_figures_no_gate_judged(tmp_path: Path) -> None:
    from pytest_mlload.baseline import BaselineEntry, BaselineStore
    from pytest_mlload.config import RunSettings
    from pytest_mlload.notion import baseline_lookup

    key = "test_s.py::test_one"
    BaselineStore(tmp_path / "b.yaml").update(
        {key: BaselineEntry.from_result(key, converged_result(160.0, p99_ms=95.0), RunSettings())}
    )
    report = make_report()
    report["tests"][1]["verdicts"] = []  # a recording session: no gate ran
    plain = payload_of(report)
    _, filled = payload_from_report(
        report, service="s", version="1", baseline=baseline_lookup(tmp_path / "b.yaml"), env={}
    )
    row = next(r.properties for r in filled.rows if r.endpoint == "/v1/classify")
    assert row["RPS Baseline"] == {"number": 160.0}
    assert row["P99 Baseline (ms)"] == {"number": 95.0}
    assert row["RPS Change (%)"] == {"number": 25.0}  # 200 vs 160, a point without interval
    assert row["RPS Change Low (%)"] == {"number": None}
    before = next(r.properties for r in plain.rows if r.endpoint == "/v1/classify")
    assert before["RPS Baseline"] == {"number": None}


def test_non_finite_figures_become_empty_numbers() -> None:
    report = make_report()
    report["tests"][1]["results"][0]["capacity_rps"] = float("inf")
    report["tests"][1]["results"][0]["p99_ms"] = float("nan")
    payload = payload_of(report)
    row = next(r.properties for r in payload.rows if r.endpoint == "/v1/classify")
    assert row["RPS"] == {"number": None} and row["P99 (ms)"] == {"number": None}
    json.dumps(payload.to_dict(), allow_nan=False)  # valid JSON for Notion


def test_not_a_report_is_a_clear_error() -> None:
    with pytest.raises(NotionError, match="not a pytest-mlload JSON report"):
        runs_from_report({"stats": []}, source="locust.json")
    with pytest.raises(NotionError, match="schema 9"):
        runs_from_report({"schema": 9, "tests": []})


def test_the_session_hook_warns_and_never_raises(tmp_path: Path) -> None:
    from pytest_mlload.notion.hooks import sync_session

    said: list[str] = []
    assert sync_session({}, target=None, init=False, rootdir=tmp_path, warn=said.append) is None
    assert said == []  # nothing asked, nothing done
    sync_session({"tests": "?"}, target="svc:1", init=False, rootdir=tmp_path, warn=said.append)
    assert len(said) == 1 and "not a pytest-mlload JSON report" in said[0]
    attempt = sync_session(
        make_report(), target="svc:1", init=False, rootdir=tmp_path, warn=said.append, env={}
    )
    assert attempt.outcome is None and "NOTION_TOKEN" in said[1]
    assert attempt.pending.parent == tmp_path / ".mlload" / "notion-pending"


def test_notion_client_is_imported_lazily_with_an_install_hint() -> None:
    code = (
        "import sys\n"
        "import pytest_mlload.notion_sync, pytest_mlload.notion.hooks, pytest_mlload.notion\n"
        "print(sorted(m for m in ('notion_client', 'httpx', 'scipy') if m in sys.modules))\n"
        "sys.modules['notion_client'] = None  # as if not installed\n"
        "from pytest_mlload.notion.transport import make_client\n"
        "from pytest_mlload.notion.settings import NotionSettings\n"
        "s = NotionSettings(token='t', runs_database_id='r', endpoints_database_id='e')\n"
        "try:\n    make_client(s, 1.0)\nexcept Exception as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == (
        "the Notion sync needs notion-client 2.6 or later: pip install 'notion-client>=2.6,<4'"
    )


# -- the command ------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith("NOTION_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest_mlload.notion_sync", *args],
        cwd=cwd,
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_sync_failure_keeps_the_payload_and_retry_pending_sends_it(
    fake: FakeNotion, tmp_path: Path
) -> None:
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(make_report()))
    env = {
        "NOTION_TEST_RESULTS_DATABASE_ID": fake.runs_db,
        "NOTION_ENDPOINT_DATABASE_ID": fake.eps_db,
        "NOTION_API_BASE_URL": fake.base_url,
    }
    args = ["classifier", "1.4.2", "--report-file", str(report_file), "--init"]
    bad = _cli(args, {**env, "NOTION_TOKEN": TOKEN + "x"}, tmp_path)
    assert bad.returncode == 0, bad.stderr  # a Notion failure does not break the job
    assert "warning: run run-0123456789abcdef" in bad.stderr and "HTTP 401" in bad.stderr
    pending = list((tmp_path / ".mlload" / "notion-pending").glob("*.json"))
    assert len(pending) == 1
    strict = _cli([*args, "--strict"], {**env, "NOTION_TOKEN": TOKEN + "x"}, tmp_path)
    assert strict.returncode == 1
    good = _cli(["--retry-pending", "--init"], {**env, "NOTION_TOKEN": TOKEN}, tmp_path)
    assert good.returncode == 0, good.stderr
    assert "NOTION_PAGE_URL=https://www.notion.so/" in good.stdout
    assert not list((tmp_path / ".mlload" / "notion-pending").glob("*.json"))
    assert_exactly_once(fake, make_report())
    for proc in (bad, strict, good):
        assert TOKEN not in proc.stdout + proc.stderr


def test_cli_dry_run_needs_no_token_and_sends_nothing(fake: FakeNotion, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(make_report()))
    proc = _cli(
        ["classifier", "1.4.2", "--report-file", str(report_file), "--dry-run"], {}, tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    payload = RunPayload.from_dict(json.loads(proc.stdout))
    assert len(payload.rows) == 3 and fake.requests == []


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _cli(["classifier"], {}, tmp_path).returncode == 2
    missing = _cli(["svc", "1", "--report-file", "nope.json"], {}, tmp_path)
    assert missing.returncode == 2 and "cannot read --report-file nope.json" in missing.stderr
