"""A load worker: ``python -m pytest_mlload.worker --master HOST:PORT``.

Joins the Locust master of a pytest-mlload run (``--mlload-master-bind HOST:PORT
--mlload-expect-workers N``), asks it for the job, imports the job's TaskSets (or User class)
exactly as the single-process driver does, checks that its copy of their code is the
master's (a fingerprint of the files; a mismatch is an error naming the file), then runs the
users the master dispatches and ships every request's raw sample back in small batches
(:mod:`pytest_mlload.load.merge`). It serves one run after another (every capacity part of a
suite starts its own master on the same address) until no master answers for about five
minutes, or one run with ``--once``.

Also accepts Locust's own worker flags (``--worker --master-host H --master-port P``) and
ignores the rest, so it can be the entrypoint of a Locust operator's worker pods.
"""

from __future__ import annotations

import os

os.environ.pop("LOCUST_SKIP_MONKEY_PATCH", None)
os.environ.pop("LOCUST_SKIP_URLLIB3_PATCH", None)

import argparse  # noqa: E402
import logging  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import locust  # noqa: E402, F401  (patches this process with gevent, as intended)
from locust.env import Environment  # noqa: E402
from locust.event import Events  # noqa: E402

from pytest_mlload.config import split_host_port  # noqa: E402
from pytest_mlload.load.distributed import (  # noqa: E402
    MSG_HELLO,
    MSG_JOB,
    MSG_READY,
    MSG_SAMPLES,
    code_fingerprint,
)
from pytest_mlload.load.merge import BATCH_S  # noqa: E402
from pytest_mlload.load.streaming import CONTEXT_KEY  # noqa: E402

ORPHANED_EXIT = 3
HELLO_EVERY_S = 2.0


class SampleShipper:
    """Collects every request's raw sample and sends them to the master every ``BATCH_S``.

    Completion times are wall-clock (``time.time()``), the only clock a master on another
    machine can convert; a batch's ``sent`` time is taken when it is cut, so every sample
    completed before it is in this batch or an earlier one.
    """

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.seq = 0
        self._reset()
        runner.environment.events.request.add_listener(self._on_request)

    def _reset(self) -> None:
        self.end: list[float] = []
        self.lat: list[float] = []
        self.ok: list[bool] = []
        self.name: list[str] = []
        self.err: dict[str, str] = {}
        self.stream: dict[str, dict[str, Any]] = {}

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
        if figures is not None:  # a streamed request: TTFB, TTFT, tokens... (load.streaming)
            self.stream[str(len(self.end))] = figures
        self.end.append(time.time())
        self.lat.append(float(response_time))
        self.ok.append(exception is None)
        self.name.append(str(name))
        if exception is not None:
            self.err[str(len(self.end) - 1)] = f"{type(exception).__name__}: {str(exception)[:160]}"

    def ship(self) -> None:
        """Cut a batch of everything since the last one and send it."""
        data = {
            "seq": self.seq,
            "sent": time.time(),
            "cpu": time.process_time(),
            "end": self.end,
            "lat": self.lat,
            "ok": self.ok,
            "name": self.name,
            "err": self.err,
            "stream": self.stream,
        }
        self._reset()
        self.seq += 1
        self.runner.send_message(MSG_SAMPLES, data)

    def run(self) -> None:
        """Ship a batch every ``BATCH_S`` until the runner's greenlets are killed."""
        while True:
            self.ship()
            gevent.sleep(BATCH_S)


def _load_job(env: Environment, job: dict[str, Any], local: bool) -> dict[str, Any]:
    """Import the job's target as the driver does; the ``mlload_ready`` message to send."""
    from pytest_mlload.load.driver import build_user_class

    me = {"pid": os.getpid(), "hostname": socket.gethostname()}
    if local:  # same machine as the master: its import path applies; a remote worker uses its own
        sys.path[:0] = [p for p in job.get("sys_path", []) if p not in sys.path]
    try:
        user_cls = build_user_class(job)
        fingerprint = code_fingerprint(job["target"])
    except Exception as exc:  # reported to the master, which names this worker
        return {**me, "error": f"{type(exc).__name__}: {exc}"}
    env.user_classes = [user_cls]
    env.host = job["host"]
    return {**me, "fingerprint": fingerprint}


