"""Helpers shared by the benchmark scripts: demo servers, wrk, summaries, tables.

Nothing here imports Locust. Every server is a :class:`~pytest_mlload.demo.DemoServerProcess`
on 127.0.0.1, stopped by its own PID; every wrk run is bounded by ``-d`` and a subprocess
timeout.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from pytest_mlload.testing.demo import DemoServerProcess

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))

# Request bodies of the seed TaskSets (bench/seed_tasks.py); wrk posts the same bytes.
IMAGE = [[round(0.1 * i, 1) for i in range(16)] for _ in range(2)]
PAYLOADS: dict[str, Any] = {
    "/v1/classify": {"inputs": IMAGE},
    "/v1/embed": {"inputs": ["a photo of a cat", "a photo of a dog"]},
    "/work": {},
    "/v2/models/resnet/infer": {
        "inputs": [{"name": "input__0", "shape": [1, 16], "datatype": "FP32", "data": IMAGE[0]}]
    },
}


class BenchError(RuntimeError):
    """Something broke (as opposed to a missed target): the script exits non-zero."""


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status; a :class:`BenchError` exits 1 naming what broke."""
    try:
        code = main()
    except BenchError as exc:
        print(f"BENCH BROKEN: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


def stop_on_sigterm() -> None:
    """Turn SIGTERM (e.g. from ``timeout``) into SystemExit, so servers are stopped by PID."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def skip_locust_patch() -> None:
    """Importing seed_tasks imports Locust: keep this process unpatched (the driver is not)."""
    os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"


@contextlib.contextmanager
def demo_server(**knobs: Any) -> Iterator[DemoServerProcess]:
    """A demo server on a free loopback port; stopped (SIGTERM, then SIGKILL) by PID."""
    server = DemoServerProcess(host="127.0.0.1", **knobs)
    server.start()
    try:
        if not server.url.startswith("http://127.0.0.1:"):
            raise BenchError(f"demo server is not on loopback: {server.url}")
        yield server
    finally:
        server.close()


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    rps: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    conns: int
    duration_s: float


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise BenchError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    path: str,
    *,
    conns: int,
    duration_s: float = 4.0,
    post_json: Any = None,
    threads: int = 1,
) -> WrkResult:
    """Run ``wrk -t<threads> -c<conns> -d<duration_s> --latency`` against ``url + path``.

    ``post_json``: send POST with this JSON body (through a temporary Lua script).
    Raises :class:`BenchError` on non-2xx answers, socket errors or a wrk failure.
    """
    exe = shutil.which("wrk")
    if exe is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load a non-loopback URL: {url}")
    cmd = [
        exe,
        f"-t{threads}",
        f"-c{max(conns, threads)}",
        f"-d{duration_s:g}s",
        "--latency",
        "--timeout",
        "5s",
    ]
    lua = None
    try:
        if post_json is not None:
            body = json.dumps(post_json)
            lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
            lua.write(
                'wrk.method = "POST"\n'
                f"wrk.body = [==[{body}]==]\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            lua.close()
            cmd += ["-s", lua.name]
        cmd.append(url + path)
        with machine_lock():
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + 15)
    finally:
        if lua is not None:
            os.unlink(lua.name)
    out = proc.stdout
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    if "Non-2xx" in out or "Socket errors" in out:
        raise BenchError(f"wrk saw errors against {url}{path}:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not rps or not total:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    return WrkResult(
        rps=float(rps.group(1)),
        requests=int(total.group(1)),
        p50_ms=_ms(p50.group(1)) if p50 else None,
        p99_ms=_ms(p99.group(1)) if p99 else None,
        conns=conns,
        duration_s=duration_s,
    )


def machine_lock() -> contextlib.AbstractContextManager[None]:
    """The engine's machine-wide load lock, for load this bench makes outside run_capacity.

    run_capacity serialises load runs per machine user through this lock; taking it around
    wrk and raw Locust keeps other sessions' capacity runs from overlapping those too. Never
    hold it around run_capacity (which takes it itself).
    """
    try:
        from pytest_mlload.load.engine import exclusive_load
    except ImportError:
        return contextlib.nullcontext()
    return exclusive_load()


# --------------------------------------------------------------------------- CPU accounting


@dataclass(frozen=True, slots=True)
class CpuShare:
    """Cores used during a span: the whole machine, the server, this bench, everyone else."""

    machine: float
    server: float
    bench: float

    @property
    def others(self) -> float:
        """Cores used by processes outside this benchmark (other jobs on the machine)."""
        return max(0.0, self.machine - self.server - self.bench)


class CpuMeter:
    """Measure CPU use over a span, so load from other jobs on the machine shows in the table.

    ``bench`` counts this process and its children (the load driver and raw Locust
    subprocesses, wrk); ``server`` the demo server by PID; ``machine`` comes from /proc/stat.
    """

    def __init__(self, server_pid: int) -> None:
        import psutil  # a Locust dependency

        self._psutil = psutil
        self._server = psutil.Process(server_pid)
        self._t0 = time.monotonic()
        self._m0 = self._busy()
        self._s0 = self._server_s()
        self._b0 = self._bench_s()

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def _server_s(self) -> float:
        c = self._server.cpu_times()
        return float(c.user + c.system)

    def _bench_s(self) -> float:
        # Finished children are in os.times() once waited for; running ones (the load driver
        # mid-run) are read live. A child running at the start and finished at the end is
        # counted once: its total then, minus its part at the start.
        t = os.times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self._psutil.Process().children(recursive=True):
            if child.pid == self._server.pid:
                continue
            try:
                c = child.cpu_times()
            except self._psutil.Error:
                continue
            total += c.user + c.system
        return total

    def stop(self) -> CpuShare:
        """Cores used since construction (CPU seconds / wall seconds)."""
        dt = max(time.monotonic() - self._t0, 1e-9)
        return CpuShare(
            machine=(self._busy() - self._m0) / dt,
            server=(self._server_s() - self._s0) / dt,
            bench=(self._bench_s() - self._b0) / dt,
        )


# --------------------------------------------------------------------------- printing


def spread(values: Sequence[float]) -> str:
    """``min / median / max`` of ``values``."""
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def fmt(value: float | None, spec: str = ".1f") -> str:
    """A number, or ``-`` for None."""
    return "-" if value is None else format(value, spec)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with aligned columns (pastes straight into bench/README.md)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def say(text: str = "") -> None:
    """Print and flush (progress lines interleave with tables)."""
    print(text, flush=True)


def header(title: str) -> None:
    """A dated header with the machine facts that matter for these numbers."""
    load = os.getloadavg()
    say(f"# {title}")
    say(
        f"date {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores, "
        f"load avg {load[0]:.2f}, python {sys.version.split()[0]}"
    )


def cv(values: Sequence[float | None]) -> float | None:
    """Coefficient of variation in % (sample standard deviation / mean); None below 2 values."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) < 2 or statistics.mean(vals) == 0:
        return None
    return 100.0 * statistics.stdev(vals) / statistics.mean(vals)


def pct(x: float | None) -> str:
    """A percentage figure for a table, ``-`` when missing."""
    return "-" if x is None else f"{x:.1f} %"
