"""Secrets in URLs (issue 11): one redaction helper, Prometheus auth actually sent, and a
KEDA YAML that never holds a credential."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from pytest_mlload._redact import (
    PROMETHEUS_TOKEN_ENV,
    credentials_of,
    known_secrets,
    redact_url,
    scrub,
    strip_credentials,
)
from pytest_mlload.errors import ConfigError
from pytest_mlload.hpa.prometheus import PrometheusClient
from pytest_mlload.hpa.recommend import HpaReport, TriggerResult

SECRET = "s3cr3t-pw"

# -- row 6: one redaction helper ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("http://user:pass@h/", "http://user:***@h/"),
        ("https://user:p%40ss@prom:9090/select/0", "https://user:***@prom:9090/select/0"),
        ("http://TOKEN123@h:1", "http://***@h:1"),
        ("http://h/api?token=abc&q=1", "http://h/api?token=***&q=1"),
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_scrub_masks_url_credentials_and_known_secrets_in_any_text() -> None:
    url = f"http://admin:{SECRET}@prom:9090"
    text = f"GET {url}/api/v1/query failed; password was {SECRET}\nToken: tok-42"
    out = scrub(text, known_secrets(url, env={PROMETHEUS_TOKEN_ENV: "tok-42"}))
    assert SECRET not in out and "tok-42" not in out
    assert "http://admin:***@prom:9090/api/v1/query" in out


def test_credentials_of_and_strip_credentials() -> None:
    assert credentials_of("http://u%3Ax:p%40ss@h/") == ("u:x", "p@ss")
    assert credentials_of("http://h/") is None
    assert strip_credentials("http://u:p@h:1/x?y=1") == "http://h:1/x?y=1"


# -- row 6: the Prometheus client sends the credentials, never shows them -------------------


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.server.seen.append(self.headers.get("Authorization"))  # type: ignore[attr-defined]
        body = json.dumps(
            {
                "status": "success",
                "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "7"]}]},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


@pytest.fixture
def recorder() -> Iterator[ThreadingHTTPServer]:
    """A Prometheus stand-in on 127.0.0.1 that records each request's Authorization header."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_prometheus_basic_auth_from_url_credentials(
    recorder: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PROMETHEUS_TOKEN_ENV, raising=False)
    port = recorder.server_address[1]
    client = PrometheusClient(f"http://admin:{SECRET}@127.0.0.1:{port}")
    outcome = client.instant("up", 1.0)
    assert outcome.value == 7.0 and outcome.warning is None
    expected = "Basic " + base64.b64encode(f"admin:{SECRET}".encode()).decode()
    assert recorder.seen == [expected]  # type: ignore[attr-defined]
    assert client.base_url == f"http://admin:***@127.0.0.1:{port}"
    assert SECRET not in repr(client) and SECRET not in client.query_url("up", 1.0)


def test_prometheus_bearer_token_from_environment(
    recorder: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROMETHEUS_TOKEN_ENV, "tok-" + SECRET)
    client = PrometheusClient(f"http://127.0.0.1:{recorder.server_address[1]}")
    assert client.instant("up", 1.0).value == 7.0
    assert recorder.seen == [f"Bearer tok-{SECRET}"]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="give one of them") as info:
        PrometheusClient(f"http://u:{SECRET}@127.0.0.1:1")
    assert SECRET not in str(info.value)


def test_prometheus_warnings_never_show_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROMETHEUS_TOKEN_ENV, raising=False)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outcome = PrometheusClient(f"http://admin:{SECRET}@127.0.0.1:{port}", timeout_s=2).instant(
        "up", 1.0
    )
    assert outcome.value is None and outcome.warning is not None
    assert "unreachable at http://admin:***@127.0.0.1" in outcome.warning
    assert SECRET not in outcome.warning
    with pytest.raises(ConfigError) as info:
        PrometheusClient(f"ftp://admin:{SECRET}@h")
    assert SECRET not in str(info.value)


# -- row 6: the KEDA YAML never holds a credential ----------------------------------------


def _report(url: str) -> HpaReport:
    trigger = TriggerResult.from_dict(
        {
            "component": "api",
            "name": "cpu",
            "unit": "m",
            "metric_type": "AverageValue",
            "query": "q",
            "keda_query": "sum(rate(x[2m]))",
            "note": "",
            "current_threshold": 1000.0,
            "recommended": 640.0,
            "is_binding": True,
            "priority": "primary",
        }
    )
    return HpaReport(
        prometheus_url=url,
        window_start_epoch=1.0,
        window_end_epoch=20.0,
        window_s=19,
        api_replicas=1,
        hpa_margin=0.8,
        bottleneck_tier="api",
        saturated_tier="api",
        tier_ratios={},
        triggers=(trigger,),
    )


def test_keda_yaml_has_no_secret_and_points_at_a_trigger_authentication(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(PROMETHEUS_TOKEN_ENV, raising=False)
    text = _report(f"http://admin:{SECRET}@prom:9090").keda_yaml()
    assert SECRET not in text
    trigger = yaml.safe_load(text)["triggers"][0]
    assert trigger["metadata"]["serverAddress"] == "http://prom:9090"
    assert trigger["metadata"]["authModes"] == "basic"
    assert trigger["authenticationRef"] == {"name": "mlload-prometheus-auth"}
    assert "TriggerAuthentication named mlload-prometheus-auth" in text
    plain = yaml.safe_load(_report("http://prom:9090").keda_yaml())["triggers"][0]
    assert "authenticationRef" not in plain and "authModes" not in plain["metadata"]


def test_keda_yaml_with_a_bearer_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PROMETHEUS_TOKEN_ENV, SECRET)
    text = _report("http://prom:9090").keda_yaml()
    assert SECRET not in text
    assert yaml.safe_load(text)["triggers"][0]["metadata"]["authModes"] == "bearer"
