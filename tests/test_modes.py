"""Traffic modes: planning (pure) and real runs against the demo server on 127.0.0.1."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from pytest_mlload.config import RunSettings, resolve_settings
from pytest_mlload.errors import ConfigError
from pytest_mlload.load.engine import run_capacity
from pytest_mlload.load.modes import exploration_summary, plan_parts, rate_limits, run_modes
from pytest_mlload.results import CapacityResult
from pytest_mlload.testing.demo import DemoServerProcess, capacity_rps, mix_capacity_rps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "example_suite"))  # the ml-loadtest style weights module
sys.path.insert(0, str(Path(__file__).parent))
from engine_targets.tasks import Classify as ClassifyTaskSet  # noqa: E402
from tasks import Classify, Embed, Infer  # noqa: E402

WEIGHTS = {Classify: 50, Embed: 30, Infer: 20}


def names(settings: RunSettings, target=WEIGHTS, **kw):
    return [p.name for p in plan_parts(target, settings, **kw)]


def test_plan_names_carry_their_mode_so_endpoints_never_collide():
    s = RunSettings(mode=("individual", "production", "exploration", "spike"))
    assert names(s) == [
        "individual /v1/classify",
        "individual /v1/embed",
        "individual /v2/models/resnet/infer",
        "production",
        "exploration 2x /v1/classify",
        "exploration 2x /v1/embed",
        "exploration 2x /v2/models/resnet/infer",
        "spike",
    ]

    class Production:  # an endpoint literally called "production" or "baseline"
        endpoint = "production"

        def test_endpoint(self) -> None: ...

    s2 = RunSettings(mode=("individual", "production"))
    assert names(s2, {Production: 1, Classify: 1}) == [
        "individual production",
        "individual /v1/classify",
        "production",
    ]


def test_exploration_doubles_each_weight_and_adds_user_mixes():
    s = RunSettings(mode=("exploration",))
    parts = plan_parts(WEIGHTS, s, mixes=[{Classify: 1, Embed: 1}])
    by_name = {p.name: p for p in parts}
    assert by_name["exploration 2x /v1/embed"].weights == {
        "/v1/classify": 50,
        "/v1/embed": 60,
        "/v2/models/resnet/infer": 20,
    }
    assert by_name["exploration mix 1"].weights == {"/v1/classify": 1, "/v1/embed": 1}
    assert "production" in by_name  # the reference for sensitivity


def test_weights_module_by_name_object_or_setting():
    import production_weights

    s = RunSettings(mode=("production",))
    a = plan_parts("production_weights", s)[0]
    b = plan_parts(production_weights, s)[0]
    c = plan_parts(None, RunSettings(mode=("production",), weights_module="production_weights"))[0]
    assert (
        a.weights
        == b.weights
        == c.weights
        == {"/v1/classify": 50, "/v1/embed": 30, "/v2/models/resnet/infer": 20}
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ({Classify: 0, Embed: 0}, "all weights are zero"),
        ({Classify: -1}, "weights must be >= 0"),
        ({Classify: "x"}, "not a number"),
        (types.ModuleType("empty_weights"), "has no production_weights"),
        ("no_such_module_xyz", "cannot be imported"),
        ({object: 1}, "lacks endpoint and test_endpoint"),
        ({}, "empty"),
    ],
)
def test_bad_weights_are_clear_errors(target, message):
    with pytest.raises(ConfigError, match=message):
        plan_parts(target, RunSettings(mode=("production",)))


def test_single_taskset_in_a_mix_mode_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="needs a weights mix"):
        plan_parts(Classify, RunSettings(mode=("production",)))
    with pytest.raises(ConfigError, match="needs a target"):
        plan_parts(None, RunSettings(mode=("production",)))


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="mode"):
        RunSettings(mode=("turbo",))


@pytest.mark.parametrize(
    ("mode", "modes"),
    [
        ("check", ("individual",)),
        ("check production", ("production",)),
        (("individual", "check", "spike"), ("individual", "spike")),
    ],
)
def test_check_in_mode_means_those_modes_in_check_mode(mode, modes):
    s = resolve_settings({"mode": mode})
    assert (s.mode, s.check) == (modes, True)
    # the mode a baseline is compared on carries no "check": a check run is comparable with
    # the full search that recorded it
    assert s.comparable() == resolve_settings({"mode": " ".join(modes)}).comparable()
    assert names(s) == names(RunSettings(mode=modes))
    assert not resolve_settings({"mode": "production"}).check
    assert resolve_settings(cli={"check": "true"}).check  # --mlload-check / ini mlload_check


def test_spike_bounds_and_timeout_settings():
    assert (RunSettings().spike_max_p99_ms, RunSettings().spike_max_error_ratio) == (0.0, 0.0)
    assert RunSettings(spike_max_p99_ms=250).spike_max_p99_ms == 250.0
    with pytest.raises(ConfigError, match="spike_max_p99_ms=-1.0 is invalid: expected a number"):
        RunSettings(spike_max_p99_ms=-1)
    with pytest.raises(ConfigError, match="spike_max_error_ratio=1.5 is invalid"):
        RunSettings(spike_max_error_ratio=1.5)
    # request_timeout_s changes results, so it is compared, but only when set: baselines
    # recorded at the default still compare equal
    assert "request_timeout_s" not in RunSettings().comparable()
    assert RunSettings(request_timeout_s=2).comparable()["request_timeout_s"] == 2.0
    assert RunSettings(request_timeout_s=2).comparable() != RunSettings().comparable()


def _result(name: str, cap: float, status: str = "converged") -> CapacityResult:
    return CapacityResult(
        name=name,
        host="h",
        status=status,
        reason="",
        capacity_rps=cap,
        p50_ms=1.0,
        p95_ms=1.0,
        p99_ms=1.0,
        users=1,
        requests=100,
        failures=0,
        error_ratio=0.0,
        measure_s=1.0,
        elapsed_s=1.0,
        target_p99_ms=10.0,
    )


def test_exploration_summary_and_rate_limits_math():
    s = RunSettings(mode=("exploration",))
    plan = plan_parts({Classify: 1, Embed: 1}, s)
    parts = {
        "production": _result("production", 100.0),
        "exploration 2x /v1/classify": _result("x", 110.0),
        "exploration 2x /v1/embed": _result("y", 90.0),
    }
    summary = exploration_summary(parts, plan)
    assert summary["best_mix"] == "exploration 2x /v1/classify"
    # share 1/2 -> 2/3 is +33.3 %; capacity +10 % -> sensitivity 0.3
    assert summary["sensitivity"]["/v1/classify"] == pytest.approx(0.3)
    assert summary["sensitivity"]["/v1/embed"] == pytest.approx(-0.3)
    limits = rate_limits(
        {
            "production": _result("p", 100.0),
            "spike": _result("s", 300.0),
            "individual /a": _result("a", 50.0, "inconclusive"),
        },
        0.7,
    )
    assert limits == {"production": 70.0}


FAST = dict(
    target_p99_ms=200, max_users=48, measure_s=2.5, probe_s=1.5, min_samples=200, max_duration_s=45
)


@pytest.fixture(scope="module")
def demo():
    with DemoServerProcess(slots=4, classify_ms=20.0, embed_ms=30.0, infer_ms=40.0) as server:
        yield server


@pytest.mark.engine
def test_individual_and_production_capacities_follow_the_known_truth(demo):
    settings = RunSettings(mode=("individual", "production"), **FAST)
    runs = run_modes(
        "production_weights",
        settings,
        lambda part: run_capacity(
            part.target, host=demo.url, settings=settings, name=part.name, kind=part.kind
        ),
    )
    truth = {"/v1/classify": 20.0, "/v1/embed": 30.0, "/v2/models/resnet/infer": 40.0}
    for endpoint, ms in truth.items():
        r = runs[f"individual {endpoint}"]
        assert r.converged, r.reason
        assert r.capacity_rps == pytest.approx(capacity_rps(slots=4, service_ms=ms), rel=0.10)
    mix = runs["production"]
    expected = mix_capacity_rps(slots=4, mix=[(50, 20.0), (30, 30.0), (20, 40.0)])
    assert mix.capacity_rps == pytest.approx(expected, rel=0.10)
    shares = {k: e.capacity_rps / mix.capacity_rps for k, e in mix.endpoints.items()}
    assert shares == pytest.approx(
        {"/v1/classify": 0.5, "/v1/embed": 0.3, "/v2/models/resnet/infer": 0.2}, abs=0.05
    )
    assert runs.rate_limits["production"] == pytest.approx(0.7 * mix.capacity_rps, rel=0.01)
    # one result type: the run's own figures are the mix's, its parts every part's
    assert runs.capacity_rps == mix.capacity_rps and runs.p99_ms == mix.p99_ms
    assert runs.endpoints == mix.endpoints and set(runs.parts) == {
        "production",
        *(f"individual {e}" for e in truth),
    }


@pytest.mark.engine
def test_open_loop_reveals_the_stall_that_closed_loop_hides():
    # 1 s stall every 10 s; at ~10 users the closed loop sees each stall once per user
    # (< 1 % of samples), the open loop queues ~1 s of arrivals behind it (~10 %).
    # The open loop gets what is left of max_duration_s: 90 s leaves it its 10.5 s after a
    # search that takes ~50 s on a slow runner (60 s left it 9.0 s there).
    settings = RunSettings(target_p99_ms=60, measure_s=10.5, probe_s=10.5, max_duration_s=90)
    with DemoServerProcess(slots=4, classify_ms=20.0, stall_every_s=10.0, stall_s=1.0) as d:
        r = run_capacity(ClassifyTaskSet, host=d.url, settings=settings)
    assert r.converged, r.reason
    assert r.open_loop is not None and r.open_loop.window is not None
    ol = r.open_loop.window
    assert r.measure_s >= 10.0 and ol.duration_s >= 10.0  # each window holds a stall
    assert r.p99_ms is not None and r.p99_ms < 150.0  # the closed loop hides it
    assert ol.p99_ms is not None and ol.p99_ms > 500.0  # the open loop shows it
    assert ol.sent_rps == pytest.approx(ol.rate_rps, rel=0.05)


@pytest.mark.engine
def test_spike_the_generator_cannot_send_is_reported_not_faked():
    settings = RunSettings(spike_target_rps=60000, spike_duration_s=2, spike_base_ratio=0.01)
    # its own server: the thousands of requests it does send would queue for seconds and
    # slow whatever test uses the server next
    with DemoServerProcess(slots=4, classify_ms=20.0) as own:
        r = run_capacity(ClassifyTaskSet, host=own.url, settings=settings, kind="spike")
    assert r.status == "inconclusive"
    assert "could not reach the spike rate" in r.reason and "60000 req/s" in r.reason
    assert r.spike is not None
    sent = r.spike.spike.sent_rps
    assert f"{sent:.1f} req/s" in r.reason and sent < 0.9 * 60000


@pytest.mark.engine
def test_spike_reports_p99_errors_and_recovery(demo):
    settings = RunSettings(spike_target_rps=300, spike_duration_s=3)
    r = run_capacity(ClassifyTaskSet, host=demo.url, settings=settings, kind="spike")
    assert r.converged, r.reason
    sp = r.spike
    assert sp is not None
    assert sp.spike.sent_rps == pytest.approx(300, rel=0.05)
    # 300 req/s into 200 req/s of capacity for 3 s: ~300 requests queue, ~1.5 s of backlog
    assert r.p99_ms > 1000.0
    assert sp.pre.p99_ms is not None and sp.pre.p99_ms < 60.0
    assert sp.recovery_s is not None and 0.5 <= sp.recovery_s <= 4.0
