"""The load driver: the only process that imports Locust.

Started by :mod:`pytest_mlload.engine` as ``python -m pytest_mlload._driver`` with a JSON job on
stdin. It owns the gevent world (Locust monkey-patches this process, never pytest's), runs the
capacity search of :mod:`pytest_mlload.controller` against a Locust ``LocalRunner`` and
streams events on stdout, one JSON document per line behind a marker (user code may print).
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

from .config import resolve_settings  # noqa: E402
from .controller import CapacitySearch, Samples, Step, build_result, run_search  # noqa: E402
from .targets import import_class  # noqa: E402

MARK = "@@mlload@@ "


def emit(event: str, **data: Any) -> None:
    """Write one event line for the parent."""
    sys.__stdout__.write(MARK + json.dumps({"event": event, **data}) + "\n")
    sys.__stdout__.flush()


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
        self._cpu: list[tuple[float, float]] = [(time.monotonic(), time.process_time())]
        env.events.request.add_listener(self._on_request)

    def _on_request(
        self,
        request_type: str,
        name: str,
        response_time: float,
        exception: BaseException | None = None,
        **_: Any,
    ) -> None:
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

    def cpu_ratio(self, start_s: float, stop_s: float) -> float | None:
        """Share of one core this process used between two times (from tick samples)."""
        ts = [t for t, _ in self._cpu]
        i = max(bisect.bisect_left(ts, start_s) - 1, 0)
        j = min(bisect.bisect_right(ts, stop_s), len(ts)) - 1
        if j <= i:
            return None
        (t0, c0), (t1, c1) = self._cpu[i], self._cpu[j]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else None

    def quit(self) -> None:
        self.runner.quit()


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
    load = LocustLoad(env)
    search = CapacitySearch(settings, probe_users=job.get("probe_users"))
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

    def should_stop() -> str | None:
        return "the pytest process went away" if os.getppid() != parent else None

    try:
        run_search(search, load, RealClock(), on_window=on_window, should_stop=should_stop)
    finally:
        load.quit()
    result = build_result(
        search,
        name=job.get("name", ""),
        host=job["host"],
        elapsed_s=time.monotonic() - t0,
        epoch_offset=epoch_offset,
        generator_cpu_ratio=cpu_by_phase.get("measure"),
    )
    emit("result", result=result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
