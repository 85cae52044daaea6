"""The Prometheus client against canned HTTP answers and against a real Prometheus 2.x.

The real-Prometheus tests share one server per session (``prom_stack``); it scrapes a
:class:`KnownExporter` (exact values) and the demo server under real load.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from prom_support import (
    KNOWN_GAUGE,
    KNOWN_RATE_PER_S,
    Canned,
    CannedPrometheus,
    LoadThreads,
    PromStack,
    closed_port,
)

from pytest_mlload.errors import ConfigError, PerformanceRegression
from pytest_mlload.hpa.prometheus import PrometheusClient
from pytest_mlload.hpa.recommend import HpaSettings, assert_hpa_stable, recommend
from pytest_mlload.testing.prometheus import PrometheusProcess

# registered as a plugin (not imported) so the session has exactly one prom_stack fixture
pytest_plugins = ["prom_support"]


def _vector(*series: tuple[dict[str, str], str]) -> bytes:
    result = [{"metric": m, "value": [1700000000.0, v]} for m, v in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


# -- canned answers: URL building and every kind of bad answer ----------------------------


@pytest.fixture
def canned() -> Iterator[CannedPrometheus]:
    with CannedPrometheus() as server:
        yield server


def test_tenant_prefix_and_time_parameter_are_sent(canned: CannedPrometheus) -> None:
    canned.answer = Canned(body=_vector(({}, "12.5")))
    client = PrometheusClient(canned.url + "/select/0/prometheus/")
    outcome = client.instant("sum(up)", 1700000123.25)
    assert (outcome.value, outcome.series, outcome.warning) == (12.5, 1, None)
    path = urllib.parse.urlsplit(canned.paths[0])
    assert path.path == "/select/0/prometheus/api/v1/query"
    params = urllib.parse.parse_qs(path.query)
    assert params == {"query": ["sum(up)"], "time": ["1700000123.250"]}
    assert "@" not in params["query"][0]


def test_http_error_names_status_and_error_type(canned: CannedPrometheus) -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"parse error at char 5"}'
    canned.answer = Canned(status=400, body=body)
    outcome = PrometheusClient(canned.url).instant("rate(x[", 1.0)
    assert outcome.value is None
    assert "HTTP 400: bad_data: parse error at char 5" in str(outcome.warning)
    assert "[query: rate(x[]" in str(outcome.warning)


def test_http_error_with_non_json_body(canned: CannedPrometheus) -> None:
    canned.answer = Canned(status=503, body=b"upstream down", content_type="text/plain")
    outcome = PrometheusClient(canned.url).instant("up", 1.0)
    assert outcome.value is None and "HTTP 503" in str(outcome.warning)


def test_non_json_answer(canned: CannedPrometheus) -> None:
    canned.answer = Canned(body=b"<html>login</html>", content_type="text/html")
    outcome = PrometheusClient(canned.url).instant("up", 1.0)
    assert outcome.value is None and "non-JSON answer" in str(outcome.warning)


def test_non_success_status(canned: CannedPrometheus) -> None:
    canned.answer = Canned(
        body=b'{"status":"error","errorType":"timeout","error":"query timed out"}'
    )
    outcome = PrometheusClient(canned.url).instant("up", 1.0)
    assert outcome.value is None
    assert "status='error': timeout: query timed out" in str(outcome.warning)


def test_malformed_data(canned: CannedPrometheus) -> None:
    canned.answer = Canned(body=b'{"status":"success","data":[]}')
    outcome = PrometheusClient(canned.url).instant("up", 1.0)
    assert outcome.value is None and "malformed answer" in str(outcome.warning)


def test_matrix_is_not_an_instant_answer(canned: CannedPrometheus) -> None:
    canned.answer = Canned(body=b'{"status":"success","data":{"resultType":"matrix","result":[]}}')
    outcome = PrometheusClient(canned.url).instant("up[1m]", 1.0)
    assert outcome.value is None and "resultType='matrix'" in str(outcome.warning)


def test_scalar_answer(canned: CannedPrometheus) -> None:
    canned.answer = Canned(
        body=b'{"status":"success","data":{"resultType":"scalar","result":[1.0,"3.5"]}}'
    )
    outcome = PrometheusClient(canned.url).instant("3.5", 1.0)
    assert (outcome.value, outcome.series, outcome.warning) == (3.5, 1, None)


@pytest.mark.parametrize("raw", ["NaN", "+Inf", "abc"])
def test_nan_inf_and_non_numeric_values_are_warnings(canned: CannedPrometheus, raw: str) -> None:
    canned.answer = Canned(body=_vector(({}, raw)))
    outcome = PrometheusClient(canned.url).instant("a / b", 1.0)
    assert outcome.value is None and outcome.series == 1
    assert (raw in str(outcome.warning)) or ("non-numeric" in str(outcome.warning))


def test_several_series_use_the_first_by_labels_and_say_so(canned: CannedPrometheus) -> None:
    canned.answer = Canned(body=_vector(({"pod": "b"}, "2"), ({"pod": "a"}, "1")))
    outcome = PrometheusClient(canned.url).instant("x", 1.0)
    assert outcome.value == 1.0 and outcome.series == 2
    assert "2 series came back" in str(outcome.warning) and "{pod=a}" in str(outcome.warning)


def test_prometheus_warnings_are_kept(canned: CannedPrometheus) -> None:
    body = json.loads(_vector(({}, "1")))
    body["warnings"] = ["partial response"]
    canned.answer = Canned(body=json.dumps(body).encode())
    outcome = PrometheusClient(canned.url).instant("x", 1.0)
    assert outcome.value == 1.0 and "Prometheus warned: partial response" in str(outcome.warning)


def test_unreachable_names_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    outcome = PrometheusClient(url, timeout_s=2).instant("up", time.time())
    assert outcome.value is None
    assert f"Prometheus unreachable at {url}" in str(outcome.warning)


def test_bad_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="prometheus_url"):
        PrometheusClient("prometheus:9090")


def test_missing_binary_says_what_to_install() -> None:
    with pytest.raises(ConfigError, match="install the Debian package prometheus"):
        PrometheusProcess(binary="/nonexistent/prometheus")


# -- a real Prometheus ----------------------------------------------------------------------


def test_rate_of_a_counter_at_a_known_rate(prom_stack: PromStack) -> None:
    prometheus = prom_stack.prometheus
    # a series younger than the range is extrapolated over half an interval only (by design),
    # so wait for samples older than the range before reading it
    prometheus.wait_for_series('count_over_time(mlload_known_total{case="rate"}[5s]) >= 5', 10)
    outcome = prometheus.client().instant('rate(mlload_known_total{case="rate"}[3s])', time.time())
    assert outcome.series == 1 and outcome.warning is None
    assert outcome.value == pytest.approx(KNOWN_RATE_PER_S, rel=0.03)


def test_instant_query_honours_time(prom_stack: PromStack) -> None:
    client = prom_stack.prometheus.client()
    now = client.instant('mlload_known_gauge{case="gauge"}', time.time())
    assert now.value == KNOWN_GAUGE and now.warning is None
    before = client.instant('mlload_known_gauge{case="gauge"}', time.time() - 3600)
    assert before.value is None and "no series" in str(before.warning)


def test_malformed_query_is_a_warning(prom_stack: PromStack) -> None:
    outcome = prom_stack.prometheus.client().instant("rate(mlload_known_total[", time.time())
    assert outcome.value is None
    assert "HTTP 400: bad_data" in str(outcome.warning)


def test_selector_matching_nothing_is_no_series(prom_stack: PromStack) -> None:
    query = 'avg(rate(container_cpu_usage_seconds_total{pod=~"nothing-.*"}[5s]))'
    outcome = prom_stack.prometheus.client().instant(query, time.time())
    assert outcome.value is None and outcome.series == 0
    assert "no series: check the selector and that the target is scraped" in str(outcome.warning)


def test_several_series_from_a_real_answer(prom_stack: PromStack) -> None:
    outcome = prom_stack.prometheus.client().instant("mlload_known_pair", time.time())
    assert outcome.series == 2 and outcome.value == 1.0
    assert "member=a" in str(outcome.warning)


def _measure(stack: PromStack, window_s: float) -> tuple[float, float, dict, dict]:
    """Wall-clock window [t0, t1] with the demo's own stats at both ends."""
    t0, s0 = time.time(), stack.demo.stats()
    time.sleep(window_s)  # the window itself: load runs, nothing is synchronised by it
    t1, s1 = time.time(), stack.demo.stats()
    stack.wait_for_scrape_after(t1)
    return t0, t1, s0, s1


