"""Unit tests of the HPA/KEDA trigger logic with :class:`FakePrometheus` (no network, no clock)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import yaml

from pytest_mlload.errors import (
    BaselineError,
    ConfigError,
    Inconclusive,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from pytest_mlload.hpa.prometheus import QueryOutcome
from pytest_mlload.hpa.recommend import (
    NO_DATA_NOTE,
    HpaReport,
    HpaSettings,
    assert_hpa_stable,
    build_queries,
    check_drift,
    derive_app_selector,
    recommend,
)
from pytest_mlload.testing.fakes import FakePrometheus

START, END = 1_000.0, 1_030.0  # a 30 s operating-point window


def run(
    observed: dict[str, Any],
    *,
    start: float = START,
    end: float = END,
    **settings: Any,
) -> tuple[HpaReport, FakePrometheus]:
    s = HpaSettings(prometheus_url="http://prom:9090", **settings)
    fake = FakePrometheus.for_triggers(s, max(int(end - start), 2), observed)
    return recommend(fake, s, start, end), fake


def by_key(report: HpaReport) -> dict[str, Any]:
    return {t.key: t for t in report.triggers}


# -- query builder --------------------------------------------------------------------------


def test_queries_match_the_seed_promql_exactly() -> None:
    queries = build_queries(HpaSettings(), 30)
    assert [q.query for q in queries] == [
        '1000 * avg(rate(container_cpu_usage_seconds_total{container="api", pod=~".*-api-.*"}[30s]))',  # noqa: E501 - the exact seed string
        '1000 * avg(rate(container_cpu_usage_seconds_total{container="triton", pod=~".*-triton-.*"}[30s]))',  # noqa: E501 - the exact seed string
        'avg(avg_over_time(nv_gpu_utilization_ratio{application=~".*-triton-.*"}[30s])) * 100',
        "max(avg by (model) (rate(nv_inference_request_duration_us_microseconds_total"
        '{application=~".*-triton-.*"}[30s]) / rate(nv_inference_count_requests_total'
        '{application=~".*-triton-.*"}[30s]))) / 1000',
    ]
    assert [(q.component, q.name, q.unit, q.metric_type, q.current_threshold) for q in queries] == [
        ("api", "cpuUtilization", "m", "AverageValue", 1000.0),
        ("triton", "cpuUtilization", "m", "AverageValue", 1000.0),
        ("triton", "gpuUtilization", "%", "Value", 80.0),
        ("triton", "inferenceRequestDuration", "ms", "Value", 500.0),
    ]


def test_queries_use_the_selectors_and_the_derived_application() -> None:
    s = HpaSettings(
        api_pod_selector="ml-load-test-r1-api.+",
        triton_pod_selector="ml-load-test-r1-triton-modelverse.+",
    )
    api, triton_cpu, gpu, infer = build_queries(s, 45)
    assert 'pod=~"ml-load-test-r1-api.+"}[45s]' in api.query
    assert 'pod=~"ml-load-test-r1-triton-modelverse.+"}[45s]' in triton_cpu.query
    assert 'application=~"ml-load-test-r1-triton-modelverse.*"}[45s]' in gpu.query
    assert infer.query.count('application=~"ml-load-test-r1-triton-modelverse.*"') == 2


def test_keda_queries_sum_cpu_over_a_production_range() -> None:
    api, triton_cpu, gpu, infer = build_queries(HpaSettings(), 30)
    assert api.keda_query == (
        '1000 * sum(rate(container_cpu_usage_seconds_total{container="api", pod=~".*-api-.*"}[2m]))'
    )
    assert triton_cpu.keda_query.startswith("1000 * sum(rate(")
    assert gpu.keda_query == gpu.query.replace("[30s]", "[2m]")
    assert infer.keda_query == infer.query.replace("[30s]", "[2m]")
    assert infer.fallback_query is not None
    assert "rate(nv_inference_request_duration_us{" in infer.fallback_query
    assert "rate(nv_inference_count{" in infer.fallback_query


@pytest.mark.parametrize(
    ("selector", "app"),
    [
        ("run-triton-modelverse.+", "run-triton-modelverse.*"),
        ("run-triton-modelverse.*", "run-triton-modelverse.*"),
        (".*-triton-.*", ".*-triton-.*"),
        ("run-triton-modelverse", "run-triton-modelverse.*"),
        ("run-triton-x.+.+", "run-triton-x.+.*"),  # only one suffix is removed
        (r"run-triton\.*", r"run-triton\.*.*"),  # an escaped dot is not "any character"
        (r"run-triton\\.*", r"run-triton\\.*"),  # an escaped backslash then ".*"
    ],
)
def test_app_derivation(selector: str, app: str) -> None:
    assert derive_app_selector(selector) == app


def test_selectors_are_quoted_for_promql() -> None:
    (api, *_rest) = build_queries(HpaSettings(api_pod_selector=r"demo-api-\d+"), 10)
    assert r'pod=~"demo-api-\\d+"' in api.query


def test_window_must_be_whole_seconds() -> None:
    with pytest.raises(ConfigError, match="window_s"):
        build_queries(HpaSettings(), 0)


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prometheus_url", "prom:9090"),
        ("api_pod_selector", ""),
        ("triton_pod_selector", "(unclosed"),
        ("bottleneck_tier", "gpu"),
        ("hpa_margin", 0.0),
        ("hpa_margin", 1.5),
        ("api_cpu_threshold", 0),
        ("triton_cpu_threshold", -1.0),
        ("triton_gpu_threshold", float("nan")),
        ("triton_infer_threshold", True),
        ("api_replicas", 0),
        ("api_replicas", 1.5),
        ("drift_threshold", 0.0),
        ("drift_threshold", 10),
    ],
)
def test_bad_settings_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(
        ConfigError, match=rf"HPA setting {field}=.*--mlload-{field.replace('_', '-')}"
    ):
        HpaSettings(**{field: value})


def test_settings_defaults_and_normalisation() -> None:
    s = HpaSettings(bottleneck_tier="Triton")
    assert s.bottleneck_tier == "triton"
    assert s.to_dict() == {
        "prometheus_url": None,
        "api_pod_selector": ".*-api-.*",
        "triton_pod_selector": ".*-triton-.*",
        "bottleneck_tier": "triton",
        "hpa_margin": 0.8,
        "api_cpu_threshold": 1000.0,
        "triton_cpu_threshold": 1000.0,
        "triton_gpu_threshold": 80.0,
        "triton_infer_threshold": 500.0,
        "api_replicas": 1,
        "drift_threshold": 0.10,
    }


# -- window ---------------------------------------------------------------------------------


def test_all_queries_at_window_end_with_range_clamped_to_the_window() -> None:
    report, fake = run({"api.cpuUtilization": 900.0}, start=1000.0, end=1017.9)
    assert report.window_s == 17 and 1017.9 - 17 >= 1000.0
    assert {at for _, at in fake.calls} == {1017.9}
    assert all("[17s]" in q for q, _ in fake.calls)
    assert report.to_dict()["window_start_epoch"] == 1000.0
    assert report.to_dict()["window_end_epoch"] == 1017.9


@pytest.mark.parametrize(("start", "end"), [(1000.0, 1001.5), (None, 1000.0), (1000.0, None)])
def test_too_short_window_says_so_and_queries_nothing(start: Any, end: Any) -> None:
    s = HpaSettings()
    fake = FakePrometheus()
    report = recommend(fake, s, start, end)
    assert fake.calls == []
    assert report.window_s is None and report.saturated_tier is None
    assert report.recommended == []
    assert "too short to have an operating-point window" in report.notes[0]
    assert all("too short" in t.note for t in report.triggers)


def test_two_second_window_is_enough() -> None:
    report, fake = run({"api.cpuUtilization": 900.0}, start=1000.0, end=1002.0)
    assert report.window_s == 2 and all("[2s]" in q for q, _ in fake.calls)


# -- tier logic -----------------------------------------------------------------------------


def test_api_saturated_in_auto() -> None:
    report, _ = run(
        {
            "api.cpuUtilization": 900.0,
            "triton.cpuUtilization": 200.0,
            "triton.gpuUtilization": 40.0,
            "triton.inferenceRequestDuration": 100.0,
        }
    )
    t = by_key(report)
    assert report.saturated_tier == "api"
    assert report.tier_ratios == {"api": 0.9, "triton": 0.5}
    api = t["api.cpuUtilization"]
    assert (api.recommended, api.priority, api.is_binding) == (720.0, "primary", True)
    assert "binding (first to fire): 90 % of the current threshold" in api.note
    for key in (
        "triton.cpuUtilization",
        "triton.gpuUtilization",
        "triton.inferenceRequestDuration",
    ):
        assert t[key].recommended is None and t[key].priority is None
        assert "Triton not the bottleneck this run" in t[key].note
        assert "API saturated" in t[key].note and "6 API : 1 Triton" in t[key].note
    assert t["triton.gpuUtilization"].is_binding  # binding within its own component
    assert "take Triton thresholds from a 6 API : 1 Triton run" in report.notes


def test_triton_saturated_in_auto_binding_primary_others_secondary() -> None:
    report, _ = run(
        {
            "api.cpuUtilization": 500.0,
            "triton.cpuUtilization": 300.0,
            "triton.gpuUtilization": 76.0,
            "triton.inferenceRequestDuration": 450.0,
        }
    )
    t = by_key(report)
    assert report.saturated_tier == "triton"
    assert report.tier_ratios == {"api": 0.5, "triton": 0.95}
    assert (t["triton.gpuUtilization"].recommended, t["triton.gpuUtilization"].priority) == (
        60.8,
        "primary",
    )
    assert (
        t["triton.inferenceRequestDuration"].recommended,
        t["triton.inferenceRequestDuration"].priority,
    ) == (
        360.0,
        "secondary",
    )
    assert (t["triton.cpuUtilization"].recommended, t["triton.cpuUtilization"].priority) == (
        240.0,
        "secondary",
    )
    api = t["api.cpuUtilization"]
    assert api.recommended is None and api.observed == 500.0
    assert "1 API : 1 Triton" in api.note and "Triton saturated" in api.note
    assert [r.key for r in report.recommended][0] == "triton.gpuUtilization"
    assert any("Triton CPU is a safety net" in n for n in report.notes)
    assert "take API thresholds from a 1 API : 1 Triton run" in report.notes


def test_no_tier_saturated_in_auto() -> None:
    report, _ = run({"api.cpuUtilization": 840.0, "triton.gpuUtilization": 60.0})
    assert report.saturated_tier is None
    assert report.recommended == []
    assert any("no tier reached 85 %" in n for n in report.notes)
    assert "no tier saturated" in by_key(report)["api.cpuUtilization"].note


def test_equal_ratios_choose_api_and_the_boundary_counts() -> None:
    report, _ = run({"api.cpuUtilization": 850.0, "triton.gpuUtilization": 68.0})
    assert report.tier_ratios == {"api": 0.85, "triton": 0.85}
    assert report.saturated_tier == "api"


def test_explicit_tier_bypasses_the_check_but_records_ratios() -> None:
    report, _ = run(
        {"api.cpuUtilization": 900.0, "triton.gpuUtilization": 20.0},
        bottleneck_tier="triton",
    )
    assert report.saturated_tier == "triton" and report.bottleneck_tier == "triton"
    assert report.tier_ratios == {"api": 0.9, "triton": 0.25}
    assert by_key(report)["triton.gpuUtilization"].recommended == 16.0
    assert by_key(report)["api.cpuUtilization"].recommended is None
    assert any("declared as triton and not checked" in n and "25 %" in n for n in report.notes)


def test_margin_math_rounds_to_two_decimals() -> None:
    report, _ = run({"api.cpuUtilization": 123.456}, bottleneck_tier="api", hpa_margin=0.7)
    assert by_key(report)["api.cpuUtilization"].recommended == 86.42


def test_zero_observation_in_the_saturated_tier_gets_no_threshold() -> None:
    report, _ = run(
        {"triton.gpuUtilization": 90.0, "triton.cpuUtilization": 0.0}, bottleneck_tier="triton"
    )
    cpu = by_key(report)["triton.cpuUtilization"]
    assert cpu.recommended is None and "observed 0" in cpu.note


# -- warnings -------------------------------------------------------------------------------


def test_no_series_warning_per_trigger_names_its_query() -> None:
    report, _ = run({"api.cpuUtilization": 900.0})
    t = by_key(report)
    for key in (
        "triton.cpuUtilization",
        "triton.gpuUtilization",
        "triton.inferenceRequestDuration",
    ):
        assert t[key].observed is None and t[key].note.startswith(NO_DATA_NOTE)
        assert "no series: check the selector and that the target is scraped" in t[key].warning
        assert t[key].query in t[key].warning
        assert "rate() needs two scrapes" in t[key].note  # the window is under 60 s
    assert len(set(report.warnings)) == 3
    assert report.saturated_tier == "api"  # the data that did come back still counts


def test_unreachable_prometheus_warns_per_trigger_and_never_raises() -> None:
    s = HpaSettings(prometheus_url="http://127.0.0.1:9")
    fake = FakePrometheus(unreachable=True, url="http://127.0.0.1:9")
    report = recommend(fake, s, START, END)
    assert report.saturated_tier is None and report.recommended == []
    assert len(report.warnings) == 4 and len(set(report.warnings)) == 4
    assert all("Prometheus unreachable at http://127.0.0.1:9" in w for w in report.warnings)


def test_error_and_several_series_warnings_are_kept() -> None:
    s = HpaSettings()
    api, triton_cpu, gpu, _ = build_queries(s, 30)
    fake = FakePrometheus(
        {
            api.query: QueryOutcome(
                api.query, None, 0, "Prometheus at x answered HTTP 400: bad_data"
            ),
            gpu.query: QueryOutcome(
                gpu.query, 90.0, 2, "2 series came back where one was expected"
            ),
            triton_cpu.query: 100.0,
        }
    )
    report = recommend(fake, s, START, END)
    t = by_key(report)
    assert "HTTP 400: bad_data" in t["api.cpuUtilization"].warning
    assert t["api.cpuUtilization"].observed is None
    assert t["triton.gpuUtilization"].observed == 90.0
    assert "2 series" in t["triton.gpuUtilization"].warning
    assert t["triton.gpuUtilization"].recommended == 72.0


def test_inference_duration_falls_back_to_native_triton_names() -> None:
    s = HpaSettings()
    *_, infer = build_queries(s, 30)
    assert infer.fallback_query is not None
    fake = FakePrometheus({infer.fallback_query: 450.0})
    report = recommend(fake, s, START, END)
    t = by_key(report)["triton.inferenceRequestDuration"]
    assert t.observed == 450.0 and t.query == infer.fallback_query
    assert t.keda_query == infer.fallback_keda_query
    assert "Triton's native names" in t.note
    assert report.saturated_tier == "triton" and t.recommended == 360.0


# -- report and KEDA YAML -------------------------------------------------------------------


TRITON_RUN = {
    "api.cpuUtilization": 500.0,
    "triton.cpuUtilization": 300.0,
    "triton.gpuUtilization": 76.0,
    "triton.inferenceRequestDuration": 450.0,
}


def test_to_dict_is_json_and_round_trips() -> None:
    report, _ = run(TRITON_RUN, api_replicas=6)
    d = json.loads(json.dumps(report.to_dict()))
    assert d["saturated_tier"] == "triton" and d["api_replicas"] == 6
    assert d["tier_ratios"] == {"api": 0.5, "triton": 0.95}
    assert set(d["triggers"][0]) >= {
        "component", "name", "unit", "metric_type", "current_threshold", "observed",
        "recommended", "is_binding", "priority", "query", "note", "warning",
    }  # fmt: skip
    assert HpaReport.from_dict(d) == report


def test_keda_yaml_parses_back_with_the_fields() -> None:
    report, _ = run(TRITON_RUN)
    text = report.keda_yaml("http://vmselect:8481/select/0/prometheus")
    assert text.startswith("# KEDA ScaledObject triggers for Triton")
    doc = yaml.safe_load(text)
    triggers = doc["triggers"]
    assert [t["name"] for t in triggers] == [
        "triton-gpuUtilization",
        "triton-cpuUtilization",
        "triton-inferenceRequestDuration",
    ]
    gpu = triggers[0]
    assert gpu["type"] == "prometheus" and gpu["metricType"] == "Value"
    assert gpu["metadata"] == {
        "serverAddress": "http://vmselect:8481/select/0/prometheus",
        "query": 'avg(avg_over_time(nv_gpu_utilization_ratio{application=~".*-triton-.*"}[2m])) * 100',  # noqa: E501 - the exact seed string
        "threshold": "60.8",
    }
    cpu = triggers[1]
    assert cpu["metricType"] == "AverageValue" and cpu["metadata"]["threshold"] == "240"
    assert cpu["metadata"]["query"].startswith("1000 * sum(rate(")
    assert all(isinstance(t["metadata"]["threshold"], str) for t in triggers)


def test_keda_yaml_without_recommendations_is_an_empty_list() -> None:
    report, _ = run({"api.cpuUtilization": 100.0})
    doc = yaml.safe_load(report.keda_yaml())
    assert doc == {"triggers": []}
    assert report.keda_yaml().startswith("# no recommended HPA triggers: no tier reached 85 %")


def test_fake_rejects_unknown_trigger_keys() -> None:
    with pytest.raises(ConfigError, match="unknown trigger"):
        FakePrometheus.for_triggers(HpaSettings(), 30, {"api.gpu": 1.0})


# -- drift gate -----------------------------------------------------------------------------


def api_report(api_m: float | None, **kw: Any) -> HpaReport:
    return run({"api.cpuUtilization": api_m}, bottleneck_tier="api", **kw)[0]


def history(*api_m: float, **kw: Any) -> list[dict[str, Any]]:
    """Baseline runs' HPA reports, oldest first (recommended = observed x 0.8)."""
    return [api_report(m, **kw).to_dict() for m in api_m]


