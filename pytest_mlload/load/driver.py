"""The load driver: the only process that imports Locust.

Started by :mod:`pytest_mlload.load.engine` as ``python -m pytest_mlload.load.driver`` with a
JSON job on stdin. It owns the gevent world (Locust monkey-patches this process, never
pytest's), runs the capacity search of :mod:`pytest_mlload.load.controller` against a
Locust ``LocalRunner`` and streams events on stdout, one JSON document per line behind a
marker (user code may print). The parent keeps stdin open for the whole run: the driver
exits when it closes or when the parent dies (:func:`die_with_parent`).
"""

from __future__ import annotations

import os

os.environ.pop("LOCUST_SKIP_MONKEY_PATCH", None)
os.environ.pop("LOCUST_SKIP_URLLIB3_PATCH", None)

import bisect  # noqa: E402
import ctypes  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from types import TracebackType  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import locust  # noqa: E402  (patches this process with gevent, as intended)
import numpy as np  # noqa: E402
from locust.env import Environment  # noqa: E402

from pytest_mlload._redact import known_secrets, redact_url, scrub  # noqa: E402
from pytest_mlload.config import resolve_settings  # noqa: E402
from pytest_mlload.load.controller import CapacitySearch, Samples, Step, build_result  # noqa: E402
from pytest_mlload.load.merge import WorkersFailed, cpu_share, run_search_guarded  # noqa: E402
from pytest_mlload.load.openloop import (  # noqa: E402
    OpenLoopSamples,
    arrival_times,
    local_error_reason,
    recovery_time_s,
    summarize,
)
from pytest_mlload.load.streaming import (  # noqa: E402
    CONTEXT_KEY,
    StreamSamples,
    summarize_streams,
)
from pytest_mlload.results import CapacityResult, OpenLoopResult, SpikeResult  # noqa: E402
from pytest_mlload.targets import import_class  # noqa: E402

OPEN_LOOP_MAX_WORKERS = 2000
SPIKE_PRE_S = 3.0
SPIKE_WARMUP_S = 0.5
SPIKE_POST_S = 5.0
# Above this dispatch lag the generator, not the server, sets the pace.
MAX_DISPATCH_LAG_MS = 50.0
# How long in-flight open-loop requests may take to finish after the last arrival.
OPEN_LOOP_DRAIN_S = 5.0
# Arrivals an open-loop confirmation needs for a P99 interval.
OPEN_LOOP_MIN_ARRIVALS = 300

MARK = "@@mlload@@ "
# Like Locust's CLI: raise the soft open-file limit to this (or the hard limit if lower).
WANTED_OPEN_FILES = 10_000
# Descriptors kept for everything but the users' connections (Python, gevent, logs, pipes).
RESERVED_FDS = 100
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Exit status when the parent (pytest) went away: nobody is left to read the result.
ORPHANED_EXIT = 3
USER_CODE_EXIT = 4


def emit(event: str, **data: Any) -> None:
    """Write one event line for the parent."""
    out = sys.__stdout__
    assert out is not None
    out.write(MARK + json.dumps({"event": event, **data}) + "\n")
    out.flush()


class RealClock:
    """Monotonic time; sleeping yields to Locust's greenlets."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        gevent.sleep(max(seconds, 0.0))


def die_with_parent(parent_pid: int) -> None:
    """Stop this driver within a second of its parent's death, whatever phase it is in.

    The driver runs in its own session (so Ctrl-C reaches only pytest), hence a SIGKILLed
    pytest would leave it sending load until its own deadline. On Linux the kernel kills it
    when the parent dies (``PR_SET_PDEATHSIG``; the engine's calling thread waits for the
    driver, so it outlives it); everywhere, a greenlet exits when stdin (the engine keeps
    its end open for the whole run) reaches end of file.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the stdin watcher still covers it
    if parent_pid and os.getppid() != parent_pid:
        os._exit(ORPHANED_EXIT)  # the parent died before the signal was armed
    gevent.spawn(_exit_on_stdin_eof)


def _exit_on_stdin_eof() -> None:
    from gevent.os import make_nonblocking
    from gevent.socket import wait_read

    fd = sys.stdin.fileno()
    make_nonblocking(fd)
    while True:
        wait_read(fd)
        try:
            if not os.read(fd, 4096):
                os._exit(ORPHANED_EXIT)
        except BlockingIOError:
            continue


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (capped by the hard limit), as
    Locust's CLI does; returns the soft limit in force afterwards."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return WANTED_OPEN_FILES if soft == resource.RLIM_INFINITY else int(soft)