def _self_measured(s0: dict, s1: dict) -> dict[str, float]:
    dt = s1["uptime_s"] - s0["uptime_s"]
    per_model = {
        m: (s1["inference_us"][m] - s0["inference_us"][m]) / n / 1000
        for m in s1["requests"]
        if (n := s1["requests"][m] - s0["requests"][m]) > 0
    }
    return {
        "api.cpuUtilization": 1000 * (s1["process_cpu_s"] - s0["process_cpu_s"]) / dt,
        "triton.cpuUtilization": 1000 * (s1["triton_cpu_s"] - s0["triton_cpu_s"]) / dt,
        "triton.gpuUtilization": 100 * (s1["busy_slot_s"] - s0["busy_slot_s"]) / (s1["slots"] * dt),
        "triton.inferenceRequestDuration": max(per_model.values()),
    }


def test_recommend_end_to_end_agrees_with_the_demo_server(prom_stack: PromStack) -> None:
    demo = prom_stack.demo
    demo.set_config(cpu_ms=1.0)
    with LoadThreads(demo.url, "/work", threads=4, deadline_s=20) as load:
        # each GPU gauge sample covers the scrape interval before it: let the first sample
        # inside the window see load only
        time.sleep(1.2)
        t0, t1, s0, s1 = _measure(prom_stack, 4.0)
    assert not load.errors
    settings = HpaSettings(prometheus_url=prom_stack.prometheus.url)
    report = recommend(prom_stack.prometheus.client(), settings, t0, t1)
    seen = {t.key: t for t in report.triggers}
    truth = _self_measured(s0, s1)
    print("\nHPA end-to-end (Prometheus vs the demo's own stats):")
    for key, want in truth.items():
        got = seen[key].observed
        assert got is not None, seen[key].warning
        print(f"  {key:34s} prometheus {got:9.2f}  demo {want:9.2f}  ratio {got / want:.3f}")
    for key, want in truth.items():
        assert seen[key].warning is None, seen[key].warning
        assert seen[key].observed == pytest.approx(want, rel=0.15), key
    # 4 clients on 4 slots keep the "GPU" busy: Triton saturates, API is observed only
    assert report.window_s == int(t1 - t0)
    assert report.saturated_tier == "triton"
    gpu = seen["triton.gpuUtilization"]
    assert gpu.observed is not None and gpu.is_binding and gpu.priority == "primary"
    assert gpu.recommended == round(gpu.observed * 0.8, 2)
    assert seen["api.cpuUtilization"].recommended is None
    assert "1 API : 1 Triton" in seen["api.cpuUtilization"].note