# three runs 2-3 % apart (recommended 700, 720, 740 m): their spread decides 8.3 %
STEADY = (875.0, 900.0, 925.0)


def test_a_small_move_passes_and_skips_are_visible() -> None:
    findings = assert_hpa_stable(history(*STEADY), api_report(937.5), 0.10)  # 750: +4.2 %
    f = {x.key: x for x in findings}
    api = f["api.cpuUtilization"]
    assert (api.status, api.baseline, api.runs) == ("ok", 720.0, 3)
    assert api.change_ratio == pytest.approx(750 / 720 - 1)
    # the interval holds the run-to-run spread: it reaches past the threshold, and the
    # point decides because this history can decide 10 %
    assert api.low is not None and api.high is not None and api.decidable is not None
    assert api.low < 0 < api.change_ratio < 0.10 < api.high
    assert api.decidable == pytest.approx(0.083, abs=0.001)
    assert "within the 10 % drift threshold" in api.describe()
    skipped = [x for x in findings if x.status == "skipped"]
    assert len(skipped) == 3
    assert all("no recommendation in the baseline" in x.reason for x in skipped)
    assert all("no recommendation now" in x.reason for x in skipped)


def test_one_run_cannot_decide_ten_percent_and_says_so() -> None:
    """A one-run baseline carries the 3 % prior: the smallest threshold it decides is 11.5 %,
    so a move whose interval straddles 10 % is inconclusive, with the way out."""
    with pytest.raises(Inconclusive) as info:
        assert_hpa_stable(api_report(900.0).to_dict(), api_report(937.5), 0.10)
    message = str(info.value)
    assert message.startswith(
        "HPA drift gate inconclusive: HPA trigger API cpuUtilization moved +4.2 % (baseline "
        "720m -> now 750m, 95 % CI -4.1 %..+13.2 %): the run-to-run spread of this setup "
        "(3.0 % over 1 baseline run) cannot decide a 10 % threshold; the smallest it can "
        "decide is 11.5 %"
    ), message
    assert "record at least one more baseline run" in message
    assert info.value.reason == "api.cpuUtilization"


