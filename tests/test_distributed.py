"""Distributed load: merged raw samples, report lag, and real Locust masters and workers.

The first tests are pure: fake workers (:mod:`pytest_mlload.testing.lagged`) ship the
simulated service's samples with lag, on a fake clock. The ``engine`` tests start a real
Locust master and worker processes against the demo server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from plugin_support import alive

from pytest_mlload._io import stop_process
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import ConfigError
from pytest_mlload.load.controller import CapacitySearch, build_result
from pytest_mlload.load.merge import (
    REPORT_TIMEOUT_S,
    Batch,
    MergedLoad,
    MergedSamples,
    run_search_guarded,
)
from pytest_mlload.testing.demo import DemoServerProcess, capacity_rps
from pytest_mlload.testing.lagged import LaggedClock, LaggedWorkers
from pytest_mlload.testing.simulate import SimulatedService

sys.path.insert(0, str(Path(__file__).parent))

TARGET_MS = 120.0


def lagged_search(lag_s, *, seed: int, naive: bool = False, stop_worker_at: float | None = None):
    svc = SimulatedService(slots=4, service_ms=20.0, jitter=0.1, seed=seed)
    store = MergedSamples()
    workers = LaggedWorkers(svc, store, lag_s=lag_s, stamp="arrival" if naive else "completion")
    clock = LaggedClock(workers)
    load = MergedLoad(store, clock, svc.set_users, wait_for_reports=not naive)
    search = CapacitySearch(RunSettings(target_p99_ms=TARGET_MS))
    if stop_worker_at is not None:
        stop = stop_worker_at

        def on_window(step, w):
            if clock.now() >= stop:
                workers.stop_worker(1)

        run_search_guarded(search, load, clock, on_window=on_window)
    else:
        run_search_guarded(search, load, clock)
    result = build_result(search, name="sim", host="sim://", elapsed_s=clock.now())
    return result, search, svc, clock


def reversals(trajectory) -> int:
    """How often the user count changed direction (ramp up, then down, then up...), leaving
    out deliberate re-measurements (``confirm``: a level measured again, the middle of a ramp
    step whose throughput bent), which look back by design."""
    users = [w.users for w in trajectory if w.phase != "confirm"]
    steps = [b - a for a, b in zip(users, users[1:], strict=False) if b != a]
    return sum(1 for a, b in zip(steps, steps[1:], strict=False) if (a > 0) != (b > 0))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("lag_s", [1.7, (0.1, 1.7)])
def test_lag_aware_windows_match_the_lag_free_search_and_do_not_oscillate(lag_s, seed):
    free, free_search, svc, _ = lagged_search(0.0, seed=seed)
    lagged, search, _, _ = lagged_search(lag_s, seed=seed)
    assert lagged.status == "converged", lagged.reason
    assert abs(lagged.capacity_rps / svc.capacity_rps - 1) <= 0.05, lagged.capacity_rps
    assert abs(lagged.capacity_rps / free.capacity_rps - 1) <= 0.05
    assert lagged.p99_ms is not None and lagged.p99_ms <= TARGET_MS
    assert reversals(search.trajectory) <= 1, search.trajectory
    # the naive master (windows from reports as they arrive) swings and misses the target
    naive, naive_search, _, _ = lagged_search(lag_s if lag_s == 1.7 else 1.7, seed=seed, naive=True)
    users = [(w.phase, w.users) for w in naive_search.trajectory]
    assert reversals(naive_search.trajectory) >= 2 or naive.status != "converged", users


def test_a_worker_that_stops_reporting_ends_the_search_inconclusive_in_bounded_time():
    result, search, _, clock = lagged_search(0.3, seed=0, stop_worker_at=3.0)
    assert result.status == "inconclusive"
    assert "worker-1" in result.reason and "lost" in result.reason
    # the last window started before the worker stopped; the wait is bounded by the timeout
    last_end = search.trajectory[-1].end_s
    assert clock.now() - last_end <= REPORT_TIMEOUT_S + 2.0


def _batch(source, seq, sent, end, lat, ok=None, errors=None, cpu=0.0, streams=None):
    return Batch(
        source=source,
        seq=seq,
        sent_s=sent,
        cpu_s=cpu,
        end_s=end,
        latency_ms=lat,
        ok=ok if ok is not None else [True] * len(end),
        name=["/x"] * len(end),
        errors=errors or {},
        streams=streams or {},
    )


def test_merged_window_keeps_every_raw_latency_in_completion_order():
    store = MergedSamples()
    rng = np.random.default_rng(1)
    lat = rng.lognormal(4.0, 0.5, 2000)
    end = np.sort(rng.uniform(0.0, 10.0, 2000))
    for k, source in enumerate(("a", "b")):
        idx = np.arange(k, 2000, 2)
        for seq, part in enumerate(np.array_split(idx, 4)):
            store.receive(
                _batch(source, seq, 10.0 * (seq + 1) / 4, end[part][::-1], lat[part]),
                arrived_s=0.0,
            )
    w = store.window(0.0, 10.0)
    assert w.requests == 2000
    assert np.all(np.diff(w.end_s) >= 0)
    # exactly the P99 of the raw latencies: no rounding into buckets on the way
    assert w.p99_ms() == pytest.approx(float(np.percentile(lat, 99)), rel=1e-12)
    assert store.covered_until() == 10.0


def test_errors_follow_their_samples_and_a_missing_batch_loses_the_worker():
    store = MergedSamples()
    store.receive(
        _batch("a", 0, 1.0, [0.9, 0.1], [5.0, 7.0], ok=[False, True], errors={0: "boom"}), 0.0
    )
    store.receive(_batch("b", 0, 1.0, [0.5], [6.0]), 0.0)
    w = store.window(0.0, 1.0)
    assert list(w.latency_ms) == [7.0, 6.0, 5.0]
    assert list(w.ok) == [True, True, False] and w.error_texts == ("boom",)
    store.receive(_batch("a", 2, 2.0, [1.5], [5.0]), 1.0)  # batch 1 never came
    assert "batch 1 never arrived" in store.lost_reason(1.0)


def test_stream_figures_travel_with_their_samples():
    store = MergedSamples()
    streams = {0: {"ttft_ms": 8.0}, 1: {"ttft_ms": 2.0}}
    store.receive(_batch("a", 0, 1.0, [0.8, 0.2], [5.0, 7.0], streams=streams), 0.0)
    store.receive(_batch("b", 0, 1.0, [0.5], [6.0], streams={0: {"ttft_ms": 5.0}}), 0.0)
    assert [f["ttft_ms"] for f in store.stream_window(0.0, 1.0)] == [2.0, 5.0, 8.0]
    assert [f["ttft_ms"] for f in store.stream_window(0.3, 0.6)] == [5.0]


def test_generator_cpu_guard_applies_per_worker():
    store = MergedSamples()
    for seq in range(5):  # worker a uses 30 % of a core, worker b 90 %
        store.receive(_batch("a", seq, float(seq), [], [], cpu=0.3 * seq), float(seq))
        store.receive(_batch("b", seq, float(seq), [], [], cpu=0.9 * seq), float(seq))
    assert store.cpu_by_source(0.0, 4.0) == pytest.approx({"a": 0.3, "b": 0.9})
    assert store.cpu_ratio(0.0, 4.0) == pytest.approx(0.9)


# --------------------------------------------------------------------------- real Locust

FAST = dict(
    target_p99_ms=120, max_users=48, measure_s=2.5, probe_s=1.5, min_samples=200, max_duration_s=40
)
SLOTS, SERVICE_MS = 4, 20.0


@pytest.fixture(scope="module")
def demo():
    with DemoServerProcess(slots=SLOTS, classify_ms=SERVICE_MS, service_ms=SERVICE_MS) as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def can_listen(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
        return True


@pytest.mark.engine
def test_distributed_search_finds_the_demo_capacity_and_releases_everything(demo):
    from engine_targets.tasks import Classify

    from pytest_mlload.load.engine import run_capacity

    port = free_port()
    events: list[dict] = []
    settings = RunSettings(**FAST, workers=2, master_bind=f"127.0.0.1:{port}")
    result = run_capacity(Classify, host=demo.url, settings=settings, on_event=events.append)
    truth = capacity_rps(slots=SLOTS, service_ms=SERVICE_MS)
    assert result.status == "converged", result.reason
    assert abs(result.capacity_rps / truth - 1) <= 0.10, (result.capacity_rps, truth)
    assert result.p99_ms is not None and result.p99_ms <= 120
    assert result.p99_ms != round(result.p99_ms)  # raw latencies, not Locust's buckets
    assert result.generator_cpu_ratio is not None and 0 < result.generator_cpu_ratio < 0.8
    assert result.open_loop is not None and "workers" in result.open_loop.skipped
    (workers,) = [e for e in events if e["event"] == "workers"]
    assert workers["master"] == f"127.0.0.1:{port}" and len(workers["pids"]) == 2
    assert not any(alive(pid) for pid in workers["pids"])
    assert can_listen(port)


@pytest.mark.engine
def test_a_worker_killed_mid_run_makes_the_part_inconclusive_with_the_reason(demo):
    from engine_targets.tasks import Classify

    from pytest_mlload.load.engine import run_capacity

    killed: list[int] = []

    def on_event(event: dict) -> None:
        if event["event"] == "workers":
            killed.append(event["pids"][0])
        elif event["event"] == "window" and len(killed) == 1:
            os.kill(killed[0], signal.SIGKILL)
            killed.append(-1)

    settings = RunSettings(**FAST, workers=2)
    result = run_capacity(Classify, host=demo.url, settings=settings, on_event=on_event)
    assert result.status == "inconclusive"
    assert f"local worker process {killed[0]} exited with signal 9" in result.reason
    assert "lost" in result.reason
    assert result.elapsed_s < FAST["max_duration_s"]


MISMATCH = """
from locust import TaskSet


