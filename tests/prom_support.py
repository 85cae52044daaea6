"""Test support for the Prometheus integration: real servers on loopback, no mocks.

* :class:`KnownExporter`: an in-process stdlib ``/metrics`` endpoint whose values are known
  exactly (a counter at a fixed rate, a gauge, two series of one metric).
* :class:`CannedPrometheus`: a stdlib HTTP server answering ``/api/v1/query`` with a canned
  status and body, recording the request paths (to test the client's error handling and
  URL building without a real Prometheus).
* :class:`LoadThreads`: a few keep-alive client threads looping on one path of the demo
  server, bounded by a deadline.
* ``prom_stack``: ONE real Prometheus per test session (its first scrape comes ~5 s after
  start), scraping a :class:`KnownExporter` and a :class:`~pytest_mlload.demo.DemoServerProcess`.
  Use it with ``pytest_plugins = ["prom_support"]`` in the test module, so the session has
  one fixture definition (importing the fixture into two modules would start two servers).

PYTEST_DONT_REWRITE: this module is imported before pytest registers it as a plugin.
"""

from __future__ import annotations

import contextlib
import http.client
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pytest_mlload.testing.demo import DemoServerProcess
from pytest_mlload.testing.prometheus import PrometheusProcess

KNOWN_RATE_PER_S = 50.0
KNOWN_GAUGE = 0.42


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


class _LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 with a free port, served from a daemon thread."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler)
        self._server.daemon_threads = True
        self._server.owner = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.address}"

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _ExporterHandler(_Quiet):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        owner: KnownExporter = self.server.owner  # type: ignore[attr-defined]
        body = owner.render().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class KnownExporter(_LoopbackServer):
    """``mlload_known_total`` grows at exactly :data:`KNOWN_RATE_PER_S` per second (computed
    from the monotonic clock at scrape time), ``mlload_known_gauge`` is :data:`KNOWN_GAUGE`,
    and ``mlload_known_pair`` has two series, ``member="a"`` = 1 and ``member="b"`` = 2."""

    handler = _ExporterHandler

    def __init__(self) -> None:
        super().__init__()
        self.started = time.monotonic()

    def render(self) -> str:
        """The exposition text at this instant."""
        total = KNOWN_RATE_PER_S * (time.monotonic() - self.started)
        return (
            "# TYPE mlload_known_total counter\n"
            f'mlload_known_total{{case="rate"}} {total:.6f}\n'
            "# TYPE mlload_known_gauge gauge\n"
            f'mlload_known_gauge{{case="gauge"}} {KNOWN_GAUGE}\n'
            "# TYPE mlload_known_pair gauge\n"
            'mlload_known_pair{member="b"} 2\n'
            'mlload_known_pair{member="a"} 1\n'
        )


@dataclass
class Canned:
    """One canned answer: HTTP status, body bytes and content type."""

    status: int = 200
    body: bytes = b'{"status":"success","data":{"resultType":"vector","result":[]}}'
    content_type: str = "application/json"


class _CannedHandler(_Quiet):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        owner: CannedPrometheus = self.server.owner  # type: ignore[attr-defined]
        owner.paths.append(self.path)
        answer = owner.answer
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)


class CannedPrometheus(_LoopbackServer):
    """Answers every GET with :attr:`answer`; :attr:`paths` records the request paths."""

    handler = _CannedHandler

    def __init__(self) -> None:
        super().__init__()
        self.answer = Canned()
        self.paths: list[str] = []


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoadThreads:
    """``threads`` closed-loop keep-alive clients on ``GET path``, stopped on exit or after
    ``deadline_s`` (whichever comes first). ``completed`` counts answered requests."""

    def __init__(
        self, url: str, path: str = "/work", *, threads: int = 4, deadline_s: float = 30.0
    ):
        self.host = url.split("://", 1)[1]
        self.path = path
        self.deadline = time.monotonic() + deadline_s
        self.stop = threading.Event()
        self.completed = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        conn = http.client.HTTPConnection(self.host, timeout=10)
        try:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                conn.request("GET", self.path)
                response = conn.getresponse()
                response.read()
                with self._lock:
                    self.completed += 1
        except (OSError, http.client.HTTPException) as exc:
            self.errors.append(repr(exc))
        finally:
            conn.close()

    def __enter__(self) -> LoadThreads:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=15)


@dataclass
class PromStack:
    """The session's real Prometheus and the two targets it scrapes."""

    prometheus: PrometheusProcess
    known: KnownExporter
    demo: DemoServerProcess

    def wait_for_scrape_after(self, epoch: float, deadline_s: float = 5.0) -> None:
        """Wait until the demo has been scraped after ``epoch``, so every sample up to
        ``epoch`` is in the TSDB before a query evaluated at ``epoch`` is run."""
        query = (
            f'max(timestamp(container_cpu_usage_seconds_total{{container="api"}})) > {epoch:.3f}'
        )
        self.prometheus.wait_for_series(query, deadline_s)


def prometheus_binary() -> str | None:
    """The Debian prometheus binary, if installed."""
    return shutil.which("prometheus") or (
        "/usr/bin/prometheus" if shutil.which("/usr/bin/prometheus") else None
    )


@pytest.fixture(scope="session")
def prom_stack() -> Iterator[PromStack]:
    """One real Prometheus for the session, already scraping both targets."""
    if prometheus_binary() is None:
        pytest.skip("no prometheus binary: install the Debian package prometheus")
    with contextlib.ExitStack() as stack:
        known = stack.enter_context(KnownExporter())
        demo = stack.enter_context(DemoServerProcess(slots=4, service_ms=20.0))
        prom = PrometheusProcess()
        prom.add_target(known.address, {"exporter": "known"})
        prom.add_target(demo.url.split("://", 1)[1], {"exporter": "demo"})
        stack.enter_context(prom)
        prom.wait_for_series('mlload_known_gauge{case="gauge"}', 20.0)
        prom.wait_for_series('container_cpu_usage_seconds_total{container="api"}', 20.0)
        yield PromStack(prom, known, demo)