def test_drift_past_threshold_fails_with_the_numbers() -> None:
    with pytest.raises(PerformanceRegression) as info:
        assert_hpa_stable(history(*STEADY), api_report(1000.0), 0.10)  # 800: +11.1 %
    e = info.value
    assert str(e) == (
        "HPA trigger API cpuUtilization moved +11.1 % (baseline 720m -> now 800m, 95 % CI "
        "+4.6 %..+18.1 %), past the 10 % drift threshold; rerun with --mlload-update-baseline "
        "if the new threshold is intended"
    )
    assert (e.metric, e.baseline, e.observed, e.threshold_ratio) == (
        "hpa.api.cpuUtilization",
        720.0,
        800.0,
        0.10,
    )
    assert e.change_ratio == pytest.approx(800 / 720 - 1)
    assert isinstance(e, AssertionError)


def test_a_large_drift_fails_even_against_one_run() -> None:
    with pytest.raises(PerformanceRegression, match=r"moved -25.0 % \(baseline 720m -> now 540m"):
        assert_hpa_stable(api_report(900.0).to_dict(), api_report(675.0))


def test_exactly_at_the_threshold_is_not_drift() -> None:
    findings = check_drift(history(*STEADY), api_report(990.0), 0.10)  # 792: +10 %
    assert findings[0].status == "ok"