class UserCodeErrors:
    """The first exception the load test's own code raised (Locust's ``user_error`` event,
    also fired by the open-loop runner), located in the user's files."""

    def __init__(self, env: Environment, files: set[str], secrets: tuple[str, ...]) -> None:
        self.files = {os.path.realpath(f) for f in files if f}
        self.secrets = secrets
        self.first: dict[str, Any] | None = None
        self.count = 0
        env.events.user_error.add_listener(self._on_error)

    def _on_error(
        self, user_instance: Any, exception: BaseException, tb: TracebackType | None, **_: Any
    ) -> None:
        self.count += 1
        if self.first is None:
            self.first = self.describe(exception, tb)

    def describe(self, exc: BaseException, tb: TracebackType | None) -> dict[str, Any]:
        """Type, message, ``file:line`` and function of the user's frame that raised."""
        frames = list(traceback.walk_tb(tb))
        mine = [(f, n) for f, n in frames if os.path.realpath(f.f_code.co_filename) in self.files]
        outside = [
            (f, n)
            for f, n in frames
            if not any(p in f.f_code.co_filename for p in ("site-packages", "pytest_mlload"))
        ]
        where, location = "?", "?"
        if frames:
            frame, line = (mine or outside or frames)[-1]
            where, location = frame.f_code.co_qualname, f"{frame.f_code.co_filename}:{line}"
        detail = scrub(str(exc)[:300], self.secrets)
        trace = "".join(traceback.format_exception(type(exc), exc, tb, limit=-4))
        return {
            "exc_type": type(exc).__name__,
            "detail": detail,
            "where": where,
            "location": location,
            "trace": scrub(trace[-2000:], self.secrets),
        }

    def stop_reason(self) -> str | None:
        """Why the run must stop, once user code raised."""
        return "the load test's code raised" if self.first else None

    def emit(self) -> int:
        """Report the first error to the parent; the driver's exit status."""
        assert self.first is not None
        emit("error", kind="user_code", count=self.count, **self.first)
        return USER_CODE_EXIT


