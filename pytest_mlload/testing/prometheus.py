""":class:`PrometheusProcess` starts the Debian ``prometheus`` binary as a plain child process
on a free loopback port with a temporary config and data directory, scraping every second
and discovering targets from a JSON file (``file_sd_configs``) so targets can be added while
it runs. Prometheus 2.x waits ~5 s before its first scrape, so start one per test session.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mlload._io import atomic_write, stop_process
from pytest_mlload.errors import ConfigError, LoadError
from pytest_mlload.hpa.prometheus import PrometheusClient, QueryOutcome

__all__ = ["PrometheusProcess"]

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _find_binary(binary: str | None) -> str:
    candidates = [binary] if binary else ["prometheus", "/usr/bin/prometheus"]
    for candidate in candidates:
        found = shutil.which(candidate) if candidate else None
        if found:
            return found
    raise ConfigError(
        f"the prometheus binary was not found ({', '.join(c for c in candidates if c)}): "
        "install the Debian package prometheus (apt-get install prometheus) or pass binary="
    )


class PrometheusProcess:
    """A local Prometheus for tests and local runs, controlled by PID.

    Listens on ``127.0.0.1`` only (never ``0.0.0.0``), on a free port unless ``port`` is
    given; config, targets file and TSDB live in a temporary directory removed by
    :meth:`stop`. Use as a context manager or call :meth:`start` / :meth:`stop`.
    Targets added with :meth:`add_target` are picked up while it runs (file discovery,
    written by atomic rename); the first sample of a new target is queryable after ~3-6 s.
    """

    def __init__(
        self,
        *,
        binary: str | None = None,
        port: int | None = None,
        scrape_interval_s: float = 1.0,
        start_timeout_s: float = 15.0,
    ) -> None:
        self.binary = _find_binary(binary)
        if not (isinstance(scrape_interval_s, int | float) and scrape_interval_s > 0):
            raise ConfigError(f"scrape_interval_s={scrape_interval_s!r} is invalid: want > 0")
        self.scrape_interval_s = float(scrape_interval_s)
        self.start_timeout_s = float(start_timeout_s)
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._groups: list[dict[str, Any]] = []

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the running server (``http://127.0.0.1:PORT``)."""
        if self._proc is None or self._port is None:
            raise LoadError("PrometheusProcess is not running: call start() first")
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int | None:
        """PID of the child process, or ``None`` when stopped."""
        return self._proc.pid if self._proc is not None else None

    def client(self, *, timeout_s: float = 5.0) -> PrometheusClient:
        """A :class:`PrometheusClient` for this server."""
        return PrometheusClient(self.url, timeout_s=timeout_s)

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> PrometheusProcess:
        """Start the server and wait (bounded) until ``/-/ready`` answers 200."""
        if self._proc is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="mlload-prometheus-"))
        self._write_targets()
        interval = f"{max(int(round(self.scrape_interval_s * 1000)), 1)}ms"
        config = (
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  scrape_timeout: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            "scrape_configs:\n"
            "  - job_name: mlload\n"
            # exporter labels (pod, container, application) win over target labels
            "    honor_labels: true\n"
            "    file_sd_configs:\n"
            f"      - files: ['{self._dir / 'targets.json'}']\n"
            "        refresh_interval: 1s\n"
        )
        (self._dir / "prometheus.yml").write_text(config)
        attempts = 1 if self._port is not None else 3
        last_error = ""
        for _ in range(attempts):
            port = self._port if self._port is not None else _free_loopback_port()
            ok, last_error = self._launch(port)
            if ok:
                self._port = port
                return self
        self._cleanup_dir()
        raise LoadError(f"Prometheus did not start: {last_error}")

    def _launch(self, port: int) -> tuple[bool, str]:
        assert self._dir is not None
        log = open(self._dir / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self._dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self._dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
            )
        finally:
            log.close()
        self._proc, self._port = proc, port
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{port}/-/ready"
                with _NO_PROXY.open(url, timeout=1.0) as response:
                    if response.status == 200:
                        return True, ""
            time.sleep(0.05)
        self._stop_process()
        return False, f"exit code {proc.returncode}; log tail: {self.log_tail()!r}"

    def log_tail(self, chars: int = 800) -> str:
        """The end of the server's log (for error messages)."""
        if self._dir is None:
            return ""
        with contextlib.suppress(OSError):
            return (self._dir / "prometheus.log").read_text(errors="replace")[-chars:]
        return ""

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, grace_s=10.0)

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, wait, SIGKILL) and remove its directory."""
        self._stop_process()
        self._cleanup_dir()
        self._groups = []

    # -- targets -------------------------------------------------------------------------

    def _write_targets(self) -> None:
        assert self._dir is not None
        # atomic: Prometheus never reads half a file
        atomic_write(self._dir / "targets.json", json.dumps(self._groups))

    def add_target(self, address: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape ``address`` (``"127.0.0.1:PORT"``, path ``/metrics``) from now on."""
        host = address.rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost", "[::1]"):
            raise ConfigError(f"target {address!r} is not on loopback; use 127.0.0.1:PORT")
        self._groups.append({"targets": [address], "labels": dict(labels or {})})
        if self._dir is not None:
            self._write_targets()

    def remove_target(self, address: str) -> None:
        """Stop scraping ``address``."""
        self._groups = [g for g in self._groups if address not in g["targets"]]
        if self._dir is not None:
            self._write_targets()

    def wait_for_series(self, query: str, deadline_s: float = 15.0) -> QueryOutcome:
        """Poll ``query`` at the current time until it has a value, for at most ``deadline_s``.

        This is the one legitimate poll: Prometheus ingests on its own schedule. Raises
        :class:`LoadError` with the last warning when the deadline passes.
        """
        client = self.client(timeout_s=2.0)
        deadline = time.monotonic() + deadline_s
        outcome = client.instant(query, time.time())
        while outcome.value is None and time.monotonic() < deadline:
            time.sleep(0.2)
            outcome = client.instant(query, time.time())
        if outcome.value is None:
            raise LoadError(
                f"no value for {query!r} within {deadline_s:g} s from {self.url}: {outcome.warning}"
            )
        return outcome