def test_a_zero_has_no_log_scale_and_compares_points() -> None:
    """A recommendation of 0 (e.g. 0 % GPU) has no relative spread: the newest run's value is
    compared as a point; a move from 0 is drift, 0 -> 0 is not, a fall to 0 is -100 %."""

    def now(v: float) -> HpaReport:
        return HpaReport.from_dict({"triggers": [trigger(v)]})

    zeros = [{"triggers": [trigger(0.0)]}] * 2
    [same] = check_drift(zeros, now(0.0))
    assert (same.status, same.change_ratio) == ("ok", 0.0)
    [moved] = check_drift(zeros, now(8.0))
    assert (moved.status, moved.change_ratio, moved.baseline) == ("drift", math.inf, 0.0)
    assert "moved from 0 (baseline 0m -> now 8m)" in moved.describe()
    [fell] = check_drift([{"triggers": [trigger(v)]} for v in (700.0, 720.0)], now(0.0))
    assert (fell.status, fell.change_ratio, fell.low) == ("drift", -1.0, None)


def test_a_noisy_history_is_inconclusive_naming_its_spread() -> None:
    """Runs 600-860 m apart (10.8 % spread, pooled with the prior): a 19 % move is neither
    inside 10 % nor decidably past it."""
    with pytest.raises(Inconclusive) as info:
        assert_hpa_stable(history(750.0, 900.0, 1075.0), api_report(1071.0), 0.10)
    message = str(info.value)
    assert "moved +19.0 % (baseline 720m -> now 856.8m" in message
    assert "(10.8 % over 3 baseline runs) cannot decide a 10 % threshold" in message
    assert "the smallest it can decide is 38.1 %" in message


