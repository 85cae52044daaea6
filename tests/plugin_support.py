"""Support for the pytester acceptance tests of the plugin (tests/test_plugin.py).

The inner pytest sessions run in their own processes; what they import is written into the
pytester directory from the sources here:

* :data:`TASKS_SOURCE`: a seed-style TaskSet module, exactly as an ml-loadtest user has it
  (importing it imports Locust: at collection time, in the inner pytest process);
* :func:`helper_source`: the inner ``mlhelp`` module, holding :func:`assert_process_clean`
  and :func:`converged_result` (a synthetic converged result, so gate and baseline-lookup
  tests need no load run);
* :func:`proc_stat` and :func:`alive`: a process's state read from ``/proc/PID/stat``, for the
  tests that check what a run started has stopped.

Nothing here imports Locust; the outer pytest process must stay unpatched too.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

TASKS_SOURCE = """
from locust import TaskSet

INPUTS = [[0.1 * i for i in range(16)] for _ in range(2)]


class Classify(TaskSet):
    endpoint = "/v1/classify"

    def test_endpoint(self):
        with self.client.post(self.endpoint, json={"inputs": INPUTS}, name=self.endpoint,
                              catch_response=True) as response:
            if response.status_code == 200:
                response.success()
            else:
                response.failure(f"Failed with {response.status_code}")
"""

# Small windows: one capacity search against the demo's /v1/classify (4 slots x 20 ms =
# 200 req/s) takes ~8 s. threshold 0.15: a 30 % slowdown (-23 % capacity, +29 % P99 at the
# baseline's load) is a clear regression, while run-to-run noise (a few %) clearly passes.
FAST_MARKER = (
    "target_p99_ms=120, min_users=4, max_users=32, measure_s=1.5, probe_s=2.0, "
    "min_samples=150, max_duration_s=30, threshold=0.15"
)
FAST_COMPARABLE = {
    "client": "fast",
    "max_users": 32,
    "min_users": 4,
    "mode": ["individual"],
    "target_p99_ms": 120.0,
    "wait_time_s": 0.0,
}


def assert_process_clean() -> None:
    """The calling process still has the stdlib socket and threading (no gevent patch)."""
    import socket
    import threading

    assert socket.socket.__module__ == "socket", socket.socket.__module__
    assert threading.Thread.__module__ == "threading", threading.Thread.__module__
    current = type(threading.current_thread()).__module__
    assert "gevent" not in current, current
    try:
        import gevent.monkey
    except ImportError:  # pragma: no cover - locust always brings gevent
        return
    patched = [
        m
        for m in ("socket", "threading", "time", "ssl", "select")
        if gevent.monkey.is_module_patched(m)
    ]
    assert not patched, f"gevent patched {patched}"


def converged_result(capacity_rps: float = 200.0, users: int = 20, p99_ms: float = 100.0) -> Any:
    """A converged capacity result with plausible figures, built without any load."""
    from pytest_mlload import CapacityResult, EndpointResult

    endpoint = EndpointResult(
        name="/v1/classify",
        capacity_rps=capacity_rps,
        p50_ms=p99_ms * 0.9,
        p95_ms=p99_ms * 0.98,
        p99_ms=p99_ms,
        requests=300,
        failures=0,
        error_ratio=0.0,
    )
    return CapacityResult(
        name="",
        host="http://127.0.0.1:9",
        status="converged",
        reason="",
        capacity_rps=capacity_rps,
        p50_ms=p99_ms * 0.9,
        p95_ms=p99_ms * 0.98,
        p99_ms=p99_ms,
        users=users,
        requests=300,
        failures=0,
        error_ratio=0.0,
        measure_s=1.5,
        elapsed_s=1.0,
        target_p99_ms=120.0,
        endpoints={"/v1/classify": endpoint},
        capacity_ci=(capacity_rps * 0.98, capacity_rps * 1.02),
    )


def helper_source() -> str:
    """Source of the inner ``mlhelp`` module."""
    return "\n\n".join(
        ["from typing import Any"]
        + [inspect.getsource(f) for f in (assert_process_clean, converged_result)]
    )


def processes_tagged(tag: str) -> list[tuple[int, str]]:
    """``(pid, cmdline)`` of every live process of this user whose environment holds ``tag``.

    The inner pytest and everything it starts inherit an ``MLLOAD_TEST_TAG=<tag>`` variable,
    so this finds exactly their processes, never those of other test sessions on the machine.
    """
    needle = f"MLLOAD_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            status = (entry / "status").read_text()
            if "\nState:\tZ" in status:  # a zombie holds no resources; its parent reaps it
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours
            continue
        found.append((int(entry.name), cmdline.strip()))
    return found


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, parent PID, ...), or
    None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    fields = proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")
