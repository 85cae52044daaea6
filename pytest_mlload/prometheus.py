"""A small Prometheus HTTP API client, and a local Prometheus process for tests.

Only the standard library is used (``urllib``), so reading Prometheus adds no dependency.

:class:`PrometheusClient` runs *instant* queries with the ``time=`` parameter rather than
the PromQL ``@`` modifier, so it works against VictoriaMetrics as well; a tenant path
prefix in the base URL (``http://vmselect:8481/select/0/prometheus``) is kept as is.
A query never raises for a bad answer: every failure becomes a distinct ``warning`` on the
returned :class:`QueryOutcome` (unreachable, HTTP error, malformed answer, non-success
status, no series, several series, non-numeric value), so one broken trigger cannot crash
a run or hide the others.

:class:`PrometheusProcess` starts the Debian ``prometheus`` binary as a plain child process
on a free loopback port with a temporary config and data directory, scraping every second
and discovering targets from a JSON file (``file_sd_configs``) so targets can be added while
it runs. Prometheus 2.x waits ~5 s before its first scrape, so start one per test session.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import ConfigError, LoadError

__all__ = [
    "NO_SERIES",
    "InstantQuerier",
    "PrometheusClient",
    "PrometheusProcess",
    "QueryOutcome",
    "no_series_warning",
    "unreachable_warning",
]

NO_SERIES = "no series: check the selector and that the target is scraped"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """The answer to one instant query.

    ``value`` is ``None`` whenever no usable number came back; ``warning`` then says why
    (it may also be set next to a value, e.g. when several series came back).
    ``series`` is the number of series in the answer (1 for a scalar result).
    """

    query: str
    value: float | None
    series: int = 0
    warning: str | None = None


class InstantQuerier(Protocol):
    """What the HPA logic needs from Prometheus: one instant query evaluated at a time."""

    def instant(self, query: str, at_epoch: float) -> QueryOutcome:
        """Evaluate ``query`` at ``at_epoch`` (Unix seconds)."""
        ...


def _with_query(problem: str, query: str) -> str:
    return f"{problem} [query: {query}]"


def no_series_warning(query: str) -> str:
    """The warning for an empty answer (shared by the real client and the fakes)."""
    return _with_query(NO_SERIES, query)


def unreachable_warning(url: str, reason: str, query: str) -> str:
    """The warning for a Prometheus that cannot be reached at ``url``."""
    return _with_query(f"Prometheus unreachable at {url}: {reason}", query)


def _check_base_url(base_url: str) -> str:
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(
            f"prometheus_url={base_url!r} is invalid: want an http(s) URL such as "
            "http://prometheus:9090 (with a tenant prefix for VictoriaMetrics: "
            "http://vmselect:8481/select/0/prometheus)"
        )
    return base_url.rstrip("/")


def _labels_key(metric: Any) -> str:
    if not isinstance(metric, Mapping):
        return ""
    return ",".join(f"{k}={metric[k]}" for k in sorted(metric))


class PrometheusClient:
    """Instant queries against the Prometheus HTTP API (``GET /api/v1/query``).

    ``base_url`` is everything before ``/api/v1``; a path prefix is kept (VictoriaMetrics
    tenants). ``timeout_s`` bounds each request. Queries never raise for a bad answer; see
    :meth:`instant`.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ConfigError(f"timeout_s={timeout_s!r} is invalid: want seconds > 0")
        self.base_url = _check_base_url(base_url)
        self.timeout_s = float(timeout_s)
        host = urllib.parse.urlsplit(self.base_url).hostname
        # a proxy from the environment must not intercept a loopback Prometheus
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"PrometheusClient({self.base_url!r}, timeout_s={self.timeout_s})"

    def query_url(self, query: str, at_epoch: float) -> str:
        """The exact URL :meth:`instant` requests."""
        params = urllib.parse.urlencode({"query": query, "time": f"{at_epoch:.3f}"})
        return f"{self.base_url}/api/v1/query?{params}"

    def instant(self, query: str, at_epoch: float) -> QueryOutcome:
        """Evaluate ``query`` at ``at_epoch``; a failure is a warning, never an exception.

        Several series: the value of the first one in label order is used (deterministic)
        and the warning says how many came back, since the HPA queries aggregate to one.
        """
        url = self.query_url(query, at_epoch)
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            with contextlib.suppress(Exception):
                payload = json.loads(exc.read())
                detail = f": {payload.get('errorType', '?')}: {payload.get('error', '?')}"
            problem = f"Prometheus at {self.base_url} answered HTTP {exc.code}{detail}"
            return QueryOutcome(query, None, 0, _with_query(problem, query))
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return QueryOutcome(
                query, None, 0, unreachable_warning(self.base_url, str(reason), query)
            )
        return self._parse(query, body)

    def _parse(self, query: str, body: bytes) -> QueryOutcome:
        def bad(problem: str, series: int = 0) -> QueryOutcome:
            return QueryOutcome(query, None, series, _with_query(problem, query))

        try:
            payload = json.loads(body)
        except ValueError:
            snippet = body[:80].decode("utf-8", "replace")
            return bad(f"Prometheus at {self.base_url} sent a non-JSON answer: {snippet!r}")
        if not isinstance(payload, dict):
            return bad(f"Prometheus at {self.base_url} sent a malformed answer (not an object)")
        if payload.get("status") != "success":
            return bad(
                f"Prometheus at {self.base_url} answered status={payload.get('status')!r}: "
                f"{payload.get('errorType', '?')}: {payload.get('error', '?')}"
            )
        data = payload.get("data")
        if not isinstance(data, dict):
            return bad(f"Prometheus at {self.base_url} sent a malformed answer (no data)")
        result_type, result = data.get("resultType"), data.get("result")
        extra = [f"Prometheus warned: {w}" for w in payload.get("warnings") or []]
        if result_type == "scalar":
            series, raw = 1, result
        elif result_type == "vector" and isinstance(result, list):
            if not result:
                return QueryOutcome(query, None, 0, no_series_warning(query))
            series = len(result)
            ordered = sorted(
                result, key=lambda s: _labels_key(s.get("metric") if isinstance(s, dict) else None)
            )
            first = ordered[0]
            raw = first.get("value") if isinstance(first, dict) else None
            if series > 1:
                extra.append(
                    f"{series} series came back where one was expected (aggregate the query "
                    f"with avg()/max()); used the first by labels "
                    f"{{{_labels_key(first.get('metric') if isinstance(first, dict) else None)}}}"
                )
        else:
            return bad(
                f"Prometheus at {self.base_url} answered resultType={result_type!r}; an "
                "instant query must give a vector or a scalar"
            )
        try:
            value = float(raw[1])  # type: ignore[index]
        except (TypeError, ValueError, IndexError, KeyError):
            return bad(f"non-numeric value {raw!r} in the answer", series)
        if not math.isfinite(value):
            return bad(
                f"value is {raw[1]} (a ratio of zero rates? no traffic in the window?)",  # type: ignore[index]
                series,
            )
        warning = _with_query("; ".join(extra), query) if extra else None
        return QueryOutcome(query, value, series, warning)


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
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

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
        path = self._dir / "targets.json"
        tmp = self._dir / "targets.json.tmp"
        tmp.write_text(json.dumps(self._groups))
        os.replace(tmp, path)  # atomic: Prometheus never reads half a file

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