def test_runs_measured_with_other_settings_are_left_out() -> None:
    """The newest run sets the reference set-up; an older run with 6 API replicas (and a far
    other recommendation) is not part of the history."""
    runs = history(2000.0, api_replicas=6) + history(*STEADY)
    [api, *_] = check_drift(runs, api_report(937.5), 0.10)  # takes every run it is given:
    assert (api.status, api.runs) == ("inconclusive", 4)  # the 1600m run widens the spread
    [api, *_] = assert_hpa_stable(runs, api_report(937.5), 0.10)
    assert (api.status, api.runs, api.baseline) == ("ok", 3, 720.0)


def test_unchanged_recommendations_rarely_drift_and_a_real_move_is_caught() -> None:
    """Simulated A/A: recommendations with 3 % lognormal run-to-run noise, a 5-run history,
    2,000 trials: drift (either way) in <= 1 %; a 25 % move is caught in >= 98 %."""
    rng = random.Random(7)
    trials, false, caught = 2000, 0, 0
    for _ in range(trials):
        runs = [{"triggers": [trigger(720 * rng.lognormvariate(0, 0.03))]} for _ in range(5)]
        same = api_report(900 * rng.lognormvariate(0, 0.03))
        moved = api_report(900 * 1.25 * rng.lognormvariate(0, 0.03))
        false += check_drift(runs, same)[0].status == "drift"
        caught += check_drift(runs, moved)[0].status == "drift"
    print(f"A/A drift {false}/{trials}, +25 % caught {caught}/{trials}")
    assert false <= trials * 0.01
    assert caught >= trials * 0.98


