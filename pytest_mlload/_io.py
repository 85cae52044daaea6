"""Three rules the package keeps everywhere, written once: atomic file replacement, a file
lock with a deadline, and stopping a child process by its PID."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_write", "stop_process", "timed_lock"]


def atomic_write(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old or the new file.

    A temp file in the same directory (so the rename cannot cross file systems) is written,
    fsynced and renamed over ``path``; an existing file's mode is kept. Parent folders are
    created. On any failure the temp file is removed and ``path`` is untouched.
    """
    raw = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = None  # new file: 0o666 minus the umask, like any other file we create
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            if mode is not None:
                os.chmod(tmp, mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (best effort: not every platform opens directories).
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def timed_lock(path: Path, timeout_s: float, on_timeout: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` body.

    ``flock`` has no timeout of its own, so it is polled with a backoff (2 ms up to 50 ms)
    until ``timeout_s``; then ``on_timeout()`` is raised. The lock dies with its process, so
    a leftover lock file never blocks anyone.
    """
    if fcntl is None:  # pragma: no cover - Windows
        raise on_timeout()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise on_timeout() from None
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def stop_process(proc: subprocess.Popen[Any], *, group: bool = False, grace_s: float = 2.0) -> None:
    """Stop ``proc`` by its PID: SIGTERM, wait ``grace_s``, then SIGKILL; safe to call twice.

    ``group`` signals its whole process group (a child started with ``start_new_session``).
    """
    if proc.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)

    send(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait(max(grace_s, 5.0))
