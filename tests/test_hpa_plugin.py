"""pytester acceptance tests of the HPA/KEDA layer against a real Prometheus (issue 5).

The inner pytest sessions run in their own processes (``runpytest_subprocess``) and load the
session's demo server (``prom_stack.demo``: 4 slots x 20 ms on /v1/classify = 200 req/s),
which the session's real Prometheus scrapes every second. That demo server is the one target
with the pod names ``demo-api-0`` / ``demo-triton-modelverse-0``: a second demo server with
the same names would add a second series to every query, and the per-pod ``avg`` would halve
the observed values (which is what a too-wide selector does in production as well).

While an inner session runs, a thread in this process samples the demo server's own counters
(``/admin/stats``: process CPU, busy-slot time, inference time per model) every 0.2 s, so the
values Prometheus gave the plugin can be checked against what the server measured itself over
the same operating-point window (read from the inner JSON report).

Nothing here imports Locust; every process is stopped by PID (the demo server and Prometheus
by the session fixture, the inner sessions by pytester).
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from plugin_support import TASKS_SOURCE
from prom_support import PromStack, closed_port

from pytest_mlload.testing.demo import DemoServerProcess, capacity_rps

# registered as a plugin (not imported) so the session has exactly one prom_stack fixture
pytest_plugins = ["prom_support"]

DEMO_RPS = capacity_rps(slots=4, service_ms=20)  # 200 req/s on /v1/classify
KEY = "test_capacity.py::test_classify"
API_SELECTOR = "demo-api-.*"
TRITON_SELECTOR = "demo-triton-modelverse.+"
TRIGGERS = [
    "api.cpuUtilization",
    "triton.cpuUtilization",
    "triton.gpuUtilization",
    "triton.inferenceRequestDuration",
]
# One search takes ~8-12 s. The 3 s measure window is the operating-point window: its
# Prometheus range (int(3.x) = 3 s) holds ~3 scrapes at 1 s, enough for rate().
# The capacity gate here only has to pass on the same server, against a one-run baseline. On
# a slower 2-core machine a 1.5 s probe's own P99 interval ran -7.2 %..+24.3 % and made 15 %
# undecidable ("the smallest it can decide is 21.1 %", 2026-12-07): 30 % leaves room.
MARKER = (
    "target_p99_ms=120, min_users=4, max_users=32, measure_s=3.0, probe_s=1.5, "
    "min_samples=150, max_duration_s=40, threshold=0.3"
)
CAPACITY_TEST = f"""
import pytest
from tasks import Classify


@pytest.mark.capacity({MARKER})
def test_classify(mlload):
    result = mlload.run(Classify)
    mlload.assert_no_regression(result)
"""
# the HPA helper called explicitly, after the capacity gate has passed
CAPACITY_THEN_HPA_TEST = CAPACITY_TEST + "    mlload.assert_hpa_stable(result)\n"
# Extra real CPU per request in the demo's event loop (~200 millicpu per ms at 200 req/s),
# small next to the 20 ms service time, so the capacity stays 200 req/s. The base load gives
# the API real work, as an API pod has: without it the demo spends ~30 millicpu, and its
# run-to-run jitter (~20 %, measured) is larger than the 10 % drift threshold.
BASE_CPU_MS = 1.0
HEAVIER_CPU_MS = 2.0
# Even with that work the API's CPU per request moves ~10 % between runs of the same build on
# this 2-core machine (measured: 298, 271 and 274 millicpu, Prometheus agreeing with the
# demo's own counters within 1 %), which a one-run baseline cannot decide against 10 %: the
# smallest threshold it decides is 11.5 % (the 3 % prior). The gate runs here at 20 %, which
# it decides, so the same server must pass and a +67 % heavier one must fail.
DRIFT = ["--mlload-drift-threshold", "0.2"]
# Prometheus vs the demo's own counters: measured within 1 % on every trigger (2 CPUs,
# busy machine); 10 % leaves room for scrape jitter on a 3 s range.
AGREEMENT_REL = 0.10


# --------------------------------------------------------------------------- fixtures, helpers


@pytest.fixture
def demo(prom_stack: PromStack) -> Iterator[DemoServerProcess]:
    """The session's scraped demo server, with its knobs reset after the test."""
    yield prom_stack.demo
    prom_stack.demo.set_config(cpu_ms=0.0, slowdown=1.0, error_ratio=0.0)