class LocalErrors:
    """Requests that failed on the load generator's side (EMFILE, no free port): counted
    apart, never as server failures; any of them makes the part inconclusive."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: dict[str, int] = {}

    def record(self, exception: BaseException | None) -> bool:
        """True (and counted) when ``exception`` is a local error."""
        reason = local_error_reason(exception)
        if reason is None:
            return False
        self.count += 1
        self.samples[reason] = self.samples.get(reason, 0) + 1
        return True

    def reason(self, where: str, open_files: int) -> str | None:
        """The inconclusive reason, or None when there was no local error."""
        if not self.count:
            return None
        top = ", ".join(
            f"{k} (x{n})" for k, n in sorted(self.samples.items(), key=lambda kv: -kv[1])
        )
        return (
            f"the load generator itself failed {self.count} request(s) during the {where} "
            f"({top}), with an open-file limit of {open_files}: a generator problem, not "
            f"counted as server failures; raise `ulimit -n` or lower the load"
        )


class LocustLoad:
    """:class:`~pytest_mlload.controller.LoadGenerator` backed by a Locust LocalRunner."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.runner = env.create_local_runner()
        self._end: list[float] = []
        self._lat: list[float] = []
        self._ok: list[bool] = []
        self._name: list[str] = []
        self._err: dict[int, str] = {}
        self._cpu: list[tuple[float, float]] = [(time.monotonic(), time.process_time())]
        self.local = LocalErrors()
        # Per-request stream figures (StreamFigures.to_context) by request index, for the
        # requests that streamed.
        self._stream: dict[int, dict[str, Any]] = {}
        env.events.request.add_listener(self._on_request)

    def _on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: BaseException | None = None,
        context: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        if self.local.record(exception):
            return  # the generator's own failure (EMFILE...): not a server sample
        figures = (context or {}).get(CONTEXT_KEY)
        if figures is not None:
            self._stream[len(self._end)] = figures
        self._end.append(time.monotonic())
        self._lat.append(float(response_time))
        self._ok.append(exception is None)
        self._name.append(str(name))
        if exception is not None:
            self._err[len(self._end) - 1] = f"{type(exception).__name__}: {str(exception)[:160]}"

    def set_users(self, users: int) -> None:
        self.runner.start(users, spawn_rate=max(100, users * 20))
        deadline = time.monotonic() + 10.0
        while self.runner.user_count != users and time.monotonic() < deadline:
            gevent.sleep(0.01)

    def count_since(self, t: float) -> int:
        self._cpu.append((time.monotonic(), time.process_time()))
        return len(self._end) - bisect.bisect_left(self._end, t)

    def window(self, start_s: float, stop_s: float) -> Samples:
        i = bisect.bisect_left(self._end, start_s)
        j = bisect.bisect_right(self._end, stop_s)
        errors = tuple(self._err[k] for k in range(i, j) if k in self._err)
        return Samples(
            np.asarray(self._end[i:j]),
            np.asarray(self._lat[i:j]),
            np.asarray(self._ok[i:j], dtype=bool),
            np.asarray(self._name[i:j], dtype=object),
            start_s,
            stop_s,
            errors,
            stream=self._stream_samples(i, j),
        )

    def _stream_samples(self, i: int, j: int) -> StreamSamples | None:
        """Stream figures of requests ``i..j-1`` row for row (None when none streamed)."""
        if not self._stream:
            return None
        return StreamSamples.from_records([self._stream.get(k) for k in range(i, j)])

    def stream_window(self, start_s: float, stop_s: float) -> list[dict[str, Any]]:
        """Stream figures of the requests completed in ``[start_s, stop_s]`` (in order)."""
        i = bisect.bisect_left(self._end, start_s)
        j = bisect.bisect_right(self._end, stop_s)
        return [self._stream[k] for k in range(i, j) if k in self._stream]

    def cpu_ratio(self, start_s: float, stop_s: float) -> float | None:
        """Share of one core this process used between two times (from tick samples)."""
        return cpu_share(self._cpu, start_s, stop_s)

    def quit(self) -> None:
        self.runner.quit()


def run_one_task(user: Any, tasksets: dict[tuple[int, type], Any]) -> None:
    """One open-loop arrival: one task of ``user``, as Locust would pick it.

    A task that is a TaskSet class is entered (its instance, kept in ``tasksets`` so its
    ``on_start`` runs once per user, picks one of its own tasks, nested TaskSets included),
    so a User whose ``tasks`` are TaskSets really sends their request. ``interrupt()``
    leaves the TaskSet (``on_stop``; the next arrival enters it again).
    """
    from locust import TaskSet
    from locust.exception import InterruptTaskSet

    parent: Any = user
    key: tuple[int, type] | None = None
    while True:
        tasks = parent.tasks
        if not tasks:
            raise TypeError(f"no tasks defined on {type(parent).__name__}; use @task")
        task = random.choice(tasks)
        if not (isinstance(task, type) and issubclass(task, TaskSet)):
            break
        key = (id(parent), task)
        if key not in tasksets:
            entered = task(parent)
            entered.on_start()
            tasksets[key] = entered
        parent = tasksets[key]
    try:
        task() if getattr(task, "__self__", None) is parent else task(parent)
    except InterruptTaskSet:
        if key is not None:
            tasksets.pop(key).on_stop()


