"""Hardening of the load driver, for real against the demo server on 127.0.0.1 (issue 11).

User code that raises fails fast with its location; a User whose tasks are TaskSets sends
requests in open-loop and spike phases (counted by the server); the driver dies with its
parent on every phase; the open-file limit is raised, and local errors are never server
failures. Runs that must outlive or change the test process go through a small parent
script (:func:`start_parent`), which calls :func:`run_capacity` and prints its events.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_support import alive, proc_stat

from pytest_mlload._io import stop_process
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import UserCodeError
from pytest_mlload.load.engine import exclusive_load, run_capacity
from pytest_mlload.targets import resolve_target
from pytest_mlload.testing.demo import DemoServerProcess

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from engine_targets.hardening import Broken, NestedUser  # noqa: E402

pytestmark = pytest.mark.engine

QUICK: dict[str, Any] = dict(
    target_p99_ms=150, max_users=8, measure_s=1.5, probe_s=1.0, min_samples=100, max_duration_s=30
)
SPIKE: dict[str, Any] = dict(
    mode=("spike",), spike_target_rps=40.0, spike_duration_s=2.0, max_duration_s=30
)
# how long a parent script may wait for the machine-wide load lock and its first events
LOCK_PATIENT_S = float(os.environ.get("MLLOAD_TEST_LOCK_PATIENCE_S", "900"))
# the events a parent script prints: one JSON document per line behind this marker
EVENT = "@@event@@ "


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServerProcess]:
    with DemoServerProcess(slots=8, classify_ms=5.0, service_ms=5.0) as server:
        yield server


def classify_count(demo: DemoServerProcess) -> int:
    """Classify requests the server answered (its own counter, not the generator's)."""
    return int(demo.stats()["requests"]["classify"])


def raise_line(cls: Any) -> int:
    """The line of ``cls.test_endpoint`` that raises (the one marked ``# raises``)."""
    lines, first = inspect.getsourcelines(cls.test_endpoint)
    return first + next(i for i, text in enumerate(lines) if "# raises" in text)


# -- row 1: a TaskSet whose test_endpoint raises ------------------------------------------


@pytest.mark.parametrize("kind", ["search", "spike"])
def test_taskset_that_raises_fails_within_seconds_naming_type_message_and_line(
    demo: DemoServerProcess, kind: str
) -> None:
    settings = RunSettings(**({**QUICK, "max_duration_s": 40} if kind == "search" else SPIKE))
    started: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "started":
            started.append(time.monotonic())  # after the machine-wide load lock

    with pytest.raises(UserCodeError) as info:
        run_capacity(Broken, host=demo.url, settings=settings, kind=kind, on_event=on_event)
    took_s = time.monotonic() - started[0]
    err = info.value
    print(f"\nMEASURED user-code error ({kind}): raised {took_s:.2f} s after the driver started")
    assert took_s < 5.0, took_s  # not the 40 s time cap
    assert err.exc_type == "KeyError" and err.detail == "'inputs'"
    assert err.where == "Broken.test_endpoint"
    assert err.location.endswith(f"hardening.py:{raise_line(Broken)}"), err.location
    assert f"hardening.py:{raise_line(Broken)}" in str(err) and "KeyError" in str(err)


# -- row 2: a User whose tasks are TaskSets, in open-loop and spike phases ----------------


def test_user_with_taskset_tasks_sends_requests_in_the_spike(demo: DemoServerProcess) -> None:
    before = classify_count(demo)
    result = run_capacity(NestedUser, host=demo.url, settings=RunSettings(**SPIKE), kind="spike")
    arrived = classify_count(demo) - before
    assert result.spike is not None
    spike = result.spike.spike
    print(f"\nMEASURED spike: server counted {arrived}, p50 {spike.p50_ms:.1f} ms")
    # the whole schedule: 3 s at 8 req/s, 2 s at 40 req/s, 6 s at 8 req/s (driver constants)
    scheduled = 3 * 8 + 2 * 40 + 6 * 8
    assert result.status == "converged", result.reason
    assert spike.requests == 80
    assert arrived == scheduled, (arrived, scheduled)  # every arrival reached the server
    assert spike.failures == 0
    # a real request over loopback to a 5 ms service: not a ~0 ms no-op
    assert spike.p50_ms is not None and spike.p50_ms >= 4.0, spike


def test_user_with_taskset_tasks_sends_requests_in_the_open_loop_phase(
    demo: DemoServerProcess,
) -> None:
    at_phase: list[int] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "phase" and event["phase"] == "openloop":
            at_phase.append(classify_count(demo))

    result = run_capacity(
        NestedUser, host=demo.url, settings=RunSettings(**QUICK), open_loop_rps=150.0,
        on_event=on_event,
    )  # fmt: skip
    arrived = classify_count(demo) - at_phase[0]
    assert result.open_loop is not None and result.open_loop.window is not None
    ol = result.open_loop.window
    print(f"\nMEASURED open loop: {ol.requests} arrivals, server counted {arrived}")
    assert result.status == "converged", result.reason
    assert ol.requests >= 300 and ol.failures == 0, ol
    assert arrived >= ol.requests, (arrived, ol.requests)
    assert ol.p50_ms is not None and ol.p50_ms >= 4.0, ol


# -- parent scripts: runs that must be killed or get other limits -------------------------

PARENT = """
import json, resource, sys
sys.path[:0] = {paths!r}
soft_hard = {nofile!r}
if soft_hard:
    resource.setrlimit(resource.RLIMIT_NOFILE, tuple(soft_hard))
from pytest_mlload.config import RunSettings
from pytest_mlload.load.engine import exclusive_load, run_capacity
from pytest_mlload.targets import resolve_target
from engine_targets.hardening import {target}

def show(event):
    print({marker!r} + json.dumps(event), flush=True)

result = run_capacity({target}, host={host!r}, settings=RunSettings(**{settings!r}),
                      kind={kind!r}, on_event=show, open_loop_rps={rate!r})
show({{"event": "done", "result": result.to_dict()}})
"""


@contextlib.contextmanager
def parent_process(
    demo: DemoServerProcess, target: str, settings: dict[str, Any], **kw: Any
) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_parent`, killed by PID (if still running) and its pipe closed after."""
    proc = start_parent(demo, target, settings, **kw)
    try:
        yield proc
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()


def start_parent(
    demo: DemoServerProcess,
    target: str,
    settings: dict[str, Any],
    *,
    kind: str = "search",
    rate: float | None = None,
    nofile: tuple[int, int] | None = None,
) -> subprocess.Popen[str]:
    """A Python process that runs one capacity job and prints its events (see PARENT)."""
    code = PARENT.format(
        paths=[str(HERE), *[p for p in sys.path if p]],
        nofile=list(nofile) if nofile else None,
        target=target,
        marker=EVENT,
        host=demo.url,
        settings=settings,
        kind=kind,
        rate=rate,
    )
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # unmarked lines: events_until skips them, driver_of shows them
        text=True,
    )


def events_until(
    proc: subprocess.Popen[str], want: str, timeout_s: float
) -> Iterator[dict[str, Any]]:
    """The parent's events up to and including the first of kind ``want`` (bounded)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(EVENT):
                event = json.loads(line[len(EVENT) :])
                yield event
                if event["event"] == want or (event["event"] == "phase" and event["phase"] == want):
                    return
    raise AssertionError(f"no {want!r} event within {timeout_s:g} s")


def driver_of(parent: subprocess.Popen[str], events: list[dict[str, Any]]) -> int:
    """The driver's PID from the ``started`` event, checked against /proc: it must be a
    running child of ``parent`` (its ``stat`` names the parent's PID).

    One ``stat`` read, not a scan of /proc: a directory listing of /proc taken while other
    processes start and exit is not guaranteed to hold every process.
    """
    pid = next(e["pid"] for e in events if e["event"] == "started")
    state, ppid = (proc_stat(pid) or ["gone", "?"])[:2]
    seen = [e.get("phase", e["event"]) for e in events]
    if state in ("gone", "Z", "X"):
        raise AssertionError(
            f"driver {pid} is {state} after events {seen}; the parent's output after them "
            f"(its engine's error carries the driver's stderr tail):\n{rest_of(parent)}"
        )
    assert int(ppid) == parent.pid, f"driver {pid} has parent {ppid}, not {parent.pid}"
    return pid


def rest_of(parent: subprocess.Popen[str], wait_s: float = 30.0) -> str:
    """What ``parent`` prints until it exits (stopped after ``wait_s``): its last 4000 chars."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        parent.wait(wait_s)
    stop_process(parent)
    return parent.stdout.read()[-4000:] if parent.stdout else ""


def seconds_until_gone(pid: int, bound_s: float) -> float:
    """How long ``pid`` took to exit, polled every 10 ms (at most ``bound_s``)."""
    t0 = time.monotonic()
    while alive(pid) and time.monotonic() - t0 < bound_s:
        time.sleep(0.01)
    return time.monotonic() - t0


# -- row 3: pytest SIGKILLed mid-run --------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "kind", "extra"),
    [
        ("window", "search", {}),
        ("openloop", "search", {"probe_s": 20.0}),
        ("spike", "spike", {**SPIKE, "spike_duration_s": 20.0}),
    ],
    ids=["search", "open-loop", "spike"],
)
def test_driver_stops_within_a_second_of_its_parent_sigkill(
    demo: DemoServerProcess, phase: str, kind: str, extra: dict[str, Any]
) -> None:
    settings = {**QUICK, "max_duration_s": 40, **extra}
    with parent_process(demo, "NestedUser", settings, kind=kind, rate=100.0) as parent:
        events = list(events_until(parent, phase, timeout_s=LOCK_PATIENT_S))
        pid = driver_of(parent, events)
        killed = time.monotonic()
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        seconds_until_gone(pid, bound_s=10.0)
        gone_s = time.monotonic() - killed  # from the kill, the parent's own death included
    print(f"\nMEASURED parent SIGKILL in {phase}: driver gone after {gone_s:.3f} s")
    assert gone_s < 1.0, f"driver {pid} outlived its parent by {gone_s:.2f} s in {phase}"


def test_driver_exits_within_a_second_when_its_stdin_closes(demo: DemoServerProcess) -> None:
    """The portable watcher, with the parent alive (no parent-death signal): the engine
    holds the driver's stdin open for the whole run, so end of file means it is gone."""
    settings = RunSettings(**{**SPIKE, "spike_duration_s": 20.0, "max_duration_s": 40})
    job = {
        "target": resolve_target(NestedUser).to_dict(),
        "host": demo.url,
        "settings": settings.to_dict(),
        "kind": "spike",
        "sys_path": [str(HERE), *[p for p in sys.path if p]],
        "parent_pid": os.getpid(),
    }
    with exclusive_load():
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_mlload.load.driver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while '"phase": "spike"' not in proc.stdout.readline():
                assert time.monotonic() < deadline and proc.poll() is None
            before = classify_count(demo)
            while classify_count(demo) < before + 10:  # it is sending (bounded by the spike)
                assert time.monotonic() < deadline and proc.poll() is None
            proc.stdin.close()
            t0 = time.monotonic()
            code = proc.wait(10)
            gone_s = time.monotonic() - t0
        finally:
            stop_process(proc)
            proc.stdout.close()  # type: ignore[union-attr]
    print(f"\nMEASURED stdin closed: driver exited {code} after {gone_s:.3f} s")
    assert gone_s < 1.0 and code == 3, (gone_s, code)


# -- row 4: RLIMIT_NOFILE and local errors ------------------------------------------------


def soft_open_files(pid: int) -> int:
    """The soft ``Max open files`` limit of ``pid`` (from /proc, not from the driver)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def test_driver_raises_its_soft_open_file_limit_like_locust(demo: DemoServerProcess) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = 10_000 if hard == resource.RLIM_INFINITY else min(10_000, hard)
    if want <= 256:
        pytest.skip(f"the hard open-file limit {hard} leaves nothing to raise")
    with parent_process(demo, "NestedUser", QUICK, nofile=(256, hard)) as parent:
        events = list(events_until(parent, "window", timeout_s=LOCK_PATIENT_S))
        limit = soft_open_files(driver_of(parent, events))
    print(f"\nMEASURED driver soft RLIMIT_NOFILE: {limit} (parent soft 256, hard {hard})")
    assert limit == want, (limit, want)


def test_emfile_is_a_generator_problem_never_a_server_failure(demo: DemoServerProcess) -> None:
    """150 users under a hard limit of 120 descriptors: the driver cannot raise it, sockets
    fail with EMFILE; the part is inconclusive naming it, and no server failure is counted."""
    settings = {**QUICK, "min_users": 150, "max_users": 200, "max_duration_s": 12}
    with parent_process(demo, "FastUser", settings, nofile=(120, 120)) as parent:
        events = list(events_until(parent, "done", timeout_s=LOCK_PATIENT_S))
    result = events[-1]["result"]
    windows = [e for e in events if e["event"] == "window"]
    print(f"\nMEASURED EMFILE run: failures={result['failures']} reason={result['reason']!r}")
    assert result["status"] == "inconclusive", result["reason"]
    assert "EMFILE" in result["reason"] and "not counted as server failures" in result["reason"]
    assert "open-file limit of 120" in result["reason"]
    assert result["failures"] == 0 and result["error_ratio"] == 0.0
    assert all(w["failures"] == 0 for w in windows), windows
