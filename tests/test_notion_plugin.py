"""``--mlload-notion`` through pytest (pytester, subprocess): a Notion failure never changes
the exit code or a verdict.

The inner tests gate synthetic results (no load) against a baseline written here: one
passes, one regresses. The local Notion API (tests/notion_fake.py) runs in this process;
the inner pytest reaches it on 127.0.0.1 through ``NOTION_API_BASE_URL``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from notion_fake import FakeNotion
from plugin_support import converged_result, helper_source
from prom_support import closed_port

from pytest_mlload.baseline import BaselineEntry, BaselineStore
from pytest_mlload.config import RunSettings

TOKEN = "ntn_PLUGINSECRET_77d2e1"


def fake_result(cap: float = 200.0) -> Any:
    """plugin_support's converged result, with the probe at the baseline's load P99 needs."""
    from dataclasses import replace

    from pytest_mlload import ProbeResult

    probe = ProbeResult(
        users=20,
        p50_ms=90.0,
        p99_ms=100.0,
        requests=400,
        failures=0,
        duration_s=2.0,
        p99_ci=(98.0, 102.0),
    )
    return replace(converged_result(capacity_rps=cap), probe=probe, p99_ci=(98.0, 102.0))


INNER = """
import pytest
from fakes import fake_result


@pytest.mark.capacity(target_p99_ms=120)
def test_pass(mlload):
    mlload.assert_no_regression(fake_result(cap=199.0))


@pytest.mark.capacity(target_p99_ms=120)
def test_regression(mlload):
    mlload.assert_no_regression(fake_result(cap=150.0))
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    pytester.makeini("[pytest]\n")
    src = "from typing import Any\nfrom mlhelp import converged_result\n\n"
    pytester.makepyfile(
        mlhelp=helper_source(), fakes=src + inspect.getsource(fake_result), test_gates=INNER
    )
    store = BaselineStore(pytester.path / "mlload-baseline.yaml")
    settings = RunSettings(target_p99_ms=120)
    store.update(
        {
            f"test_gates.py::{n}": BaselineEntry.from_result(
                f"test_gates.py::{n}", fake_result(), settings
            )
            for n in ("test_pass", "test_regression")
        }
    )
    return pytester.path


@pytest.fixture
def notion(monkeypatch: pytest.MonkeyPatch) -> Any:
    with FakeNotion(TOKEN) as server:
        server.add_sync_databases()
        monkeypatch.setenv("NOTION_TOKEN", TOKEN)
        monkeypatch.setenv("NOTION_TEST_RESULTS_DATABASE_ID", server.runs_db)
        monkeypatch.setenv("NOTION_ENDPOINT_DATABASE_ID", server.eps_db)
        monkeypatch.setenv("NOTION_API_BASE_URL", server.base_url)
        yield server


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def _all(r: pytest.RunResult) -> str:
    return "\n".join(r.outlines + r.errlines)


def test_a_notion_failure_leaves_exit_code_and_verdicts_as_they_were(
    pytester: pytest.Pytester, suite: Path, notion: FakeNotion, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _run(pytester)
    plain.assert_outcomes(passed=1, failed=1)

    synced = _run(pytester, "--mlload-notion", "classifier:1.4.2", "--mlload-notion-init")
    synced.assert_outcomes(passed=1, failed=1)
    assert synced.ret == plain.ret == pytest.ExitCode.TESTS_FAILED
    assert "NOTION_PAGE_URL=https://www.notion.so/" in _all(synced)
    (run,) = notion.live_pages(notion.runs_db)
    assert run["properties"]["Verdict"]["select"]["name"] == "regression"
    assert notion.text(run, "Verdicts") == (
        "test_gates.py::test_pass: pass; test_gates.py::test_regression: regression"
    )
    rows = {notion.text(p, "Test"): p for p in notion.live_pages(notion.eps_db)}
    assert rows["test_gates.py::test_regression"]["properties"]["RPS"]["number"] == 150.0

    # Notion refuses the token: same exit code, even with -W error; a warning line instead
    monkeypatch.setenv("NOTION_TOKEN", TOKEN + "-revoked")
    refused = _run(pytester, "-W", "error", "--mlload-notion", "classifier:1.4.2")
    refused.assert_outcomes(passed=1, failed=1)
    assert refused.ret == plain.ret
    out = _all(refused)
    assert "mlload notion: run run-" in out and "not synced: Notion" in out
    assert "HTTP 401 unauthorized" in out and "--retry-pending" in out
    pending = list((suite / ".mlload" / "notion-pending").glob("*.json"))
    assert len(pending) == 1
    for text in (out, pending[0].read_text(), plain.stdout.str()):
        assert TOKEN not in text


def test_an_unreachable_notion_leaves_a_passing_session_passing(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTION_TOKEN", TOKEN)
    monkeypatch.setenv("NOTION_TEST_RESULTS_DATABASE_ID", "db-runs")
    monkeypatch.setenv("NOTION_ENDPOINT_DATABASE_ID", "db-eps")
    monkeypatch.setenv("NOTION_API_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("MLLOAD_NOTION_DEADLINE_S", "1")  # connection refused, retried 1 s
    r = _run(pytester, "test_gates.py::test_pass", "--mlload-notion", "classifier:1.4.2")
    r.assert_outcomes(passed=1)
    assert r.ret == pytest.ExitCode.OK
    out = _all(r)
    assert "cannot connect" in out and "1 s deadline" in out
    assert TOKEN not in out


def test_a_bad_notion_option_is_a_usage_error(pytester: pytest.Pytester, suite: Path) -> None:
    r = _run(pytester, "--mlload-notion", "classifier")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "expected SERVICE:VERSION" in _all(r)