class OpenLoopRunner:
    """Sends one task execution per scheduled arrival, whatever the server does.

    Each worker greenlet owns one User instance (its own connections) and takes arrivals from
    a queue; a worker is added whenever arrivals wait and fewer than ``max_workers`` exist, so
    a stalled server makes requests pile up and their latency counts from the intended time.
    An arrival whose request failed locally (EMFILE...) or that sent no request is marked
    ``local`` (no server figure); one that had to wait because all ``max_workers`` were busy
    is counted in ``starved``. ``stop`` is asked before each arrival (user code raised).
    """

    def __init__(
        self,
        env: Environment,
        user_cls: type,
        max_workers: int,
        *,
        stop: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.env, self.user_cls, self.max_workers, self.stop = env, user_cls, max_workers, stop
        self.peak_workers = 0
        self.starved = 0
        self.silent = 0  # arrivals that sent no request
        self.local = LocalErrors()
        self._failed: set[int] = set()
        self._local: set[int] = set()
        self._sent: dict[int, int] = {}

    def _on_request(self, exception: BaseException | None = None, **_: Any) -> None:
        me = id(gevent.getcurrent())
        self._sent[me] = self._sent.get(me, 0) + 1
        if self.local.record(exception):
            self._local.add(me)
        elif exception is not None:
            self._failed.add(me)

    def _arrival(self, user: Any, tasksets: dict[tuple[int, type], Any]) -> tuple[bool, bool]:
        """Run one arrival in this greenlet; ``(ok, local)``."""
        from locust.exception import RescheduleTask, RescheduleTaskImmediately, StopUser

        me = id(gevent.getcurrent())
        self._failed.discard(me)
        self._local.discard(me)
        self._sent[me] = 0
        good = True
        try:
            run_one_task(user, tasksets)
        except (RescheduleTask, RescheduleTaskImmediately, StopUser):
            pass
        except Exception as exc:  # the user's code raised: reported, and the run stops
            good = False
            self.env.events.user_error.fire(user_instance=user, exception=exc, tb=exc.__traceback__)
        silent = good and self._sent.get(me, 0) == 0
        self.silent += silent
        local = me in self._local or silent
        return good and not local and me not in self._failed, local

    def run(self, times: np.ndarray, deadline: float) -> OpenLoopSamples:
        """Dispatch ``times`` (monotonic) until done or ``deadline``; the per-arrival records."""
        self.env.events.request.add_listener(self._on_request)
        try:
            return self._run(times, deadline)
        finally:
            self.env.events.request.remove_listener(self._on_request)

    def _run(self, times: np.ndarray, deadline: float) -> OpenLoopSamples:
        from gevent.queue import Queue

        n = int(times.size)
        started = np.full(n, np.inf)  # when a worker actually sent it
        end = np.full(n, np.inf)
        ok = np.zeros(n, dtype=bool)
        local = np.zeros(n, dtype=bool)
        queue: Queue = Queue()
        idle = [0]
        workers: list[gevent.Greenlet] = []

        def worker() -> None:
            tasksets: dict[tuple[int, type], Any] = {}
            try:
                user = self.user_cls(self.env)
                user.on_start()
            except Exception as exc:
                self.env.events.user_error.fire(
                    user_instance=None, exception=exc, tb=exc.__traceback__
                )
                return
            try:
                while (i := queue.get()) is not None:
                    idle[0] -= 1
                    started[i] = time.monotonic()
                    ok[i], local[i] = self._arrival(user, tasksets)
                    end[i] = time.monotonic()
                    idle[0] += 1
            finally:
                for ts in tasksets.values():
                    ts.on_stop()
                user.on_stop()

        sent = 0
        for i in range(n):
            now = time.monotonic()
            if now >= deadline or self.stop():
                break
            if times[i] > now:
                gevent.sleep(times[i] - now)
            elif i % 16 == 0:
                gevent.sleep(0)  # behind schedule: still let the workers run
            queue.put(i)
            sent += 1
            if queue.qsize() > idle[0]:
                if len(workers) < self.max_workers:
                    idle[0] += 1
                    workers.append(gevent.spawn(worker))
                    self.peak_workers = max(self.peak_workers, len(workers))
                else:
                    self.starved += 1
        self._drain(workers, queue, end[:sent], deadline)
        return OpenLoopSamples(times, started, end, ok, local)

    def _drain(
        self, workers: list[gevent.Greenlet], queue: Any, end: np.ndarray, deadline: float
    ) -> None:
        """Wait (bounded) for the dispatched arrivals to finish, then stop the workers."""
        while time.monotonic() < deadline and not self.stop():
            if np.count_nonzero(np.isfinite(end)) == end.size:
                break
            gevent.sleep(0.01)
        for _ in workers:
            queue.put(None)
        gevent.joinall(workers, timeout=2.0)
        gevent.killall([g for g in workers if not g.dead], block=False)

    def problem(self, where: str, open_files: int) -> str | None:
        """Why this phase says nothing about the server, or None: local errors, arrivals
        that sent no request, arrivals that waited for a free worker."""
        reasons = [r for r in (self.local.reason(where, open_files),) if r]
        if self.silent:
            reasons.append(
                f"{self.silent} arrival(s) of the {where} sent no request (the task returned "
                f"without using self.client)"
            )
        if self.starved:
            reasons.append(
                f"{self.starved} arrival(s) of the {where} waited because all "
                f"{self.max_workers} open-loop workers were busy: the load generator, not the "
                f"server, set the pace; lower the rate or add load-generator capacity"
            )
        return "; ".join(reasons) or None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DriverRun:
    """What every phase of one driver run shares."""

    env: Environment
    user_cls: type
    settings: Any
    errors: UserCodeErrors
    open_files: int
    t0: float
    epoch_offset: float
    deadline: float

    @property
    def max_workers(self) -> int:
        """Open-loop workers this process can hold: each needs a connection (a descriptor)."""
        return max(1, min(OPEN_LOOP_MAX_WORKERS, self.open_files - RESERVED_FDS))

    def runner(self) -> OpenLoopRunner:
        """An open-loop runner that stops as soon as user code raised."""
        return OpenLoopRunner(
            self.env, self.user_cls, self.max_workers, stop=self.errors.stop_reason
        )

    def phase(self, name: str) -> None:
        """Tell the parent a phase starts (progress; the tests use it to time a kill)."""
        emit("phase", phase=name, elapsed_s=round(time.monotonic() - self.t0, 3))


def run_open_loop_confirm(run: DriverRun, rate: float, duration: float) -> OpenLoopResult:
    """The open-loop confirmation of an operating point: ``rate`` req/s for ``duration``."""
    run.phase("openloop")
    start = time.monotonic() + 0.05
    times = arrival_times(start, [(duration, rate)])
    runner = run.runner()
    samples = runner.run(times, run.deadline)
    return OpenLoopResult(
        rate_rps=rate,
        window=summarize(samples, start, start + duration, rate),
        peak_workers=runner.peak_workers,
        generator_problem=runner.problem("open-loop confirmation", run.open_files) or "",
    )


def open_loop_in_budget(run: DriverRun, rate: float) -> OpenLoopResult:
    """The open-loop confirmation within what is left of ``max_duration_s`` (``deadline``).

    It lasts ``probe_s`` or as long as 300 arrivals take (a P99 interval), whichever is
    longer, shortened to what is left but never below those 300 arrivals; when even that
    does not fit, it is skipped and the reason recorded (gates treat it as absent).
    """
    settings = run.settings
    wanted = max(settings.probe_s, OPEN_LOOP_MIN_ARRIVALS / max(rate, 1e-9))
    shortest = OPEN_LOOP_MIN_ARRIVALS / max(rate, 1e-9)
    # in-flight requests at the last arrival need time to finish: a few target P99s
    drain = min(OPEN_LOOP_DRAIN_S, max(0.5, 3.0 * settings.target_p99_ms / 1000.0))
    left = run.deadline - time.monotonic()
    if left < shortest + drain:
        return OpenLoopResult(
            rate_rps=rate,
            skipped=(
                f"only {max(left, 0.0):.1f} s of max_duration_s={settings.max_duration_s:g} s "
                f"left after the search; the open-loop confirmation needs "
                f"{shortest + drain:.1f} s ({OPEN_LOOP_MIN_ARRIVALS} arrivals at {rate:.1f} "
                f"req/s and the drain); raise max_duration_s to get it"
            ),
        )
    duration = min(wanted, left - drain)
    return run_open_loop_confirm(run, rate, duration)


def run_spike(run: DriverRun, deadline: float) -> tuple[SpikeResult, tuple[float, float]]:
    """Pre-spike, spike, recovery at fixed arrival rates; figures of each."""
    settings = run.settings
    target = settings.spike_target_rps
    base = target * settings.spike_base_ratio
    pre_s, dur, post_s = SPIKE_PRE_S, settings.spike_duration_s, max(SPIKE_POST_S, 2 * SPIKE_PRE_S)
    run.phase("spike")
    start = time.monotonic() + 0.05
    times = arrival_times(start, [(pre_s, base), (dur, target), (post_s, base)])
    runner = run.runner()
    samples = runner.run(times, deadline)
    spike_start, spike_end = start + pre_s, start + pre_s + dur
    pre = summarize(samples, start + SPIKE_WARMUP_S, spike_start, base)
    spike = summarize(samples, spike_start, spike_end, target)
    recovery = recovery_time_s(samples, spike_end, pre.p99_ms) if pre.p99_ms is not None else None
    w = samples.between(spike_start, spike_end).server_side()
    figures = SpikeResult(
        target_rps=target,
        base_rps=base,
        duration_s=dur,
        pre=pre,
        spike=spike,
        recovery_s=recovery,
        recovery_limit_s=post_s,
        peak_workers=runner.peak_workers,
        ok_requests=int(np.count_nonzero(w.ok & np.isfinite(w.end_s))),
        generator_problem=runner.problem("spike job", run.open_files) or "",
    )
    return figures, (spike_start, spike_end)


def emit_streams(step: Step, w: Samples, streams: list[dict[str, Any]]) -> None:
    """A ``stream`` event: the window's stream summary and its per-request figures."""
    emit(
        "stream",
        phase=step.phase,
        users=step.users,
        summary=summarize_streams(streams, w.duration_s),
        ttfb_ms=[r["ttfb_ms"] for r in streams],
        ttft_ms=[r["ttft_ms"] for r in streams],
        tpot_ms=[r["tpot_ms"] for r in streams],
        output_tokens=[r["output_tokens"] for r in streams],
        token_source=[r["token_source"] for r in streams],
    )


def _open_loop_skip(settings: Any, *, check: bool) -> str:
    """Why the open-loop confirmation does not run ("" when it does)."""
    if settings.slo_mode:
        # an arrival rate above capacity builds a backlog whose TTFT describes the backlog
        return "SLO mode gates closed-loop attainment"
    if check and not settings.open_loop:
        return "check mode without open_loop=True"  # check mode stays lean: not gated
    return ""


def make_load(env: Environment, job: dict[str, Any], settings: Any) -> Any:
    """A :class:`LocustLoad`, or a Locust master and its workers with ``settings.workers``.

    Raises :class:`~pytest_mlload.load.merge.WorkersFailed` when the workers cannot
    start the run (too few joined, or one runs other code).
    """
    if not settings.distributed:
        return LocustLoad(env)
    from pytest_mlload.load.distributed import DistributedLoad

    return DistributedLoad(env, job, settings, RealClock(), on_event=emit)


def open_loop_skip_reason(load: Any) -> str:
    """Why the open-loop confirmation is skipped for ``load`` ("" when it runs here)."""
    if isinstance(load, LocustLoad):
        return ""
    return (
        "the open-loop confirmation runs in one process and is not spread over workers "
        "yet; run this part without workers to get it"
    )


def build_user_class(job: dict[str, Any]) -> type:
    """The Locust User class that runs the job's target with its settings."""
    from locust import FastHttpUser, HttpUser, constant, task

    settings = job["settings"]
    spec = job["target"]
    timeout = float(settings["request_timeout_s"])
    wait = constant(float(settings["wait_time_s"]))
    if spec["kind"] == "user":
        user_cls = import_class(spec["user"])
        return type(user_cls.__name__, (user_cls,), {"host": job["host"], "abstract": False})

    sets = [(import_class(t["ref"]), float(t["weight"])) for t in spec["tasksets"]]
    sets = [(c, w) for c, w in sets if w > 0]
    classes = [c for c, _ in sets]
    weights = [w for _, w in sets]
    base: type = FastHttpUser if settings["client"] == "fast" else HttpUser

    class MlloadUser(base):  # type: ignore[misc]
        host = job["host"]
        wait_time = wait
        network_timeout = timeout
        connection_timeout = timeout

        def on_start(self) -> None:
            if not isinstance(self.client, locust.contrib.fasthttp.FastHttpSession):
                _set_requests_timeout(self.client, timeout)
            self._tasksets = [c(self) for c in classes]
            for ts in self._tasksets:
                if hasattr(ts, "on_start"):
                    ts.on_start()

        @task
        def run_endpoint(self) -> None:
            if len(self._tasksets) == 1:
                self._tasksets[0].test_endpoint()
            else:
                random.choices(self._tasksets, weights)[0].test_endpoint()

        def on_stop(self) -> None:
            pool = getattr(self.client, "client", None)
            if pool is not None and hasattr(pool, "clientpool"):
                pool.clientpool.close()

    return MlloadUser


def _set_requests_timeout(session: Any, timeout: float) -> None:
    """Give a requests-based HttpSession a default timeout (requests has none)."""
    from requests.adapters import HTTPAdapter

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request: Any, **kw: Any) -> Any:  # type: ignore[override]
            if kw.get("timeout") is None:
                kw["timeout"] = timeout
            return super().send(request, **kw)

    session.mount("http://", TimeoutAdapter())
    session.mount("https://", TimeoutAdapter())


