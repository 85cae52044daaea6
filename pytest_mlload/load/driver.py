"""The load driver: the only process that imports Locust.

Started by :mod:`pytest_mlload.load.engine` as ``python -m pytest_mlload.load.driver`` with a
JSON job on stdin. It owns the gevent world (Locust monkey-patches this process, never
pytest's), runs the capacity search of :mod:`pytest_mlload.load.controller` against a
Locust ``LocalRunner`` and streams events on stdout, one JSON document per line behind a
marker (user code may print).
"""

from __future__ import annotations

import os

os.environ.pop("LOCUST_SKIP_MONKEY_PATCH", None)
os.environ.pop("LOCUST_SKIP_URLLIB3_PATCH", None)

import bisect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import locust  # noqa: E402  (patches this process with gevent, as intended)
import numpy as np  # noqa: E402
from locust.env import Environment  # noqa: E402

from pytest_mlload.config import resolve_settings  # noqa: E402
from pytest_mlload.load.controller import CapacitySearch, Samples, Step, build_result  # noqa: E402
from pytest_mlload.load.merge import WorkersFailed, cpu_share, run_search_guarded  # noqa: E402
from pytest_mlload.load.openloop import OpenLoopSamples, arrival_times, recovery_time_s, summarize  # noqa: E402
from pytest_mlload.load.streaming import CONTEXT_KEY, summarize_streams  # noqa: E402
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
        # Per-request stream figures (StreamFigures.to_context) by request index, for the
        # requests that streamed: kept beside the latencies, not yet used by the controller.
        self._stream: dict[int, dict[str, Any]] = {}
        self._cpu: list[tuple[float, float]] = [(time.monotonic(), time.process_time())]
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
        )

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


class OpenLoopRunner:
    """Sends one task execution per scheduled arrival, whatever the server does.

    Each worker greenlet owns one User instance (its own connections) and takes arrivals from
    a queue; a worker is added whenever arrivals wait and fewer than ``max_workers`` exist, so
    a stalled server makes requests pile up and their latency counts from the intended time.
    """

    def __init__(self, env: Environment, user_cls: type, max_workers: int) -> None:
        self.env, self.user_cls, self.max_workers = env, user_cls, max_workers
        self.peak_workers = 0
        self._failed: set[int] = set()
        env.events.request.add_listener(self._on_request)

    def _on_request(self, exception: BaseException | None = None, **_: Any) -> None:
        if exception is not None:
            self._failed.add(id(gevent.getcurrent()))

    def run(self, times: np.ndarray, deadline: float) -> OpenLoopSamples:
        from gevent.queue import Queue

        n = int(times.size)
        started = np.full(n, np.inf)  # when a worker actually sent it
        end = np.full(n, np.inf)
        ok = np.zeros(n, dtype=bool)
        queue: Queue = Queue()
        idle = [0]
        workers: list[gevent.Greenlet] = []

        def worker() -> None:
            user = self.user_cls(self.env)
            if hasattr(user, "on_start"):
                user.on_start()
            try:
                while True:
                    i = queue.get()
                    if i is None:
                        return
                    idle[0] -= 1
                    started[i] = time.monotonic()
                    me = id(gevent.getcurrent())
                    self._failed.discard(me)
                    good = True
                    try:
                        random.choice(user.tasks)(user)
                    except Exception:
                        good = False
                    end[i] = time.monotonic()
                    ok[i] = good and me not in self._failed
                    idle[0] += 1
            finally:
                if hasattr(user, "on_stop"):
                    user.on_stop()

        def spawn() -> None:
            idle[0] += 1
            workers.append(gevent.spawn(worker))
            self.peak_workers = max(self.peak_workers, len(workers))

        sent = 0
        for i in range(n):
            now = time.monotonic()
            if now >= deadline:
                break
            if times[i] > now:
                gevent.sleep(times[i] - now)
            elif i % 16 == 0:
                gevent.sleep(0)  # behind schedule: still let the workers run
            queue.put(i)
            sent += 1
            if queue.qsize() > idle[0] and len(workers) < self.max_workers:
                spawn()
        while time.monotonic() < deadline and np.count_nonzero(np.isfinite(end[:sent])) < sent:
            gevent.sleep(0.01)
        for _ in workers:
            queue.put(None)
        gevent.joinall(workers, timeout=2.0)
        gevent.killall([g for g in workers if not g.dead], block=False)
        return OpenLoopSamples(times, started, end, ok)


