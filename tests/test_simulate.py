"""The simulated service's overload behaviours: a knee and errors above a load (fake clock)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_mlload.testing.simulate import FakeClock, SimulatedService, best_rate, sweep


def test_without_a_knee_throughput_saturates_at_slots_over_service_time():
    pts = sweep(lambda: SimulatedService(slots=4, service_ms=20.0, jitter=0.0, seed=0), [2, 8, 16])
    assert pts[0].rps == pytest.approx(2 / 0.021, rel=0.02)  # latency-bound below the slots
    assert pts[1].rps == pytest.approx(200.0, rel=0.02)
    assert pts[2].rps == pytest.approx(200.0, rel=0.02)


def test_knee_throughput_peaks_at_the_knee_and_falls_beyond():
    make = lambda: SimulatedService(  # noqa: E731
        slots=64, service_ms=20.0, jitter=0.0, overhead_ms=0.0, knee=8, knee_penalty=0.25, seed=0
    )
    pts = {p.users: p for p in sweep(make, range(1, 25))}
    peak = max(pts.values(), key=lambda p: p.rps)
    assert peak.users == 8
    assert peak.rps == pytest.approx(8 / 0.020, rel=0.02)
    # 16 in service: each request takes 20 ms x (1 + 0.25 x 8) = 60 ms -> 16 / 0.06 req/s
    assert pts[16].rps == pytest.approx(16 / 0.060, rel=0.03)
    assert pts[16].p99_ms == pytest.approx(60.0, rel=0.03)
    rates = [pts[n].rps for n in range(8, 25)]
    assert all(b < a for a, b in zip(rates, rates[1:], strict=False))  # falls all the way


def test_errors_start_above_the_load_and_grow():
    # no client overhead: every user always has its request in flight at the server
    make = lambda: SimulatedService(  # noqa: E731
        slots=64, overhead_ms=0.0, error_above=12, error_growth=0.05, seed=3
    )
    pts = {p.users: p for p in sweep(make, [6, 12, 16, 20, 40], measure_s=10.0)}
    assert pts[6].error_ratio == 0.0 and pts[12].error_ratio == 0.0
    for n, want in ((16, 0.2), (20, 0.4), (40, 1.0)):
        sigma = (want * (1 - want) / max(pts[n].requests, 1)) ** 0.5
        assert abs(pts[n].error_ratio - want) <= 4 * sigma + 1e-9, (n, pts[n].error_ratio)


def test_a_failure_holds_its_worker_and_reports_the_time_it_took():
    svc = SimulatedService(slots=64, service_ms=50.0, jitter=0.0, error_above=2, seed=1)
    clock = FakeClock(svc)
    svc.set_users(10)
    clock.sleep(3.0)
    w = svc.window(1.0, 3.0)
    failed = w.latency_ms[~w.ok]
    assert failed.size > 0 and w.successes > 0
    assert np.allclose(failed, 51.0, rtol=0.02)  # 50 ms service + 1 ms overhead, not 0
    assert w.p99_ms() == pytest.approx(51.0, rel=0.02)


def test_best_rate_names_the_way_out_when_nothing_meets_the_target():
    pts = sweep(lambda: SimulatedService(service_ms=50.0, seed=0), [1, 2])
    with pytest.raises(ValueError, match="raise the target"):
        best_rate(pts, target_p99_ms=10.0)
