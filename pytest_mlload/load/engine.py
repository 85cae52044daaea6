"""Run a capacity search from any Python process, pytest's included.

:func:`run_capacity` checks the target and the host, then starts the load driver
(:mod:`pytest_mlload.load.driver`) as a child process, so Locust's gevent patching never touches
the calling process. The driver streams progress and the final result as JSON lines; this
side enforces the time cap (the child is killed by PID if it overruns) and stops the child
on Ctrl-C, so no load outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_mlload._io import stop_process, timed_lock
from pytest_mlload._redact import known_secrets, redact_url, scrub
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import ConfigError, HostUnreachable, LoadError, UserCodeError
from pytest_mlload.load.merge import JOIN_TIMEOUT_S
from pytest_mlload.results import CapacityResult
from pytest_mlload.targets import resolve_target

__all__ = ["check_host", "run_capacity"]

MARK = "@@mlload@@ "
# Time the child may take beyond max_duration_s: interpreter start, `import locust`, the
# final measurement window finishing, and shutdown.
STARTUP_GRACE_S = 30.0
# How long a run queues behind other load runs on this machine before giving up.
LOCK_TIMEOUT_S = 900.0


def check_host(host: str, *, timeout_s: float = 3.0) -> tuple[str, int]:
    """Resolve and connect to ``host`` once; raise :class:`HostUnreachable` naming it.

    Returns ``(hostname, port)``. Bounded by ``timeout_s`` for DNS and for the connect.
    """
    parts = urlsplit(host)
    host = redact_url(host)  # every message below names it; none may show a credential
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"host {host!r} is not an http(s) URL; give e.g. --mlload-host http://127.0.0.1:8000"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[Any] = []

    def resolve() -> None:
        try:
            answer.append(socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answer.append(exc)

    t = threading.Thread(target=resolve, daemon=True)
    t.start()
    t.join(timeout_s)
    if not answer:
        raise HostUnreachable(
            f"cannot resolve {parts.hostname!r} within {timeout_s:g} s "
            f"(host {host}); check --mlload-host",
            host=host,
        )
    if isinstance(answer[0], OSError):
        raise HostUnreachable(
            f"cannot resolve {parts.hostname!r} ({answer[0]}); check the host "
            f"name in --mlload-host ({host})",
            host=host,
        )
    family, stype, proto, _, addr = answer[0][0]
    try:
        with socket.socket(family, stype, proto) as s:
            s.settimeout(timeout_s)
            s.connect(addr)
    except OSError as exc:
        raise HostUnreachable(
            f"cannot connect to {host} ({exc.strerror or exc}); is the server running and is "
            f"--mlload-host right?",
            host=host,
        ) from None
    return parts.hostname, port


def exclusive_load() -> contextlib.AbstractContextManager[None]:
    """One load run at a time per machine user: parallel load tests measure each other, so
    pytest-xdist workers (and any other caller) queue here instead of sharing the CPU."""
    path = Path(tempfile.gettempdir()) / f"pytest-mlload-{os.getuid()}.lock"
    return timed_lock(
        path,
        LOCK_TIMEOUT_S,
        lambda: LoadError(
            f"another load run held {path} for over {LOCK_TIMEOUT_S:g} s; is a stuck "
            f"pytest-mlload process still running?"
        ),
    )


def run_capacity(
    target: Any,
    *,
    host: str,
    settings: RunSettings | None = None,
    name: str = "",
    probe_users: int | None = None,
    hold_users: int | None = None,
    open_loop_rps: float | None = None,
    kind: str = "search",
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> CapacityResult:
    """Run one adaptive capacity search of ``target`` against ``host``.

    ``target``: a seed-style TaskSet, a Locust User class, or a ``{TaskSet: weight}`` mix
    (see :mod:`pytest_mlload.targets`). ``probe_users`` additionally measures P99 at that
    user count (the baseline's operating load); ``hold_users`` (check mode) skips the search
    and measures that user count directly (P99 there is the probe), with no open-loop phase
    unless ``settings.open_loop``; ``open_loop_rps`` sets the rate of the open-loop
    confirmation (default: ``open_loop_ratio`` x the measured capacity), which runs within
    what is left of ``max_duration_s`` after the search or is skipped with the reason in
    ``result.open_loop.skipped``.
    ``kind="spike"`` runs the spike job instead of the search (see ``settings.spike_*``).
    ``on_event`` receives every progress event.
    Raises :class:`ConfigError` for a bad target, :class:`HostUnreachable` when the host
    cannot be reached, :class:`LoadError` when the driver fails or overruns its time cap,
    :class:`UserCodeError` (a LoadError) within seconds when the target's own code raises.
    An inconclusive search is *returned* (``result.status``), not raised: gates decide.
    """
    settings = settings or RunSettings()
    spec = resolve_target(target)
    check_host(host)
    job = {
        "target": spec.to_dict(),
        "host": host.rstrip("/"),
        "settings": settings.to_dict(),
        "probe_users": probe_users,
        "hold_users": hold_users,
        "open_loop_rps": open_loop_rps,
        "kind": kind,
        "name": name or spec.label,
        "sys_path": [p for p in sys.path if p],
        "parent_pid": os.getpid(),  # the driver dies with this process (see driver)
    }
    run_s = settings.max_duration_s
    if kind == "spike":
        run_s = max(run_s, settings.spike_duration_s + 20.0)
    cap_s = run_s + STARTUP_GRACE_S + (JOIN_TIMEOUT_S if settings.distributed else 0.0)
    outcome, returncode, stderr_tail = _drive(job, cap_s, on_event)
    stderr_tail = scrub(stderr_tail, known_secrets(host))
    if isinstance(outcome, dict) and outcome.get("event") == "result":
        return replace(CapacityResult.from_dict(outcome["result"]), mix=spec.mix)
    raise _failure(outcome, spec.label, cap_s, returncode, stderr_tail)


def _drive(
    job: dict[str, Any], cap_s: float, on_event: Callable[[dict[str, Any]], None] | None
) -> tuple[dict[str, Any] | str, int | None, str]:
    """Run the driver child on ``job`` under the machine-wide load lock, stopped by PID.

    Returns its final event (or ``"timeout"`` / ``"exited"``), its exit code and the tail of
    its stderr.
    """
    env = dict(os.environ)
    env.pop("LOCUST_SKIP_MONKEY_PATCH", None)
    env.pop("LOCUST_SKIP_URLLIB3_PATCH", None)
    with exclusive_load(), tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest_mlload.load.driver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the child ourselves
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            outcome = _read_events(proc, cap_s, on_event)
        finally:
            stop_process(proc, group=True)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()  # else a ResourceWarning (unclosed file) in the caller
            err.seek(0)
            stderr_tail = err.read()[-2000:]
    return outcome, proc.returncode, stderr_tail


def _failure(
    outcome: dict[str, Any] | str, label: str, cap_s: float, returncode: int | None, tail: str
) -> Exception:
    """The exception for a driver run that produced no result."""
    if isinstance(outcome, dict) and outcome.get("kind") == "workers":
        return ConfigError(f"the distributed run of {label} could not start: {outcome['message']}")
    if isinstance(outcome, dict) and outcome.get("event") == "error":
        if outcome.get("kind") == "user_code":
            return _user_code_error(outcome, label)
        return ConfigError(f"the load driver could not load target {label}: {outcome['message']}")
    if outcome == "timeout":
        return LoadError(
            f"the load driver overran its time cap ({cap_s:g} s = max_duration_s + "
            f"{STARTUP_GRACE_S:g} s) and was killed; stderr tail:\n{tail}"
        )
    return LoadError(
        f"the load driver exited (code {returncode}) without a result; stderr tail:\n{tail}"
    )


def _user_code_error(event: dict[str, Any], label: str) -> UserCodeError:
    """The error for the driver's ``user_code`` event (already scrubbed of secrets)."""
    exc_type, detail = str(event.get("exc_type", "?")), str(event.get("detail", ""))
    where, location = str(event.get("where", "?")), str(event.get("location", "?"))
    trace = str(event.get("trace", "")).rstrip()
    return UserCodeError(
        f"the load test's own code raised {exc_type}: {detail} in {where} ({location}) "
        f"while running {label}, {event.get('count', 1)} time(s) before the run stopped; "
        f"no request measurement is valid: fix {where} (report a bad response with "
        f"response.failure(...) instead of raising)\n{trace}",
        exc_type=exc_type,
        detail=detail,
        location=location,
        where=where,
    )


def _read_events(
    proc: subprocess.Popen[str], cap_s: float, on_event: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any] | str:
    """Read marked JSON lines until a result/error event, EOF or the deadline."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + cap_s
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            if not sel.select(timeout=min(remaining, 1.0)):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return "exited"
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if not line.startswith(MARK):
                    continue  # user code printed something: not ours
                event = json.loads(line[len(MARK) :])
                if event.get("event") in ("result", "error"):
                    return dict(event)
                if on_event:
                    on_event(event)