def run_open_loop_confirm(
    env: Environment, user_cls: type, rate: float, duration: float, deadline: float
) -> OpenLoopResult:
    """The open-loop confirmation of an operating point: ``rate`` req/s for ``duration``."""
    start = time.monotonic() + 0.05
    times = arrival_times(start, [(duration, rate)])
    runner = OpenLoopRunner(env, user_cls, max_workers=OPEN_LOOP_MAX_WORKERS)
    samples = runner.run(times, deadline)
    window = summarize(samples, start, start + duration, rate)
    return OpenLoopResult(rate_rps=rate, window=window, peak_workers=runner.peak_workers)


def open_loop_in_budget(
    env: Environment, user_cls: type, rate: float, settings: Any, deadline: float
) -> OpenLoopResult:
    """The open-loop confirmation within what is left of ``max_duration_s`` (``deadline``).

    It lasts ``probe_s`` or as long as 300 arrivals take (a P99 interval), whichever is
    longer, shortened to what is left but never below those 300 arrivals; when even that
    does not fit, it is skipped and the reason recorded (gates treat it as absent).
    """
    wanted = max(settings.probe_s, OPEN_LOOP_MIN_ARRIVALS / max(rate, 1e-9))
    shortest = OPEN_LOOP_MIN_ARRIVALS / max(rate, 1e-9)
    # in-flight requests at the last arrival need time to finish: a few target P99s
    drain = min(OPEN_LOOP_DRAIN_S, max(0.5, 3.0 * settings.target_p99_ms / 1000.0))
    left = deadline - time.monotonic()
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
    return run_open_loop_confirm(env, user_cls, rate, duration, deadline)


def run_spike(
    env: Environment, user_cls: type, settings: Any, deadline: float
) -> tuple[SpikeResult, OpenLoopSamples, tuple[float, float]]:
    """Pre-spike, spike, recovery at fixed arrival rates; figures of each."""
    target = settings.spike_target_rps
    base = target * settings.spike_base_ratio
    pre_s, dur, post_s = SPIKE_PRE_S, settings.spike_duration_s, max(SPIKE_POST_S, 2 * SPIKE_PRE_S)
    start = time.monotonic() + 0.05
    times = arrival_times(start, [(pre_s, base), (dur, target), (post_s, base)])
    runner = OpenLoopRunner(env, user_cls, max_workers=OPEN_LOOP_MAX_WORKERS)
    samples = runner.run(times, deadline)
    spike_start, spike_end = start + pre_s, start + pre_s + dur
    pre = summarize(samples, start + SPIKE_WARMUP_S, spike_start, base)
    spike = summarize(samples, spike_start, spike_end, target)
    recovery = recovery_time_s(samples, spike_end, pre.p99_ms) if pre.p99_ms is not None else None
    w = samples.between(spike_start, spike_end)
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
    )
    return figures, samples, (spike_start, spike_end)


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

    class MlloadUser(base):  # type: ignore[misc, valid-type]
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