class Mismatch(TaskSet):
    endpoint = "/v1/classify"

    def test_endpoint(self) -> None:
        self.client.post(self.endpoint, json={{"inputs": [[0.5] * 16]}}, name=self.endpoint)
# {version}
"""


@pytest.mark.engine
def test_a_worker_with_other_code_is_a_clear_error(demo, tmp_path, monkeypatch):
    from pytest_mlload.load.engine import run_capacity

    for version in ("a", "b"):
        (tmp_path / version).mkdir()
        (tmp_path / version / "mlload_mismatch_tasks.py").write_text(
            MISMATCH.format(version=version)
        )
    monkeypatch.syspath_prepend(str(tmp_path / "a"))
    from mlload_mismatch_tasks import Mismatch

    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "b"), *sys.path]))
    worker = subprocess.Popen(
        [sys.executable, "-m", "pytest_mlload.worker", "--master", f"127.0.0.1:{port}", "--once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = RunSettings(**FAST, master_bind=f"127.0.0.1:{port}", expect_workers=1)
        with pytest.raises(ConfigError) as info:
            run_capacity(Mismatch, host=demo.url, settings=settings)
        message = str(info.value)
        assert "does not run the same code as the master" in message
        assert "mlload_mismatch_tasks.Mismatch (mlload_mismatch_tasks.py)" in message
        assert worker.wait(15) == 0  # the master told it to quit
    finally:
        stop_process(worker)


@pytest.mark.engine
def test_closing_the_master_releases_its_port():
    """A quit MasterRunner still listens; close_master frees the port in the same process."""
    port, other = free_port(), free_port()
    script = textwrap.dedent(
        f"""
        import json, socket
        import locust
        from locust.env import Environment
        from pytest_mlload.load.distributed import close_master, open_master

        def can_listen(port):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port)); s.listen()
                except OSError:
                    return False
                return True

        quit_only = open_master(Environment(user_classes=[]), "127.0.0.1:{other}")
        quit_only.quit()
        closed = open_master(Environment(user_classes=[]), "127.0.0.1:{port}")
        busy = can_listen({port})
        close_master(closed)
        print(json.dumps({{"quit_only": can_listen({other}), "busy": busy,
                          "closed": can_listen({port})}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "quit_only": False,  # Locust's quit() alone keeps the port bound
        "busy": False,
        "closed": True,
    }


def test_worker_command_without_a_master_says_how_to_give_it():
    out = subprocess.run(
        [sys.executable, "-m", "pytest_mlload.worker"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "--master HOST:PORT" in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_mlload.worker", "--master", "nohost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "is not HOST:PORT" in bad.stderr


def test_distributed_settings_are_validated_with_the_way_out():
    assert RunSettings(workers=2).distributed and not RunSettings().distributed
    with pytest.raises(ConfigError, match="also give master_bind HOST:PORT"):
        RunSettings(expect_workers=2)
    with pytest.raises(ConfigError, match="is not HOST:PORT"):
        RunSettings(master_bind="5557", expect_workers=1)
    with pytest.raises(ConfigError, match="workers=-1 is invalid"):
        RunSettings(workers=-1)


@pytest.mark.engine
def test_a_remote_worker_serves_one_run_after_another(demo):
    """Every part of a suite starts its own master on the same address: the worker rejoins."""
    from engine_targets.tasks import Classify

    from pytest_mlload.load.engine import run_capacity

    port = free_port()
    worker = subprocess.Popen(
        [sys.executable, "-m", "pytest_mlload.worker", "--master", f"127.0.0.1:{port}"],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings = RunSettings(
            **{**FAST, "measure_s": 1.5}, master_bind=f"127.0.0.1:{port}", expect_workers=1
        )
        for _ in range(2):
            r = run_capacity(Classify, host=demo.url, settings=settings, hold_users=8)
            assert r.status == "converged", r.reason
            assert r.requests >= 200 and r.failures == 0
            assert worker.poll() is None  # still serving
    finally:
        stop_process(worker)