def target_files(job: dict[str, Any]) -> set[str]:
    """The files of the job's target classes: where a user-code error is located."""
    spec = job["target"]
    refs = [spec["user"]] if spec.get("user") else [t["ref"] for t in spec["tasksets"]]
    return {r["file"] for r in refs if r.get("file")}


def main() -> int:
    job = json.loads(sys.stdin.readline())
    die_with_parent(int(job.get("parent_pid") or 0))
    open_files = raise_open_file_limit()
    sys.path[:0] = [p for p in job.get("sys_path", []) if p not in sys.path]
    logging.getLogger("locust").setLevel(logging.ERROR)
    settings = resolve_settings(cli=job["settings"])
    t0 = time.monotonic()
    epoch_offset = time.time() - t0
    secrets = known_secrets(job["host"])
    emit("started", pid=os.getpid(), open_files=open_files)
    try:
        user_cls = build_user_class(job)
    except Exception as exc:  # the user's module failed to import: report, do not hang
        emit(
            "error",
            kind="target",
            message=scrub(f"{type(exc).__name__}: {exc}", secrets),
            trace=scrub(traceback.format_exc(limit=5), secrets),
        )
        return 2
    env = Environment(user_classes=[user_cls], host=job["host"], events=locust.events)
    run = DriverRun(
        env=env,
        user_cls=user_cls,
        settings=settings,
        errors=UserCodeErrors(env, target_files(job), secrets),
        open_files=open_files,
        t0=t0,
        epoch_offset=epoch_offset,
        deadline=t0 + settings.max_duration_s,
    )
    if job.get("kind") == "spike":
        return spike_main(job, run)
    return search_main(job, run)