@pytest.fixture(autouse=True)
def _unpatched_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LOCUST_SKIP_MONKEY_PATCH", "LOCUST_SKIP_URLLIB3_PATCH", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(var, raising=False)


def make_suite(pytester: pytest.Pytester, tests: str = CAPACITY_TEST) -> None:
    pytester.makeini("[pytest]\n")  # anchors the rootdir (baseline, .mlload/keda) here
    pytester.makepyfile(tasks=TASKS_SOURCE, test_capacity=tests)


def run_inner(pytester: pytest.Pytester, *args: str) -> tuple[Any, str]:
    # generous: a load run queues behind any other on the machine (engine.exclusive_load)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)
    return result, "\n".join(result.outlines + result.errlines)


def hpa_args(prometheus_url: str, api: str = API_SELECTOR, triton: str = TRITON_SELECTOR) -> list:
    return [
        "--mlload-prometheus-url",
        prometheus_url,
        "--mlload-api-pod-selector",
        api,
        "--mlload-triton-pod-selector",
        triton,
        "--mlload-bottleneck-tier",
        "api",
    ]


def read_report(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one test record of an inner JSON report, and its one result."""
    [rec] = json.loads(path.read_text())["tests"]
    [res] = rec["results"]
    return rec, res


def by_key(hpa: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{t['component']}.{t['name']}": t for t in hpa["triggers"]}


def summary_row(out: str) -> str:
    """The row of the test in the "mlload capacity summary" table."""
    section = out.split("mlload capacity summary", 1)[1]
    [row] = [line for line in section.splitlines() if line.startswith(KEY + " ")]
    return row


def gate_verdicts(rec: dict[str, Any]) -> dict[str, str]:
    return {v["metric"]: v["verdict"] for v in rec["verdicts"]}


def hpa_warnings(out: str) -> list[str]:
    """The MlloadWarning lines about HPA triggers in the inner warnings summary."""
    return re.findall(rf"MlloadWarning: {re.escape(KEY)}: HPA (.*)$", out, re.M)


def empty_triggers(res: dict[str, Any], out: str) -> list[dict[str, Any]]:
    """Every trigger of a run without Prometheus figures, checked to have none observed or
    recommended and its warning in the session's four HPA warnings; returned for more checks."""
    seen = by_key(res["hpa"])
    warnings = hpa_warnings(out)
    assert len(warnings) == 4, out
    for key in TRIGGERS:
        t = seen[key]
        assert t["observed"] is None and t["recommended"] is None, t
        assert t["warning"] in warnings, (t["warning"], warnings)
    return [seen[key] for key in TRIGGERS]


class StatsSampler:
    """The demo server's own cumulative counters, sampled with wall-clock stamps."""

    def __init__(self, demo: DemoServerProcess, every_s: float = 0.2) -> None:
        self.demo = demo
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, Any]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.time()
            stats = self.demo.stats()
            self.samples.append(((t0 + time.time()) / 2, stats))
            self._stop.wait(self.every_s)

    def __enter__(self) -> StatsSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def at(self, epoch: float, get: Any) -> float:
        """``get(stats)`` linearly interpolated at ``epoch``."""
        times = [t for t, _ in self.samples]
        i = bisect.bisect_left(times, epoch)
        assert 0 < i < len(times), f"{epoch} is outside the sampled span"
        (t0, s0), (t1, s1) = self.samples[i - 1], self.samples[i]
        v0, v1 = get(s0), get(s1)
        return float(v0 + (v1 - v0) * (epoch - t0) / (t1 - t0))

    def over(self, start: float, end: float) -> dict[str, float]:
        """What the server measured itself over ``[start, end]``, in the triggers' units."""
        dt = end - start

        def delta(get: Any) -> float:
            return self.at(end, get) - self.at(start, get)

        def model(name: str, what: str) -> Any:
            return lambda s: s[what].get(name, 0.0)

        n = delta(model("classify", "requests"))
        return {
            "api.cpuUtilization": 1000 * delta(lambda s: s["process_cpu_s"]) / dt,
            "triton.cpuUtilization": 1000 * delta(lambda s: s["triton_cpu_s"]) / dt,
            "triton.gpuUtilization": 100
            * delta(lambda s: s["busy_slot_s"])
            / (self.samples[0][1]["slots"] * dt),
            "triton.inferenceRequestDuration": delta(model("classify", "inference_us")) / n / 1000,
        }


