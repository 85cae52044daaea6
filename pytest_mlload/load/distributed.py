"""Locust's own master/worker runners as the load generator of the capacity search.

Imported by the load driver (and by :mod:`pytest_mlload.worker`) only: it imports Locust.

With ``workers=N`` (or ``expect_workers=N`` and ``master_bind``) the driver creates a Locust
``MasterRunner`` instead of a ``LocalRunner``; the one controller of the single-process path
drives it through :class:`~pytest_mlload.load.merge.MergedLoad`, whose actuator is
``MasterRunner.start(users, spawn_rate)`` (Locust re-targets the users across the workers).

Custom messages (``runner.register_message`` / ``send_message``) carry everything else:

* worker -> master ``mlload_hello``: the worker connected and wants the job;
* master -> worker ``mlload_job``: the job (target spec, settings, host) and the master's
  fingerprint of the target's code;
* worker -> master ``mlload_ready``: the worker's fingerprint of the code it imported, or the
  import error; a different fingerprint is a clear error naming the file that differs;
* worker -> master ``mlload_samples``: a batch of raw samples (:mod:`~pytest_mlload.load.merge`).

A local worker process that exits, or any worker that stops sending batches, makes the run
inconclusive (:class:`~pytest_mlload.load.merge.WorkerLost`). :meth:`DistributedLoad.quit`
quits the workers, closes the master's socket (a stopped ``MasterRunner`` keeps its port
bound otherwise) and stops the local worker processes by PID.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import gevent

from pytest_mlload import __version__
from pytest_mlload._io import stop_process
from pytest_mlload.config import RunSettings, split_host_port
from pytest_mlload.load.controller import Clock, Samples
from pytest_mlload.load.merge import (
    JOIN_TIMEOUT_S,
    Batch,
    MergedLoad,
    MergedSamples,
    WorkerLost,
    WorkersFailed,
)
from pytest_mlload.targets import import_class

__all__ = [
    "DistributedLoad",
    "WorkerLost",
    "WorkersFailed",
    "code_fingerprint",
    "close_master",
    "open_master",
]

MSG_HELLO = "mlload_hello"
MSG_JOB = "mlload_job"
MSG_READY = "mlload_ready"
MSG_SAMPLES = "mlload_samples"
LOCAL_HOST = "127.0.0.1"
SET_USERS_TIMEOUT_S = 10.0
WORKER_COMMAND = "python -m pytest_mlload.worker --master HOST:PORT"


def code_fingerprint(spec: dict[str, Any]) -> dict[str, str]:
    """What must be equal on master and workers: versions and the target classes' files.

    Keys are ``module.qualname (file)``; values a SHA-256 prefix of the file's bytes, so a
    worker with an edited or older copy of a TaskSet module shows which file differs. A
    factory-made target (``openai_chat``...) is pytest-mlload's code, rebuilt from the
    recipe the job carries: its version covers it.
    """
    import locust

    refs = [spec["user"]] if spec["kind"] == "user" else [t["ref"] for t in spec["tasksets"]]
    out = {"pytest-mlload": __version__, "locust": locust.__version__}
    for ref in refs:
        if ref.get("recipe"):  # a factory-made class (openai_chat...): built from the job
            continue
        cls = import_class(ref)
        try:
            path = inspect.getfile(cls)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()[:16]
        except (TypeError, OSError):
            path, digest = "?", "unreadable"
        out[f"{ref['module']}.{ref['qualname']} ({os.path.basename(path)})"] = digest
    return out


def fingerprint_mismatch(ours: dict[str, str], theirs: dict[str, str]) -> str:
    """A sentence naming what differs between two fingerprints ("" when they match)."""
    diffs = [
        f"{key}: {ours.get(key, 'missing')} on the master, {theirs.get(key, 'missing')} there"
        for key in sorted(set(ours) | set(theirs))
        if ours.get(key) != theirs.get(key)
    ]
    return "; ".join(diffs)


def open_master(env: Any, bind: str) -> Any:
    """A Locust ``MasterRunner`` on ``bind`` (``HOST:PORT``; "" = 127.0.0.1, a free port)."""
    host, port = split_host_port(bind or f"{LOCAL_HOST}:0", "master_bind")
    try:
        return env.create_master_runner(master_bind_host=host, master_bind_port=port)
    except SystemExit:  # Locust exits the process when the port is taken
        raise WorkersFailed(
            f"the Locust master cannot listen on {host}:{port}: the port is in use (an old "
            f"run still holding it?); free it or give another --mlload-master-bind"
        ) from None


def close_master(runner: Any) -> None:
    """Quit ``runner`` (it tells its workers to quit) and release its port."""
    try:
        runner.quit()
    finally:
        sock = runner.server.socket
        context = sock.context
        sock.close(linger=0)
        # zmq closes sockets on its I/O thread: the port is free only once the context ends
        context.term()


class DistributedLoad:
    """A Locust master, its local worker processes and the merged samples of all workers.

    It is the search's load generator (``set_users``, ``count_since``, ``window``,
    ``cpu_ratio``, delegated to :class:`MergedLoad`); ``on_event`` is told where the master
    listens and which worker processes it started.
    """

    def __init__(
        self,
        env: Any,
        job: dict[str, Any],
        settings: RunSettings,
        clock: Clock,
        on_event: Callable[..., None] = lambda *a, **k: None,
    ) -> None:
        self.env, self.job, self.settings, self.clock = env, job, settings, clock
        self.expected = settings.workers + settings.expect_workers
        self.store = MergedSamples()
        self.fingerprint = code_fingerprint(job["target"])
        self.ready: dict[str, dict[str, Any]] = {}
        self.failed: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.closing = False
        self._logs: list[Any] = []
        # remote workers stamp with their wall clock; convert to this clock
        self.epoch_offset = time.time() - clock.now()
        self.runner = open_master(env, settings.master_bind)
        self.port = int(self.runner.server.port)
        for name, handler in (
            (MSG_HELLO, self._on_hello),
            (MSG_READY, self._on_ready),
            (MSG_SAMPLES, self._on_samples),
        ):
            self.runner.register_message(name, handler)
        self.merged = MergedLoad(self.store, clock, self._actuate, check=self._check)
        self.bind_host = split_host_port(settings.master_bind or f"{LOCAL_HOST}:0")[0]
        try:
            self._start_local_workers()
            on_event(
                "workers",
                master=f"{self.bind_host}:{self.port}",
                pids=[p.pid for p in self.procs],
                expected=self.expected,
            )
            self._wait_for_workers()
        except BaseException:
            self.quit()
            raise

    # -- joining -----------------------------------------------------------------------
    def _start_local_workers(self) -> None:
        host = LOCAL_HOST if self.bind_host in ("0.0.0.0", "*", "") else self.bind_host
        env = dict(os.environ)
        env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
        # the workers import this very package, wherever it was imported from
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        for _ in range(self.settings.workers):
            log = tempfile.TemporaryFile()  # noqa: SIM115  (closed in quit)
            self._logs.append(log)
            cmd = [sys.executable, "-m", "pytest_mlload.worker", "--master", f"{host}:{self.port}"]
            cmd += ["--local", "--parent-pid", str(os.getpid())]
            self.procs.append(
                subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
            )

    def _wait_for_workers(self) -> None:
        give_up = time.monotonic() + JOIN_TIMEOUT_S
        while len(self.ready) < self.expected:
            if self.failed:
                raise WorkersFailed(self.failed[0])
            exited = self._exited()
            if exited:
                raise WorkersFailed(f"{exited} before joining the master")
            if time.monotonic() >= give_up:
                raise WorkersFailed(
                    f"only {len(self.ready)} of {self.expected} workers joined the Locust master "
                    f"at {self.bind_host}:{self.port} within {JOIN_TIMEOUT_S:g} s; start the "
                    f"missing ones with `{WORKER_COMMAND.replace('HOST:PORT', self._address())}`"
                    f" or lower expect_workers"
                )
            gevent.sleep(0.05)
        strangers = set(self.runner.clients) - set(self.ready)
        if strangers:
            raise WorkersFailed(
                f"worker(s) {', '.join(sorted(strangers))} joined the master but are not "
                f"pytest-mlload workers (plain `locust --worker` sends no raw samples); start "
                f"workers with `{WORKER_COMMAND}`"
            )

    def _address(self) -> str:
        return f"{self.bind_host}:{self.port}"

    def _on_hello(self, environment: Any, msg: Any, **_: Any) -> None:
        # A worker told to quit may rejoin before this master has closed: its hello is for
        # the next run's master, which it reaches by announcing itself again.
        if self.closing or msg.node_id in self.ready:
            return
        job = {**self.job, "fingerprint": self.fingerprint}
        self.runner.send_message(MSG_JOB, job, client_id=msg.node_id)

    def _on_ready(self, environment: Any, msg: Any, **_: Any) -> None:
        data, who = msg.data, self._describe(msg.node_id, msg.data)
        if data.get("error"):
            self.failed.append(f"{who} could not load the target: {data['error']}")
            return
        diff = fingerprint_mismatch(self.fingerprint, data.get("fingerprint", {}))
        if diff:
            self.failed.append(
                f"{who} does not run the same code as the master ({diff}); install the same "
                f"version of the load-test code (TaskSets, weights module) and of pytest-mlload "
                f"and Locust on every worker"
            )
            return
        if len(self.ready) >= self.expected:
            self.failed.append(f"{who} joined, but only {self.expected} workers were expected")
            return
        self.ready[msg.node_id] = dict(data)
        self.store.add_source(msg.node_id)

    @staticmethod
    def _describe(node_id: str, data: dict[str, Any]) -> str:
        return f"worker {node_id} (pid {data.get('pid', '?')} on {data.get('hostname', '?')})"

    def _on_samples(self, environment: Any, msg: Any, **_: Any) -> None:
        if msg.node_id not in self.ready:
            return
        d, off = msg.data, self.epoch_offset
        self.store.receive(
            Batch(
                source=msg.node_id,
                seq=int(d["seq"]),
                sent_s=float(d["sent"]) - off,
                cpu_s=float(d["cpu"]),
                end_s=[t - off for t in d["end"]],
                latency_ms=d["lat"],
                ok=d["ok"],
                name=d["name"],
                errors={int(k): v for k, v in d["err"].items()},
                streams={int(k): v for k, v in d.get("stream", {}).items()},
            ),
            arrived_s=self.clock.now(),
        )

    # -- running -------------------------------------------------------------------------
    def _exited(self) -> str:
        for p in self.procs:
            code = p.poll()
            if code is not None:
                how = f"signal {-code}" if code < 0 else f"status {code}"
                tail = self._log_tail(self.procs.index(p))
                return f"local worker process {p.pid} exited with {how}{tail}"
        return ""

    def _log_tail(self, k: int) -> str:
        log = self._logs[k]
        try:
            log.seek(0)
            text = log.read()[-600:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""
        return f"; its output ended with:\n{text}" if text else ""

    def _check(self) -> str:
        exited = self._exited()
        if exited:
            return f"{exited} during the run"
        from locust.runners import STATE_MISSING

        clients = self.runner.clients
        strangers = sorted(set(clients) - set(self.ready))
        if strangers:  # Locust would give it a share of the users, whose samples we never see
            return f"worker {strangers[0]} joined during the run but is not one of its workers"
        for c in self.ready:
            if c not in clients:
                return f"worker {c} left the master during the run"
            if clients[c].state == STATE_MISSING:
                return f"worker {c} stopped sending heartbeats to the master during the run"
        return ""

    def _actuate(self, users: int) -> None:
        self.runner.start(users, spawn_rate=max(100, users * 20))
        give_up = time.monotonic() + SET_USERS_TIMEOUT_S
        while self.runner.user_count != users and time.monotonic() < give_up:
            if self._check():
                return  # the next call of the search raises WorkerLost
            gevent.sleep(0.01)

    def set_users(self, users: int) -> None:
        """Re-target the workers to ``users`` users in total."""
        self.merged.set_users(users)

    def count_since(self, t: float) -> int:
        """Samples completed since ``t`` that have arrived from the workers."""
        return self.merged.count_since(t)

    def window(self, start_s: float, stop_s: float) -> Samples:
        """The window once every worker's samples cover it (see :class:`MergedLoad`)."""
        return self.merged.window(start_s, stop_s)

    def stream_window(self, start_s: float, stop_s: float) -> list[dict[str, Any]]:
        """Stream figures (TTFB, TTFT...) of the streamed requests of a window."""
        return self.merged.stream_window(start_s, stop_s)

    def cpu_ratio(self, start_s: float, stop_s: float) -> float | None:
        """The busiest worker's share of one core over a window (the guard is per worker)."""
        return self.merged.cpu_ratio(start_s, stop_s)

    def quit(self) -> None:
        """Quit the workers, release the master's port, stop local worker processes."""
        self.closing = True
        try:
            close_master(self.runner)
        finally:
            for p in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(2.0)  # they got "quit" from the master
                stop_process(p)
            for log in self._logs:
                log.close()
