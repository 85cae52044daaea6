"""Verdict kinds and report files, end to end through pytest (pytester, subprocess).

The inner tests gate synthetic results (no load), so every verdict kind is produced on
purpose and quickly: pass, regression, improvement, inconclusive (interval straddling the
threshold, or a run that did not converge), no baseline, other settings, other machine.
"""

from __future__ import annotations

import json
import struct
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from records import window

from pytest_mlload.baseline import BaselineEntry, BaselineStore
from pytest_mlload.config import RunSettings
from pytest_mlload.report import tables as report
from pytest_mlload.results import (
    CapacityResult,
    ProbeResult,
    SpikeResult,
    WindowRecord,
)

MARKER = "target_p99_ms=120"


def fake(
    cap: float = 200.0,
    ci: float = 0.02,
    p99: float = 100.0,
    users: int = 20,
    status: str = "converged",
    reason: str = "",
) -> CapacityResult:
    """A synthetic result with intervals, a probe at ``users`` and a small trajectory."""
    probe = ProbeResult(
        users=users,
        p50_ms=p99 * 0.9,
        p99_ms=p99,
        requests=400,
        failures=0,
        duration_s=2.0,
        p99_ci=(p99 * 0.98, p99 * 1.02),
    )
    windows = (
        WindowRecord(
            phase="ramp",
            users=4,
            start_s=0.0,
            end_s=1.0,
            requests=100,
            failures=0,
            rps=cap * 0.9,
            p99_ms=p99 / 4,
            decision="ramp to 16",
        ),
        WindowRecord(
            phase="measure",
            users=users,
            start_s=1.5,
            end_s=5.5,
            requests=800,
            failures=0,
            rps=cap,
            p99_ms=p99,
            decision="measured",
        ),
    )
    return CapacityResult(
        name="",
        host="http://127.0.0.1:9",
        status=status,
        reason=reason,
        capacity_rps=cap,
        p50_ms=p99 * 0.9,
        p95_ms=p99 * 0.97,
        p99_ms=p99,
        users=users,
        requests=800,
        failures=0,
        error_ratio=0.0,
        measure_s=4.0,
        elapsed_s=9.0,
        target_p99_ms=120.0,
        capacity_ci=(cap * (1 - ci), cap * (1 + ci)),
        p99_ci=(p99 * 0.98, p99 * 1.02),
        probe=probe,
        trajectory=windows,
    )