def _inconclusive(result: CapacityResult, problems: list[str | None]) -> CapacityResult:
    """``result`` made inconclusive by generator problems (their reasons first), if any."""
    problem = "; ".join(p for p in problems if p)
    if not problem:
        return result
    reason = f"{problem}; {result.reason}" if result.reason else problem
    return dataclasses.replace(result, status="inconclusive", reason=reason)


def search_main(job: dict[str, Any], run: DriverRun) -> int:
    """Run the capacity search (and its open-loop confirmation) and emit its result."""
    settings, t0 = run.settings, run.t0
    try:
        load = make_load(run.env, job, settings)
    except WorkersFailed as exc:
        emit("error", kind="workers", message=str(exc))
        return 2
    hold = job.get("hold_users")
    # Check mode passes hold_users; a plain search does not, so it runs with any controller.
    held: dict[str, Any] = {} if hold is None else {"hold_users": int(hold)}
    search = CapacitySearch(settings, probe_users=job.get("probe_users"), **held)
    cpu_by_phase: dict[str, float | None] = {}
    parent = os.getppid()

    def on_window(step: Step, w: Samples) -> None:
        cpu = load.cpu_ratio(w.start_s, w.stop_s)
        cpu_by_phase[step.phase] = cpu
        _emit_window(step.phase, step.users, w.rps, w.p99_ms(), w.requests, w.failures, run, cpu)
        streams = load.stream_window(w.start_s, w.stop_s)
        if streams:
            emit_streams(step, w, streams)

    def should_stop() -> str | None:
        if os.getppid() != parent:
            return "the pytest process went away"
        return run.errors.stop_reason()

    open_loop: OpenLoopResult | None = None
    problems: list[str | None] = []
    try:
        run_search_guarded(search, load, RealClock(), on_window=on_window, should_stop=should_stop)
        if run.errors.first:
            return run.errors.emit()
        if isinstance(load, LocustLoad):  # workers keep their own generator checks
            problems.append(load.local.reason("search", run.open_files))
        if search.status == "converged" and search.measurement is not None:
            open_loop = _confirm(job, run, load, search.measurement.rps, check=hold is not None)
            if run.errors.first:
                return run.errors.emit()
            problems.append(open_loop.generator_problem)
    finally:
        load.quit()
    result = build_result(
        search,
        name=job.get("name", ""),
        host=redact_url(job["host"]),  # results are written to reports and baselines
        elapsed_s=time.monotonic() - t0,
        epoch_offset=run.epoch_offset,
        generator_cpu_ratio=cpu_by_phase.get("measure"),
        open_loop=open_loop,
    )
    emit("result", result=_inconclusive(result, problems).to_dict())
    return 0


