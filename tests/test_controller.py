"""The capacity search on a simulated service with a fake clock: no sleeping, exact truth."""

from __future__ import annotations

import pytest

from pytest_mlload.config import RunSettings
from pytest_mlload.controller import CapacitySearch, build_result, run_search
from pytest_mlload.simulate import FakeClock, SimulatedService


def search(svc: SimulatedService, probe_users: int | None = None, **kw: object):
    settings = RunSettings(**kw)  # type: ignore[arg-type]
    s = CapacitySearch(settings, probe_users=probe_users)
    clock = FakeClock(svc)
    run_search(s, svc, clock)
    return build_result(s, name="sim", host="sim://", elapsed_s=clock.now()), s


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    ("slots", "service_ms", "target"),
    [(4, 20.0, 120.0), (8, 10.0, 100.0), (2, 40.0, 500.0), (4, 25.0, 300.0)],
)
def test_capacity_matches_saturation_truth_within_5_percent(slots, service_ms, target, seed):
    svc = SimulatedService(slots=slots, service_ms=service_ms, jitter=0.1, seed=seed)
    r, _ = search(svc, target_p99_ms=target)
    assert r.status == "converged", r.reason
    assert abs(r.capacity_rps / svc.capacity_rps - 1) <= 0.05
    assert r.p99_ms is not None and r.p99_ms <= target * 1.1
    # the operating point is near the target, not far below it
    assert r.p99_ms >= target * 0.7
    # and fast: well inside the 30 s per endpoint budget (simulated seconds)
    assert r.elapsed_s <= 30


def test_below_the_knee_capacity_follows_latency_not_saturation():
    # 4 slots x 20 ms: P99 grows as N*s/c beyond 4 users; a 50 ms target allows ~8-9 users
    svc = SimulatedService(slots=4, service_ms=20.0, jitter=0.05, seed=3)
    r, _ = search(svc, target_p99_ms=50.0)
    assert r.status == "converged"
    assert 6 <= r.users <= 10
    assert r.p99_ms is not None and r.p99_ms <= 55.0
    assert r.capacity_rps >= 0.9 * svc.capacity_rps  # past the knee, throughput is saturated


def test_settle_windows_are_excluded_and_windows_sized_by_samples():
    svc = SimulatedService(slots=4, service_ms=20.0, seed=1)
    r, s = search(svc, target_p99_ms=120.0)
    windows = list(r.trajectory)
    for prev, cur in zip(windows, windows[1:], strict=False):
        # every window starts after a settle gap following the previous one
        assert cur.start_s - prev.end_s >= 0.3 - 1e-9
    assert all(w.requests >= 200 for w in windows if w.phase == "refine")
    gated = [w for w in windows if w.phase in ("measure", "probe")]
    assert gated and all(w.requests >= 300 for w in gated)  # enough for a P99 interval


def test_probe_measures_p99_at_the_requested_users():
    svc = SimulatedService(slots=4, service_ms=20.0, jitter=0.0, seed=0)
    r, _ = search(svc, probe_users=12, target_p99_ms=120.0)
    assert r.probe is not None and r.probe.users == 12
    # closed loop, deterministic service: latency = N * s / c + overhead
    assert r.probe.p99_ms == pytest.approx(12 * 20 / 4 + 1.0, rel=0.05)
    assert r.probe.p99_ci is not None and r.probe.p99_ci[0] <= r.probe.p99_ms <= r.probe.p99_ci[1]


def test_slower_service_lowers_capacity_and_raises_probe_p99():
    fast, _ = search(SimulatedService(seed=2), probe_users=16, target_p99_ms=120.0)
    slow, _ = search(SimulatedService(service_ms=26.0, seed=2), probe_users=16, target_p99_ms=120.0)
    assert slow.capacity_rps / fast.capacity_rps == pytest.approx(20 / 26, rel=0.04)
    assert fast.probe is not None and slow.probe is not None
    assert slow.probe.p99_ms / fast.probe.p99_ms == pytest.approx(26 / 20, rel=0.08)


def test_max_users_caps_the_search():
    svc = SimulatedService(slots=16, service_ms=20.0, seed=0)
    r, _ = search(svc, target_p99_ms=1000.0, max_users=8)
    assert r.status == "converged" and r.users == 8
    assert r.capacity_rps == pytest.approx(8 / 0.021, rel=0.05)  # latency-bound, not saturated


def test_target_unreachable_at_min_users_is_inconclusive():
    r, _ = search(SimulatedService(service_ms=50.0), target_p99_ms=20.0)
    assert r.status == "inconclusive"
    assert "already exceeds the 20 ms target" in r.reason and "min_users" in r.reason