def trigger(recommended: float) -> dict[str, Any]:
    return {"component": "api", "name": "cpuUtilization", "unit": "m", "recommended": recommended}


def test_several_triggers_drifting_are_all_named() -> None:
    baseline = run(TRITON_RUN)[0].to_dict()
    now = run(
        {**TRITON_RUN, "triton.gpuUtilization": 60.0, "triton.inferenceRequestDuration": 600.0}
    )[0]
    with pytest.raises(PerformanceRegression) as info:
        assert_hpa_stable(baseline, now)
    message = str(info.value)
    # one run: the interval is the point -+ 1.96 x 3 % x sqrt(2) on the log scale
    assert (
        "Triton gpuUtilization moved -21.1 % (baseline 60.8 % -> now 48 %, 95 % CI "
        "-27.4 %..-14.2 %)" in message
    )
    assert (
        "Triton inferenceRequestDuration moved +33.3 % (baseline 360 ms -> now 480 ms, 95 % CI "
        "+22.7 %..+44.9 %)" in message
    )
    assert info.value.metric == "hpa.triton.inferenceRequestDuration"  # the worst one


def test_all_skipped_is_inconclusive_with_the_reasons() -> None:
    baseline = run(TRITON_RUN)[0].to_dict()  # Triton recommendations only
    s = HpaSettings(prometheus_url="http://127.0.0.1:9")
    unreachable = recommend(
        FakePrometheus(unreachable=True, url="http://127.0.0.1:9"), s, START, END
    )
    with pytest.raises(Inconclusive) as info:
        assert_hpa_stable(baseline, unreachable)
    assert "no trigger had a recommendation on both sides" in str(info.value)
    assert "Prometheus unreachable at http://127.0.0.1:9" in info.value.reason
    assert "triton.gpuUtilization" in info.value.reason