def _confirm(
    job: dict[str, Any], run: DriverRun, load: Any, capacity_rps: float, *, check: bool
) -> OpenLoopResult:
    """The open-loop confirmation after a converged search (or why it is skipped)."""
    settings = run.settings
    rate = job.get("open_loop_rps") or capacity_rps * settings.open_loop_ratio
    skip = _open_loop_skip(settings, check=check) or open_loop_skip_reason(load)
    if skip:
        return OpenLoopResult(rate_rps=rate, skipped=skip)
    load.runner.stop()
    open_loop = open_loop_in_budget(run, rate)
    if open_loop.window is not None:
        ol = open_loop.window
        _emit_window(
            "openloop", open_loop.peak_workers, ol.goodput_rps, ol.p99_ms,
            ol.requests, ol.failures, run, None,
        )  # fmt: skip
    return open_loop


def _emit_window(
    phase: str,
    users: int,
    rps: float,
    p99_ms: float | None,
    requests: int,
    failures: int,
    run: DriverRun,
    cpu: float | None,
) -> None:
    emit(
        "window",
        phase=phase,
        users=users,
        rps=round(rps, 3),
        p99_ms=p99_ms,
        requests=requests,
        failures=failures,
        elapsed_s=round(time.monotonic() - run.t0, 3),
        cpu=cpu,
        target_p99_ms=run.settings.target_p99_ms,
    )