def test_cpu_heavier_server_trips_the_drift_gate(prom_stack: PromStack) -> None:
    demo = prom_stack.demo
    client = prom_stack.prometheus.client()
    settings = HpaSettings(prometheus_url=prom_stack.prometheus.url, bottleneck_tier="api")
    reports = []
    for cpu_ms in (0.5, 1.5):
        demo.set_config(cpu_ms=cpu_ms)
        with LoadThreads(demo.url, "/work", threads=4, deadline_s=20) as load:
            time.sleep(0.3)
            t0, t1, s0, s1 = _measure(prom_stack, 3.0)
        assert not load.errors
        report = recommend(client, settings, t0, t1)
        api = report.triggers[0]
        truth = _self_measured(s0, s1)["api.cpuUtilization"]
        print(
            f"\ncpu_ms={cpu_ms}: API cpu prometheus {api.observed:.1f} m, demo {truth:.1f} m, "
            f"recommended {api.recommended} m"
        )
        assert api.observed == pytest.approx(truth, rel=0.15)
        reports.append(report)
    demo.set_config(cpu_ms=0.0)
    baseline = reports[0].to_dict()
    with pytest.raises(PerformanceRegression) as info:
        assert_hpa_stable(baseline, reports[1], 0.10)
    message = str(info.value)
    print(message)
    assert "HPA trigger API cpuUtilization moved +" in message
    assert f"baseline {reports[0].triggers[0].recommended:g}m" in message
    assert "past the 10 % drift threshold" in message
    assert "--mlload-update-baseline" in message
    assert (info.value.change_ratio or 0.0) > 0.3