def test_other_tier_saturated_now_is_inconclusive() -> None:
    baseline = run(TRITON_RUN)[0].to_dict()
    with pytest.raises(Inconclusive, match="no recommendation in the baseline"):
        assert_hpa_stable(baseline, api_report(900.0))


def test_missing_baseline_and_mismatched_settings() -> None:
    with pytest.raises(MissingBaseline, match="--mlload-update-baseline"):
        assert_hpa_stable(None, api_report(900.0))
    with pytest.raises(SettingsMismatch, match="api_replicas 1 in the baseline, 6 now"):
        assert_hpa_stable(api_report(900.0).to_dict(), api_report(900.0, api_replicas=6))
    with pytest.raises(SettingsMismatch, match="hpa_margin"):
        assert_hpa_stable(api_report(900.0).to_dict(), api_report(900.0, hpa_margin=0.7))


@pytest.mark.parametrize("baseline", [{}, {"triggers": "x"}, {"triggers": [{"name": "a"}]}])
def test_malformed_baseline_is_a_baseline_error(baseline: dict[str, Any]) -> None:
    with pytest.raises(BaselineError, match="malformed"):
        check_drift(baseline, api_report(900.0))


def test_bad_drift_threshold() -> None:
    with pytest.raises(ConfigError, match="drift threshold"):
        check_drift(api_report(900.0).to_dict(), api_report(900.0), 0)