def _spike_status(figures: SpikeResult, cpu: float) -> tuple[str, str]:
    """``(status, reason)`` of a spike job: inconclusive when the generator set the pace."""
    spike = figures.spike
    status, reason = "converged", ""
    lag = spike.dispatch_lag_p95_ms
    generator: list[str] = []
    if spike.sent_rps < 0.9 * figures.target_rps or (lag is not None and lag > MAX_DISPATCH_LAG_MS):
        generator.append(
            f"the load generator could not reach the spike rate: it sent "
            f"{spike.sent_rps:.1f} req/s of the {figures.target_rps:g} req/s asked "
            f"(p95 dispatch lag {lag or 0:.0f} ms, generator CPU {cpu:.0%}); lower "
            f"spike_target_rps or add load-generator capacity"
        )
    if figures.generator_problem:
        generator.append(figures.generator_problem)
    if generator:
        status, reason = "inconclusive", "; ".join(generator)
    elif spike.requests == 0:
        status, reason = "inconclusive", "no request was sent during the spike"
    elif figures.pre.p99_ms is None:
        status, reason = "inconclusive", "no successful request before the spike"
    return status, reason


def spike_main(job: dict[str, Any], run: DriverRun) -> int:
    """Run the spike job and emit its result."""
    settings = run.settings
    cpu0, wall0 = time.process_time(), time.monotonic()
    hard = max(run.deadline, wall0 + SPIKE_PRE_S + settings.spike_duration_s + 2 * SPIKE_POST_S + 5)
    figures, (s0, s1) = run_spike(run, hard)
    if run.errors.first:
        return run.errors.emit()
    cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
    spike = figures.spike
    status, reason = _spike_status(figures, cpu)
    result = CapacityResult(
        name=job.get("name", ""),
        host=redact_url(job["host"]),  # results are written to reports and baselines
        status=status,
        reason=reason,
        capacity_rps=spike.goodput_rps,
        p50_ms=spike.p50_ms,
        p95_ms=spike.p95_ms,
        p99_ms=spike.p99_ms,
        users=figures.peak_workers,
        requests=spike.requests,
        failures=spike.failures,
        error_ratio=spike.error_ratio,
        measure_s=figures.duration_s,
        elapsed_s=time.monotonic() - run.t0,
        target_p99_ms=settings.target_p99_ms,
        p99_ci=spike.p99_ci,
        generator_cpu_ratio=cpu,
        window_start_epoch=s0 + run.epoch_offset,
        window_end_epoch=s1 + run.epoch_offset,
        settings=settings.to_dict(),
        spike=figures,
    )
    emit("result", result=result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