def serve_one_run(host: str, port: int, *, local: bool, parent_pid: int = 0) -> None:
    """Join the master at ``host:port``, run its job until it says quit."""
    env = Environment(user_classes=[], events=Events())  # type: ignore[no-untyped-call]
    runner = env.create_worker_runner(host, port)  # blocks until the master answers
    shipper = SampleShipper(runner)

    got_job: list[bool] = []

    def on_job(environment: Any, msg: Any, **_: Any) -> None:
        if got_job:
            return  # an answer to a repeated hello
        got_job.append(True)
        ready = _load_job(env, msg.data, local)
        runner.send_message(MSG_READY, ready)
        if "fingerprint" in ready:
            runner.greenlet.spawn(shipper.run)

    runner.register_message(MSG_JOB, on_job)
    if parent_pid:
        runner.greenlet.spawn(_exit_with_parent, parent_pid)
    runner.greenlet.spawn(_hello_until_job, runner, got_job)
    runner.greenlet.join()
    runner.client.close(linger=0)  # type: ignore[no-untyped-call]


def _hello_until_job(runner: Any, got_job: list[bool]) -> None:
    """Ask for the job until it comes; re-announce the worker while waiting.

    A worker that served a previous run may have been acknowledged by that run's master
    while it was closing (it ignores hellos then): announcing again (``client_ready``)
    reaches the next master on the same address.
    """
    from locust import __version__ as locust_version
    from locust.rpc import Message

    while not got_job:
        runner.send_message(MSG_HELLO, {"pid": os.getpid()})
        gevent.sleep(HELLO_EVERY_S)
        if not got_job:
            announce = Message("client_ready", locust_version, runner.client_id)  # type: ignore[no-untyped-call]
            runner.client.send(announce)


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        gevent.sleep(0.5)
    os._exit(ORPHANED_EXIT)  # the driver is gone: nobody will tell us to quit


def parse_master(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``master`` becomes ``(host, port)``."""
    p = argparse.ArgumentParser(
        prog="python -m pytest_mlload.worker",
        description="Join a pytest-mlload Locust master and generate its load.",
    )
    p.add_argument("--master", help="HOST:PORT the master listens on (--mlload-master-bind)")
    p.add_argument("--master-host", help="Locust-style: the master's host")
    p.add_argument("--master-port", type=int, default=5557, help="Locust-style: its port")
    p.add_argument("--once", action="store_true", help="exit after one run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--local", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
    # A Locust operator appends its own arguments to every pod: ignore what is not ours.
    args, _ = p.parse_known_args(argv)
    if args.master:
        args.master = split_host_port(args.master, "--master")
    elif args.master_host:
        args.master = (args.master_host, args.master_port)
    else:
        p.error("give the master's address: --master HOST:PORT (the --mlload-master-bind value)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Serve runs of the master (one with ``--once``, or when started by the driver)."""
    from pytest_mlload.errors import ConfigError

    try:
        args = parse_master(argv)
    except ConfigError as exc:
        print(f"pytest_mlload.worker: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("locust").setLevel(logging.ERROR)
    host, port = args.master
    once = args.once or args.local
    served = 0
    while True:
        try:
            serve_one_run(host, port, local=args.local, parent_pid=args.parent_pid)
        except ConnectionError as exc:  # Locust gives up after about 5 minutes of retries
            print(
                f"pytest_mlload.worker: no master answers at {host}:{port} ({exc!r})",
                file=sys.stderr,
            )
            return 0 if served else 1
        served += 1
        if once:
            return 0


if __name__ == "__main__":
    sys.exit(main())