def agreement(res: dict[str, Any], sampler: StatsSampler, label: str) -> dict[str, float]:
    """Prometheus (through the plugin) vs the demo's own counters over the range the queries
    read: ``[end - window_s, end]``. Prints both; returns prometheus / demo per trigger."""
    hpa = res["hpa"]
    end = hpa["window_end_epoch"]
    truth = sampler.over(end - hpa["window_s"], end)
    seen = by_key(hpa)
    ratios = {}
    print(f"\n{label}: window {hpa['window_s']} s, capacity {res['capacity_rps']:.1f} req/s")
    for key in TRIGGERS:
        got = seen[key]["observed"]
        ratios[key] = got / truth[key]
        print(f"  {key:33s} prometheus {got:9.2f}  demo {truth[key]:9.2f}  ratio {ratios[key]:.3f}")
    return ratios


# --------------------------------------------------------------------------- round trip


def test_hpa_report_keda_file_baseline_and_drift_gate(
    pytester: pytest.Pytester, prom_stack: PromStack, demo: DemoServerProcess
) -> None:
    """Record (with the JSON report): four triggers with their queries and observations, the
    API recommendation = observed x 0.8, agreeing with the demo's own CPU; a KEDA file; the
    baseline holds the HPA report. The same server passes --mlload-hpa-gate (at a threshold
    this setup decides, see DRIFT); a CPU-heavier server of the same capacity fails it on API
    cpuUtilization, with the numbers and the interval."""
    make_suite(pytester)
    prom_url = prom_stack.prometheus.url
    common = ["--mlload-host", demo.url, *hpa_args(prom_url)]
    baseline_path = pytester.path / "mlload-baseline.yaml"
    demo.set_config(cpu_ms=BASE_CPU_MS)

    # 1. Record, with the JSON report.
    with StatsSampler(demo) as sampler:
        result, out = run_inner(
            pytester, *common, "--mlload-update-baseline", "--mlload-report", "rec.json"
        )
    result.assert_outcomes(passed=1)
    assert not hpa_warnings(out), out
    rec, res = read_report(pytester.path / "rec.json")
    assert rec["outcome"] == "recorded" and res["status"] == "converged"
    hpa = res["hpa"]
    assert hpa["prometheus_url"] == prom_url
    assert (hpa["bottleneck_tier"], hpa["saturated_tier"]) == ("api", "api")
    assert (hpa["api_replicas"], hpa["hpa_margin"]) == (1, 0.8)
    # the operating-point window is the result's measure window
    assert hpa["window_start_epoch"] == res["window_start_epoch"]
    assert hpa["window_end_epoch"] == res["window_end_epoch"]
    span = res["window_end_epoch"] - res["window_start_epoch"]
    assert hpa["window_s"] == int(span) >= 2, span
    seen = by_key(hpa)
    assert list(seen) == TRIGGERS
    for key, t in seen.items():
        assert t["warning"] is None, (key, t["warning"])
        assert isinstance(t["observed"], float) and t["observed"] > 0, (key, t)
        assert f"[{hpa['window_s']}s]" in t["query"] and "[2m]" in t["keda_query"], t
    api = seen["api.cpuUtilization"]
    assert 'container="api", pod=~"demo-api-.*"' in api["query"]
    assert (
        'container="triton", pod=~"demo-triton-modelverse.+"'
        in (seen["triton.cpuUtilization"]["query"])
    )
    assert 'application=~"demo-triton-modelverse.*"' in seen["triton.gpuUtilization"]["query"]
    assert api["recommended"] == round(api["observed"] * 0.8, 2)
    assert (api["priority"], api["is_binding"], api["metric_type"]) == (
        "primary",
        True,
        "AverageValue",
    )
    assert api["note"].endswith("of the current threshold; observed x 0.8"), api["note"]
    for key in TRIGGERS[1:]:
        t = seen[key]
        assert (t["recommended"], t["priority"]) == (None, None), t
        assert "Triton not the bottleneck this run" in t["note"], t["note"]
        assert "; API declared the bottleneck)" in t["note"], t["note"]  # not "saturated"
        assert "measure it in a 6 API : 1 Triton run" in t["note"], t["note"]
    assert "take Triton thresholds from a 6 API : 1 Triton run" in hpa["notes"]

    # Prometheus agrees with what the server measured itself over the same window.
    ratios = agreement(res, sampler, "record")
    for key in ("api.cpuUtilization", "triton.gpuUtilization", "triton.inferenceRequestDuration"):
        assert ratios[key] == pytest.approx(1.0, abs=AGREEMENT_REL), (key, ratios)

    # A KEDA trigger file for the test, ready to paste.
    [keda_file] = (pytester.path / ".mlload" / "keda").glob("*.yaml")
    assert keda_file.name.startswith("test_capacity__test_classify-")
    keda_text = keda_file.read_text()
    assert keda_text.startswith("# KEDA ScaledObject triggers for API (hpa_margin 0.8,")
    [trigger] = yaml.safe_load(keda_text)["triggers"]
    assert trigger["type"] == "prometheus" and trigger["name"] == "api-cpuUtilization"
    assert trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["serverAddress"] == prom_url and meta["query"] == api["keda_query"]
    assert meta["query"].startswith("1000 * sum(rate(container_cpu_usage_seconds_total{")
    assert isinstance(meta["threshold"], str)
    assert float(meta["threshold"]) == pytest.approx(api["recommended"], abs=0.005)

    # The baseline holds the HPA report (figures rounded to 4 significant digits).
    doc = yaml.safe_load(baseline_path.read_text())
    base_hpa = doc["tests"][KEY]["runs"][-1]["extra"]["hpa"]
    base_api = by_key(base_hpa)["api.cpuUtilization"]
    assert base_api["recommended"] == float(f"{api['recommended']:.4g}")
    assert base_api["query"] == api["query"] and base_hpa["saturated_tier"] == "api"
    recorded = baseline_path.read_bytes()

    # 2. The same server under the HPA gate: passes (capacity and HPA).
    with StatsSampler(demo) as sampler:
        result, out = run_inner(
            pytester, *common, *DRIFT, "--mlload-hpa-gate", "--mlload-report", "r.json"
        )
    rec, res = read_report(pytester.path / "r.json")
    api_now = by_key(res["hpa"])["api.cpuUtilization"]
    change = api_now["recommended"] / base_api["recommended"] - 1
    print(f"same server: API cpu recommendation {api_now['recommended']}m, {change:+.1%}")
    result.assert_outcomes(passed=1)
    assert rec["outcome"] == "pass" and baseline_path.read_bytes() == recorded
    hpa_pass = gate_verdicts(rec)["hpa.api.cpuUtilization"]
    assert hpa_pass == "pass", rec["verdicts"]
    ratios = agreement(res, sampler, "same server")
    assert ratios["api.cpuUtilization"] == pytest.approx(1.0, abs=AGREEMENT_REL)

    # 3. A CPU-heavier server of the same capacity: the HPA gate fails that test.
    demo.set_config(cpu_ms=HEAVIER_CPU_MS)
    with StatsSampler(demo) as sampler:
        result, out = run_inner(
            pytester, *common, *DRIFT, "--mlload-hpa-gate", "--mlload-report", "heavy.json"
        )
    demo.set_config(cpu_ms=BASE_CPU_MS)
    rec, res = read_report(pytester.path / "heavy.json")
    ratios = agreement(res, sampler, f"cpu_ms={HEAVIER_CPU_MS}")
    assert ratios["api.cpuUtilization"] == pytest.approx(1.0, abs=AGREEMENT_REL)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"FAILED {KEY} - pytest_mlload.errors.PerformanceRegr*"])
    assert res["capacity_rps"] == pytest.approx(DEMO_RPS, rel=0.10)
    verdicts = gate_verdicts(rec)
    assert (verdicts["capacity"], verdicts["p99"]) == ("pass", "pass"), rec["verdicts"]
    assert rec["outcome"] == "regression"
    b, n = base_api["recommended"], by_key(res["hpa"])["api.cpuUtilization"]["recommended"]
    change = n / b - 1
    # +1 ms of CPU per request: +200 millicpu on ~270-300 on one machine, +108 on ~352 on a
    # slower one (+30.5 %, 2026-12-07); either way past the 20 % threshold
    assert change > 0.2, (b, n)
    head = (
        f"HPA trigger API cpuUtilization moved {change * 100:+.1f} % (baseline {b:g}m -> now "
        f"{n:g}m, 95 % CI +"
    )
    tail = (
        "), past the 20 % drift threshold; rerun with --mlload-update-baseline if the new "
        "threshold is intended"
    )
    assert head in out and tail in out, out
    assert rec["message"].startswith("HPA trigger API cpuUtilization moved")
    assert baseline_path.read_bytes() == recorded
    # The summary table must not call a test that failed its HPA gate a pass.
    assert summary_row(out).endswith(" regression"), summary_row(out)