INNER = f"""
import pytest
from fakes import fake


@pytest.mark.capacity({MARKER})
def test_pass(mlload):
    mlload.assert_no_regression(fake(cap=198.0, p99=101.0))


@pytest.mark.capacity({MARKER})
def test_regression(mlload):
    mlload.assert_no_regression(fake(cap=150.0, p99=100.0))


@pytest.mark.capacity({MARKER})
def test_improvement(mlload):
    mlload.assert_no_regression(fake(cap=250.0, p99=100.0))


@pytest.mark.capacity({MARKER})
def test_straddles(mlload):
    mlload.assert_no_regression(fake(cap=182.0, ci=0.05))


@pytest.mark.capacity({MARKER})
def test_not_converged(mlload):
    mlload.assert_no_regression(fake(status="inconclusive", reason="time cap reached: 60 s"))


@pytest.mark.capacity({MARKER})
def test_missing(mlload):
    mlload.assert_no_regression(fake())


@pytest.mark.capacity(target_p99_ms=150)
def test_other_settings(mlload):
    mlload.assert_no_regression(fake())
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> Path:
    import inspect

    pytester.makeini("[pytest]\n")
    src = "from pytest_mlload import CapacityResult, ProbeResult, WindowRecord\n\n"
    pytester.makepyfile(fakes=src + inspect.getsource(fake), test_gates=INNER)
    settings = RunSettings(target_p99_ms=120)
    store = BaselineStore(pytester.path / "mlload-baseline.yaml")
    other_machine = {"cpu_count": 64, "python": "3.11", "system": "Linux"}
    store.update(
        {
            f"test_gates.py::{name}": BaselineEntry.from_result(
                f"test_gates.py::{name}", fake(), settings, fingerprint=other_machine
            )
            for name in (
                "test_pass",
                "test_regression",
                "test_improvement",
                "test_straddles",
                "test_not_converged",
                "test_other_settings",
            )
        }
    )
    return pytester.path


def test_every_verdict_kind_and_every_report_file(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step_summary = suite / "step_summary.md"
    step_summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--mlload-report",
        "out/r.json",
        "--mlload-markdown",
        "out/summary.md",
        "--mlload-plots",
        "out/plots",
        "--junitxml",
        "out/junit.xml",
    )
    result.assert_outcomes(passed=2, failed=5)
    out = "\n".join(result.outlines)

    report = json.loads((suite / "out/r.json").read_text())
    assert report["schema"] == 2  # 2: typed records instead of ``extra``
    first = report["tests"][0]["results"][0]
    assert "extra" not in first and {"open_loop", "spike", "rate_limit_rps", "hpa"} <= set(first)
    outcome = {t["key"].split("::")[1]: t["outcome"] for t in report["tests"]}
    assert outcome == {
        "test_pass": "pass",
        "test_regression": "regression",
        "test_improvement": "improvement",
        "test_straddles": "inconclusive",
        "test_not_converged": "inconclusive",
        "test_missing": "no-baseline",
        "test_other_settings": "settings-mismatch",
    }
    by_name = {t["key"].split("::")[1]: t for t in report["tests"]}
    cap = next(v for v in by_name["test_regression"]["verdicts"] if v["metric"] == "capacity")
    assert cap["change"] == pytest.approx(-0.25)
    assert cap["high"] < -0.10  # the whole interval is past the threshold
    straddle = next(v for v in by_name["test_straddles"]["verdicts"] if v["metric"] == "capacity")
    assert straddle["low"] < -0.10 < straddle["high"]
    # another machine's baseline is compared, with a warning in the message
    assert all(
        "baseline from another machine: cpu_count: 64 ->" in v["message"]
        for v in by_name["test_pass"]["verdicts"]
    )
    assert by_name["test_pass"]["results"][0]["trajectory"][1]["phase"] == "measure"

    # the failure messages give baseline, observed, change, threshold and the way out
    assert "capacity of test_gates.py::test_regression fell 25.0 % (200.0 -> 150.0 req/s" in out
    assert "past the 10 % threshold; rerun with --mlload-update-baseline" in out
    assert "straddles the 10 % threshold, so the run cannot decide" in out
    assert "inconclusive, so not a pass: time cap reached: 60 s" in out
    assert "no baseline entry in" in out and "pytest --mlload-update-baseline" in out
    assert "measured with other settings (target_p99_ms: baseline 120.0, now 150.0)" in out

    # the session table and its Markdown twin, also appended to the GitHub step summary
    assert "mlload capacity summary" in out
    md = (suite / "out/summary.md").read_text()
    assert "| test_gates.py::test_regression | 150.0 ±3.0 | 100.0/120 | 20 |" in md
    assert "| regression |" in md and "| improvement |" in md
    steps = step_summary.read_text()
    assert steps.startswith("earlier step\n") and "| test_gates.py::test_pass |" in steps

    # JUnit XML carries the figures and the verdict
    props = {
        tc.get("name"): {p.get("name"): p.get("value") for p in tc.iter("property")}
        for tc in ET.parse(suite / "out/junit.xml").getroot().iter("testcase")
    }
    assert props["test_regression"]["mlload_capacity_rps"] == "150.0"
    assert props["test_regression"]["mlload_verdict"] == "regression"
    assert props["test_pass"]["mlload_verdict"] == "pass"

    # one PNG per test
    pngs = sorted((suite / "out/plots").glob("*.png"))
    assert len(pngs) == 7
    for png in pngs:
        head = png.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", head[16:24])
        assert width > 600 and height > 400


def test_update_appends_history_and_gates_against_the_median(
    pytester: pytest.Pytester, suite: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five recorded runs: the reference is their median, not the latest lucky run.

    (Five, because the run-to-run spread counts: three runs with one 30 % outlier give a
    spread whose smallest decidable threshold is ~30 %, and the gate says inconclusive.)
    """
    pytester.makepyfile(
        test_history="""
import os
import pytest
from fakes import fake


@pytest.mark.capacity(target_p99_ms=120)
def test_h(mlload):
    mlload.assert_no_regression(fake(cap=float(os.environ["CAP"])))
"""
    )
    for cap in ("200", "199", "201", "200", "240"):  # one lucky run
        monkeypatch.setenv("CAP", cap)
        r = pytester.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "test_history.py",
            "--mlload-update-baseline",
            "--mlload-history=5",
        )
        r.assert_outcomes(passed=1)
    entry = BaselineStore(suite / "mlload-baseline.yaml").get("test_history.py::test_h")
    assert entry is not None
    assert [r.capacity_rps for r in entry.runs] == [200.0, 199.0, 201.0, 200.0, 240.0]
    assert entry.capacity_rps == 200.0
    monkeypatch.setenv("CAP", "200")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_history.py")
    r.assert_outcomes(passed=1)  # 200 vs median 200 (-17 % vs the 240 outlier)