def test_all_errors_is_inconclusive_with_a_sample():
    r, _ = search(SimulatedService(error_ratio=1.0), target_p99_ms=120.0)
    assert r.status == "inconclusive"
    assert "100.0%" in r.reason and "HTTPError 500" in r.reason


def test_error_ratio_above_cap_counts_as_over_target():
    # 5 % errors at every load: no level is acceptable, so no pass can come out of it
    r, _ = search(SimulatedService(error_ratio=0.05, seed=4), target_p99_ms=120.0)
    assert r.status == "inconclusive"
    assert "error ratio" in r.reason


def test_time_cap_fires_even_with_no_samples():
    # a service slower than the whole cap: no request ever completes
    svc = SimulatedService(slots=1, service_ms=120_000.0, jitter=0.0)
    r, _ = search(svc, target_p99_ms=1000.0, max_duration_s=5.0)
    assert r.status == "inconclusive"
    assert "time cap" in r.reason
    assert r.elapsed_s <= 5.0 + 0.1


def test_too_few_samples_at_the_operating_point_is_inconclusive():
    # 1 slot x 400 ms: ~2.5 req/s, so a 4 s measure window cannot reach 300 samples in time
    svc = SimulatedService(slots=1, service_ms=400.0, jitter=0.0)
    r, _ = search(svc, target_p99_ms=1000.0, max_duration_s=30.0)
    assert r.status == "inconclusive"
    assert "too few samples" in r.reason or "time cap" in r.reason
    assert r.capacity_rps == 0.0 or r.status != "converged"


def test_failures_are_counted_not_dropped():
    r, _ = search(SimulatedService(error_ratio=0.004, seed=7), target_p99_ms=120.0)
    assert r.status == "converged"
    assert r.failures > 0 and r.requests > r.failures
    assert r.error_ratio == pytest.approx(r.failures / r.requests)
    # capacity counts successes only
    assert r.capacity_rps == pytest.approx((r.requests - r.failures) / r.measure_s)


def test_per_endpoint_figures_in_a_mix():
    svc = SimulatedService(
        names=("/a", "/b"),
        weights=(3.0, 1.0),
        service_ms_by_name={"/a": 10.0, "/b": 40.0},
        seed=5,
    )
    r, _ = search(svc, target_p99_ms=200.0)
    assert set(r.endpoints) == {"/a", "/b"}
    total = sum(e.capacity_rps for e in r.endpoints.values())
    assert total == pytest.approx(r.capacity_rps, rel=1e-9)
    share = r.endpoints["/a"].capacity_rps / total
    assert share == pytest.approx(0.75, abs=0.05)
    assert abs(r.capacity_rps / svc.capacity_rps - 1) <= 0.05


def test_result_round_trips_through_json():
    import json

    from pytest_mlload.results import CapacityResult

    r, _ = search(SimulatedService(seed=1), probe_users=8, target_p99_ms=120.0)
    again = CapacityResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r


def test_noisy_measure_window_is_extended_until_the_interval_is_tight():
    # heavy service-time jitter: a 4 s window is too noisy for a +-2.5 % capacity interval
    quiet, _ = search(SimulatedService(jitter=0.05, seed=8), target_p99_ms=400.0)
    noisy, _ = search(SimulatedService(jitter=1.2, seed=8), target_p99_ms=400.0)
    assert quiet.measure_s == pytest.approx(4.0, abs=0.2)
    assert noisy.measure_s > quiet.measure_s
    assert noisy.measure_s <= 3 * 4.0 + 0.1  # bounded by the window's max_s


def test_saturated_generator_is_inconclusive():
    svc = SimulatedService(seed=1)
    s = CapacitySearch(RunSettings(target_p99_ms=120.0))
    run_search(s, svc, FakeClock(svc))
    ok = build_result(s, name="x", host="h", elapsed_s=1.0, generator_cpu_ratio=0.5)
    hot = build_result(s, name="x", host="h", elapsed_s=1.0, generator_cpu_ratio=0.93)
    assert ok.status == "converged"
    assert hot.status == "inconclusive" and "93%" in hot.reason and "saturated" in hot.reason


def test_p99_in_band_below_the_knee_does_not_stop_the_ramp():
    # P99 is ~21 ms at 1..4 users (no queueing), in the band under a 23.5 ms target from the
    # first window: the operating point is still 4 users (the knee), not 1.
    svc = SimulatedService(slots=4, service_ms=20.0, jitter=0.02, seed=2)
    r, _ = search(svc, target_p99_ms=23.5)
    assert r.status == "converged", r.reason
    assert r.users == 4
    assert r.capacity_rps >= 0.9 * svc.capacity_rps