# --------------------------------------------------------------------------- bad input


def test_no_series_and_unreachable_prometheus_leave_the_capacity_verdict_alone(
    pytester: pytest.Pytester, prom_stack: PromStack, demo: DemoServerProcess
) -> None:
    """Selectors matching nothing: "no series" per trigger, the run records, no KEDA file.
    Prometheus unreachable: one warning per trigger naming its query, the capacity gate
    passes against the baseline, and assert_hpa_stable reports the HPA gate skipped
    (inconclusive) with both reasons. Nothing crashes."""
    make_suite(pytester, CAPACITY_THEN_HPA_TEST)
    host = ["--mlload-host", demo.url]

    # 1. Selectors matching nothing, recording.
    nothing = hpa_args(prom_stack.prometheus.url, "nothing-api-.*", "nothing-triton-.+")
    result, out = run_inner(
        pytester, *host, *nothing, "--mlload-update-baseline", "--mlload-report", "rec.json"
    )
    result.assert_outcomes(passed=1)
    rec, res = read_report(pytester.path / "rec.json")
    assert rec["outcome"] == "recorded" and res["status"] == "converged"
    for t in empty_triggers(res, out):
        assert t["note"].startswith("no Prometheus data: verify the selector"), t["note"]
        assert "no series: check the selector" in t["warning"]
        assert f"[query: {t['query']}]" in t["warning"]
    assert 'pod=~"nothing-api-.*"' in by_key(res["hpa"])["api.cpuUtilization"]["query"]
    assert not (pytester.path / ".mlload" / "keda").exists()  # nothing to recommend

    # 2. Prometheus unreachable: capacity passes against the baseline just recorded; the HPA
    #    helper fails the test as inconclusive, naming the reasons on both sides.
    dead = f"http://127.0.0.1:{closed_port()}"
    result, out = run_inner(pytester, *host, *hpa_args(dead), "--mlload-report", "r.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"FAILED {KEY} - pytest_mlload.errors.Inconclusive*"])
    rec, res = read_report(pytester.path / "r.json")
    verdicts = gate_verdicts(rec)
    assert (verdicts["capacity"], verdicts["p99"]) == ("pass", "pass"), rec["verdicts"]
    assert rec["outcome"] == "inconclusive"
    for t in empty_triggers(res, out):
        assert t["warning"].startswith(f"Prometheus unreachable at {dead}: "), t["warning"]
        assert t["warning"].endswith(f"[query: {t['query']}]"), t["warning"]
    # the current run has nothing to compare (Prometheus away): skipped, with every reason
    assert "HPA gate skipped: this run has no recommendation (" in rec["message"], rec["message"]
    assert rec["message"].count(f"Prometheus unreachable at {dead}") == 4, rec["message"]
    assert "INTERNALERROR" not in out and "Traceback" not in out
    # The summary table must not call a test whose HPA gate was inconclusive a pass.
    assert summary_row(out).endswith(" inconclusive"), summary_row(out)