def test_locust_conf_layer_and_its_warning(pytester: pytest.Pytester, suite: Path) -> None:
    """An ml-loadtest locust.conf supplies settings (below the command line) and names the
    keys it ignores in one warning."""
    (suite / "locust.conf").write_text(
        "; ml-loadtest settings\nheadless\nrun-time = 2h\nmax-users = 32\n"
        "increase-step = 1\nhost = http://127.0.0.1:9\n"
    )
    r = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "test_gates.py::test_pass", "--mlload-config", "locust.conf"
    )
    out = "\n".join(r.outlines)
    r.assert_outcomes(failed=1)
    assert "(max_users: baseline 64, now 32)" in out  # the file's setting applied
    assert "MlloadWarning" in out and "increase-step" in out and "run-time" in out
    # the command line beats the file
    r = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "test_gates.py::test_pass",
        "--mlload-config",
        "locust.conf",
        "--mlload-max-users",
        "64",
    )
    r.assert_outcomes(passed=1)
    (suite / "bad.conf").write_text("target-p99-ms = fast\n")
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mlload-config", "bad.conf")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "bad.conf:1" in "\n".join(r.errlines) and "target-p99-ms" in "\n".join(r.errlines)


# --------------------------------------------------------------------------- summary rows


def spike_result(p99: float, max_p99: float) -> CapacityResult:
    """A spike part as the driver builds it: the spike's figures, the test's P99 target."""
    settings = RunSettings(target_p99_ms=120, spike_max_p99_ms=max_p99).to_dict()
    r = fake(cap=280.0, p99=p99, users=90)

    spike = SpikeResult(
        target_rps=300.0,
        base_rps=30.0,
        duration_s=5.0,
        pre=window(30.0, 50.0),
        spike=window(300.0, p99),
        recovery_s=1.0,
        recovery_limit_s=10.0,
        peak_workers=90,
    )
    return replace(r, name="spike", settings=settings, spike=spike)


@pytest.mark.parametrize(("max_p99", "shown"), [(0.0, "—"), (2500.0, "2500")])
def test_spike_row_shows_its_own_bound_not_the_p99_target(max_p99: float, shown: str) -> None:
    rec = report.TestRecord(
        nodeid="t.py::t", key="t.py::t", results=[spike_result(1996.7, max_p99)]
    )
    rec.results.append(replace(fake(), name="individual"))
    [_, spike, individual] = report.summary_rows([rec])
    assert spike[0] == "t.py::t [spike]" and spike[2] == f"1996.7/{shown}"
    assert individual[2] == "100.0/120"  # a search part is still held against the target
    assert f"| 1996.7/{shown} |" in report.markdown_table([rec])


def test_slo_mode_row_shows_no_p99_target() -> None:
    # in SLO mode the operating point is the attainment's: P99 was not held to the target
    slo = RunSettings(target_p99_ms=120, ttft_p99_ms=500).to_dict()
    rec = report.TestRecord(
        nodeid="t.py::t", key="t.py::t", results=[replace(fake(p99=812.3), settings=slo)]
    )
    [_, row] = report.summary_rows([rec])
    assert row[2] == "812.3/— (SLO)"


def test_bound_knee_and_check_show_in_the_summary_and_markdown() -> None:
    bounded = replace(fake(p99=40.0, users=32), name="individual /a", bound="max_users")
    kneed = replace(fake(users=9), name="individual /b", knee_users=9)
    checked = replace(fake(users=21), name="individual /c", check=True)
    rec = report.TestRecord(nodeid="t.py::t", key="t.py::t", results=[bounded, kneed, checked])
    rows = report.summary_rows([rec])
    assert [r[3] for r in rows[1:]] == ["32 (max_users)", "9", "21 (check)"]
    notes = report.summary_notes([rec])
    assert notes == [
        "t.py::t [individual /a]: stopped at max_users=32 with P99 40.0 ms under the 120 ms "
        "target: the capacity is only a lower bound",
        "t.py::t [individual /b]: throughput falls past 9 users",
        "t.py::t [individual /c]: check mode, held the baseline's 21 users",
    ]
    md = report.markdown_table([rec])
    assert all(f"- {n}" in md for n in notes)


def test_run_identity_from_ci_environments_and_a_random_id_otherwise() -> None:
    gh = report.run_identity(
        {
            "GITHUB_RUN_ID": "42",
            "GITHUB_RUN_ATTEMPT": "2",
            "GITHUB_REPOSITORY": "acme/svc",
            "GITHUB_SHA": "abc123",
        }
    )
    assert gh == {
        "run_id": "gh-42-2",
        "commit": "abc123",
        "ci_url": "https://github.com/acme/svc/actions/runs/42",
    }
    gl = report.run_identity({"CI_JOB_ID": "7", "CI_COMMIT_SHA": "def", "CI_JOB_URL": "u"})
    assert gl == {"run_id": "gl-7", "commit": "def", "ci_url": "u"}
    a, b = report.run_identity({}), report.run_identity({})
    assert a["run_id"] != b["run_id"] and a["commit"] is None
    assert report.json_report([])["run_id"]
