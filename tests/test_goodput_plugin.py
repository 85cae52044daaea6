"""pytester end to end: an LLM capacity test in SLO mode records, passes, then catches a
slower engine (the inner sessions run in their own processes, as in tests/test_plugin.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml
from plugin_support import helper_source
from test_plugin import LOCK_PATIENT_S, _unpatched_env, run_inner, summary_row, text

from pytest_mlload.testing.demo import DemoServerProcess

__all__ = ["_unpatched_env"]  # the autouse fixture: the inner sessions get a clean env

KEY = "test_llm.py::test_chat_capacity"

# 512-word prompts, 8 tokens: the demo engine (batch 8) gives 98 req/s of goodput under
# TTFT <= 35 ms and TPOT <= 9 ms at 8 users (testing.llm.goodput_capacity; less the HTTP
# time per request, ~1 ms of 82); a ninth user waits for a place in the full batch and
# passes 35 ms, so the operating point stays under the batch, where TTFT and TPOT are the
# same for every request (and stable from run to run). A decode step 30 % slower
# (d(b) = 5.2 + 0.65 b ms, prefill unchanged) meets TPOT 9 ms up to 5 users (d(5) = 8.45 ms),
# so the goodput falls to about 5 / 85 ms = 59 req/s (-40 %), and TPOT at the baseline's 8
# users rises from 8.0 to 10.4 ms (+30 %): twice the 15 % threshold, which a one-run baseline
# decides. (At +20 % a recording window that read 8.6 ms left a +13.7 % rise: a pass.)
LLM_TESTS = """
import pytest
from pytest_mlload.targets import openai_chat

Chat = openai_chat(model="demo", prompt_tokens=512, max_tokens=8)


@pytest.mark.capacity(ttft_p99_ms=35, tpot_p99_ms=9, slo_attainment=0.95, min_users=4,
                      max_users=12, measure_s=2, probe_s=2, max_duration_s=40, threshold=0.15)
def test_chat_capacity(mlload):
    result = mlload.run(Chat)
    print(f"GOODPUT={result.goodput_rps} TTFT99={result.ttft_p99_ms} USERS={result.users}")
    mlload.assert_no_regression(result)
"""


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServerProcess]:
    with DemoServerProcess() as server:
        yield server


def test_llm_capacity_records_then_passes_then_catches_a_slower_decode_step(
    pytester: pytest.Pytester, demo: DemoServerProcess
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_llm=LLM_TESTS, mlhelp=helper_source())
    host = ["--mlload-host", demo.url, "-s"]
    baseline = pytester.path / "mlload-baseline.yaml"

    result, _ = run_inner(pytester, *host, "--mlload-update-baseline", timeout=LOCK_PATIENT_S)
    result.assert_outcomes(passed=1)
    entry = yaml.safe_load(baseline.read_text())["tests"][KEY]
    assert entry["settings"]["ttft_p99_ms"] == 35.0 and entry["settings"]["tpot_p99_ms"] == 9.0
    assert entry["settings"]["slo_attainment"] == 0.95
    [run] = entry["runs"]
    assert run["capacity_rps"] == pytest.approx(98.04, rel=0.05)  # the goodput truth
    assert run["users"] == 8
    operating = run["extra"]["stream"]["operating"]
    assert operating["users"] == run["users"] and operating["token_source"] == "usage"
    assert operating["ttft_p99_ms"] <= 35.0 and operating["tpot_p99_ms"] <= 9.0
    assert operating["slo_attainment"] >= 0.95

    result, _ = run_inner(pytester, *host, "--mlload-report", "pass.json", timeout=LOCK_PATIENT_S)
    out = text(result)
    [rec] = json.loads((pytester.path / "pass.json").read_text())["tests"]
    verdicts = {v["metric"]: v["verdict"] for v in rec["verdicts"]}
    assert set(verdicts) == {"goodput", "p99", "ttft_p99", "tpot_p99", "error_ratio"}, out
    assert "regression" not in verdicts.values(), out
    assert verdicts["goodput"] == "pass", out
    [res] = rec["results"]
    assert res["stream"]["goodput_rps"] == res["capacity_rps"]
    assert res["probe"]["users"] == run["users"] and res["probe"]["stream"]["tpot_p99_ms"] > 0

    demo.set_config(llm_decode_ms=5.2, llm_decode_ms_per_seq=0.65)
    try:
        result, _ = run_inner(
            pytester, *host, "--mlload-report", "slow.json", timeout=LOCK_PATIENT_S
        )
    finally:
        demo.set_config(llm_decode_ms=4.0, llm_decode_ms_per_seq=0.5)
    out = text(result)
    result.assert_outcomes(failed=1)
    [rec] = json.loads((pytester.path / "slow.json").read_text())["tests"]
    assert rec["outcome"] == "regression", out
    verdicts = {v["metric"]: v for v in rec["verdicts"]}
    assert verdicts["goodput"]["verdict"] == "regression", out
    assert verdicts["tpot_p99"]["verdict"] == "regression", out
    assert f"goodput of {KEY} fell " in out and "SLO attainment" in out
    assert f"TPOT P99 of {KEY} at the baseline's {run['users']} users rose " in out
    assert summary_row(out, KEY).endswith(" regression")