def main() -> int:
    job = json.loads(sys.stdin.readline())
    sys.path[:0] = [p for p in job.get("sys_path", []) if p not in sys.path]
    logging.getLogger("locust").setLevel(logging.ERROR)
    parent = os.getppid()
    settings = resolve_settings(cli=job["settings"])
    t0 = time.monotonic()
    epoch_offset = time.time() - t0
    try:
        user_cls = build_user_class(job)
    except Exception as exc:  # the user's module failed to import: report, do not hang
        emit(
            "error",
            kind="target",
            message=f"{type(exc).__name__}: {exc}",
            trace=traceback.format_exc(limit=5),
        )
        return 2
    env = Environment(user_classes=[user_cls], host=job["host"], events=locust.events)
    deadline = t0 + settings.max_duration_s
    if job.get("kind") == "spike":
        return spike_main(job, env, user_cls, settings, t0, epoch_offset, deadline)
    try:
        load = make_load(env, job, settings)
    except WorkersFailed as exc:
        emit("error", kind="workers", message=str(exc))
        return 2
    hold = job.get("hold_users")
    # Check mode passes hold_users; a plain search does not, so it runs with any controller.
    held: dict[str, Any] = {} if hold is None else {"hold_users": int(hold)}
    search = CapacitySearch(settings, probe_users=job.get("probe_users"), **held)
    cpu_by_phase: dict[str, float | None] = {}

    def on_window(step: Step, w: Samples) -> None:
        cpu = load.cpu_ratio(w.start_s, w.stop_s)
        cpu_by_phase[step.phase] = cpu
        emit(
            "window",
            phase=step.phase,
            users=step.users,
            rps=round(w.rps, 3),
            p99_ms=w.p99_ms(),
            requests=w.requests,
            failures=w.failures,
            elapsed_s=round(time.monotonic() - t0, 3),
            cpu=cpu,
            target_p99_ms=settings.target_p99_ms,
        )
        streams = load.stream_window(w.start_s, w.stop_s)
        if streams:
            emit_streams(step, w, streams)

    def should_stop() -> str | None:
        return "the pytest process went away" if os.getppid() != parent else None

    open_loop: OpenLoopResult | None = None
    try:
        run_search_guarded(search, load, RealClock(), on_window=on_window, should_stop=should_stop)
        if search.status == "converged" and search.measurement is not None:
            rate = job.get("open_loop_rps") or search.measurement.rps * settings.open_loop_ratio
            if hold is not None and not settings.open_loop:
                # check mode stays lean: the open-loop P99 is not gated (open_loop=False)
                open_loop = OpenLoopResult(
                    rate_rps=rate, skipped="check mode without open_loop=True"
                )
            elif skip := open_loop_skip_reason(load):
                open_loop = OpenLoopResult(rate_rps=rate, skipped=skip)
            else:
                load.runner.stop()
                open_loop = open_loop_in_budget(env, user_cls, rate, settings, deadline)
        if open_loop is not None and open_loop.window is not None:
            emit(
                "window",
                phase="openloop",
                users=open_loop.peak_workers,
                rps=round(open_loop.window.goodput_rps, 3),
                p99_ms=open_loop.window.p99_ms,
                requests=open_loop.window.requests,
                failures=open_loop.window.failures,
                elapsed_s=round(time.monotonic() - t0, 3),
                cpu=None,
                target_p99_ms=settings.target_p99_ms,
            )
    finally:
        load.quit()
    result = build_result(
        search,
        name=job.get("name", ""),
        host=job["host"],
        elapsed_s=time.monotonic() - t0,
        epoch_offset=epoch_offset,
        generator_cpu_ratio=cpu_by_phase.get("measure"),
        open_loop=open_loop,
    )
    emit("result", result=result.to_dict())
    return 0


def spike_main(
    job: dict[str, Any],
    env: Environment,
    user_cls: type,
    settings: Any,
    t0: float,
    epoch_offset: float,
    deadline: float,
) -> int:
    """Run the spike job and emit its result."""
    cpu0, wall0 = time.process_time(), time.monotonic()
    hard = max(deadline, wall0 + SPIKE_PRE_S + settings.spike_duration_s + 2 * SPIKE_POST_S + 5)
    figures, _, (s0, s1) = run_spike(env, user_cls, settings, hard)
    cpu = (time.process_time() - cpu0) / max(time.monotonic() - wall0, 1e-9)
    spike = figures.spike
    status, reason = "converged", ""
    lag = spike.dispatch_lag_p95_ms
    if spike.sent_rps < 0.9 * figures.target_rps or (lag is not None and lag > MAX_DISPATCH_LAG_MS):
        status = "inconclusive"
        reason = (
            f"the load generator could not reach the spike rate: it sent "
            f"{spike.sent_rps:.1f} req/s of the {figures.target_rps:g} req/s asked "
            f"(p95 dispatch lag {lag or 0:.0f} ms, generator CPU {cpu:.0%}); lower "
            f"spike_target_rps or add load-generator capacity"
        )
    elif spike.requests == 0:
        status, reason = "inconclusive", "no request was sent during the spike"
    elif figures.pre.p99_ms is None:
        status, reason = "inconclusive", "no successful request before the spike"
    result = CapacityResult(
        name=job.get("name", ""),
        host=job["host"],
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
        elapsed_s=time.monotonic() - t0,
        target_p99_ms=settings.target_p99_ms,
        p99_ci=spike.p99_ci,
        generator_cpu_ratio=cpu,
        window_start_epoch=s0 + epoch_offset,
        window_end_epoch=s1 + epoch_offset,
        settings=settings.to_dict(),
        spike=figures,
    )
    emit("result", result=result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
