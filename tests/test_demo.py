"""The bundled demo server: real child processes on 127.0.0.1, real numbers.

Every server is a :class:`DemoServerProcess` in a ``with`` block, so it is stopped by PID
even when an assertion fails. Loops are bounded by a request count and a time cap.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_mlload.errors import ConfigError
from pytest_mlload.testing.demo import (
    DemoKnobs,
    DemoServerProcess,
    capacity_rps,
    mix_capacity_rps,
    stalled_finish_s,
)

API = {"container": "api", "pod": "demo-api-0", "namespace": "demo"}
TRITON = {"container": "triton", "pod": "demo-triton-modelverse-0", "namespace": "demo"}
APP = {"application": "demo-triton-modelverse", "pod": "demo-triton-modelverse-0"}
GPU = {**APP, "gpu_uuid": "GPU-demo-0"}
COUNTERS = (
    "nv_inference_request_duration_us_microseconds_total",
    "nv_inference_request_duration_us",
    "nv_inference_count_requests_total",
    "nv_inference_count",
)


# --------------------------------------------------------------------------- helpers


class Client:
    """One keep-alive HTTP/1.1 connection to a demo server."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)

    def request(
        self, method: str, path: str, body: Any = None, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, headers, data = self.request(method, path, body)
        assert headers["Content-Type"] == "application/json"
        return status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def client_for() -> Iterator[Any]:
    clients: list[Client] = []

    def make(server: DemoServerProcess) -> Client:
        clients.append(Client(server.url))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServerProcess]:
    """A shared server with short service times, for tests that do not change knobs."""
    with DemoServerProcess(
        slots=4, service_ms=5, classify_ms=5, embed_ms=6, infer_ms=7, seed=1
    ) as srv:
        yield srv


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> tuple[Metrics, dict[str, str]]:
    """Samples keyed by (name, label set) and the declared TYPE of each family."""
    samples: Metrics = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"unparsable exposition line {line!r}"
        name, label_text, value = match.groups()
        labels = _LABEL.findall(label_text or "")
        assert ",".join(f'{k}="{v}"' for k, v in labels) == (label_text or ""), line
        key = (name, frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return samples, types


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    key = (name, frozenset(labels.items()))
    assert key in metrics, f"missing {name}{labels}; have {sorted(k for k, _ in metrics)}"
    return metrics[key]


def scrape(srv: DemoServerProcess) -> Metrics:
    return parse_metrics(srv.metrics_text())[0]


def timed_get(client: Client, path: str) -> float:
    start = time.perf_counter()
    status, _, _ = client.request("GET", path)
    assert status == 200
    return time.perf_counter() - start


def raw_exchange(url: str, payload: bytes, timeout_s: float = 5.0) -> bytes:
    """Send bytes on a fresh socket and read until the server closes it."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        chunks = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise AssertionError("server did not close the connection")
    return b"".join(chunks)


# --------------------------------------------------------------------------- pure parts


def test_capacity_formulas() -> None:
    assert capacity_rps(slots=4, service_ms=20) == pytest.approx(200.0)
    assert capacity_rps(slots=4, service_ms=20, slowdown=1.25) == pytest.approx(160.0)
    # 3:1 mix of 20 ms and 40 ms: mean service 25 ms -> 4 / 0.025 s.
    assert mix_capacity_rps(slots=4, mix=[(3, 20.0), (1, 40.0)]) == pytest.approx(160.0)
    with pytest.raises(ConfigError, match="slots"):
        capacity_rps(slots=0, service_ms=20)
    with pytest.raises(ConfigError, match="mix"):
        mix_capacity_rps(slots=4, mix=[])


def test_stalled_finish_time() -> None:
    def finish(start: float, work: float) -> float:
        return stalled_finish_s(start, work, epoch_s=0.0, every_s=1.0, stall_s=0.25)

    assert stalled_finish_s(0.5, 0.1, epoch_s=0.0, every_s=0.0, stall_s=0.0) == 0.5 + 0.1
    assert finish(0.5, 0.1) == pytest.approx(0.6)  # before the first stall at t=1
    assert finish(0.95, 0.1) == pytest.approx(1.30)  # 0.05 s, frozen 0.25 s, 0.05 s
    assert finish(1.1, 0.1) == pytest.approx(1.35)  # arrives inside the stall
    assert finish(0.9, 1.0) == pytest.approx(2.40)  # crosses the stalls at 1 and 2


def test_knobs_validate_and_reject_unknown_names() -> None:
    assert DemoKnobs().updated({"slowdown": "1.5"}).slowdown == 1.5
    with pytest.raises(ConfigError, match="unknown knob.*bogus"):
        DemoKnobs().updated({"bogus": 1})
    with pytest.raises(ConfigError, match="error_ratio"):
        DemoKnobs(error_ratio=1.5)
    with pytest.raises(ConfigError, match="stall_s < stall_every_s"):
        DemoKnobs(stall_every_s=1.0, stall_s=1.0)
    with pytest.raises(ConfigError, match="must be a number"):
        DemoKnobs().updated({"cpu_ms": True})
    with pytest.raises(ConfigError, match="unknown demo server setting"):
        DemoServerProcess(bogus=1)
    with pytest.raises(ConfigError, match="slowdown"):
        DemoServerProcess(slowdown=0)


# --------------------------------------------------------------------------- endpoints


def test_url_line_gives_a_live_loopback_server(server: DemoServerProcess) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
    os.kill(server.pid, 0)  # raises if the child is gone
    knobs = DemoKnobs(service_ms=5, classify_ms=5, embed_ms=6, infer_ms=7)
    assert server.config() == {**knobs.as_dict(), "slots": 4}


def test_classify(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    status, body = client.json("POST", "/v1/classify", {"inputs": [[0.1] * 100, [2.0] * 100]})
    assert status == 200
    assert set(body) == {"labels", "scores"}
    assert len(body["labels"]) == len(body["scores"]) == 2
    assert all(re.fullmatch(r"class_\d", label) for label in body["labels"])
    assert all(0.1 <= score <= 1.0 for score in body["scores"])  # top of 10 classes
    # No body at all, and an empty object, use the default input.
    _, default = client.json("POST", "/v1/classify")
    assert client.json("POST", "/v1/classify", {}) == (200, default)
    assert len(default["labels"]) == 1
    # Rows of any (equal) width are padded or cut to the model's width.
    assert len(client.json("POST", "/v1/classify", {"inputs": [[1, 2, 3]]})[1]["labels"]) == 1
    status, error = client.json("POST", "/v1/classify", {"inputs": [[1, 2], [3]]})
    assert status == 400 and "equal-length" in error["error"]


def test_embed_returns_unit_vectors(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    status, body = client.json("POST", "/v1/embed", {"inputs": ["hello", "world", "hello"]})
    assert status == 200
    vectors = body["embeddings"]
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1 and len(vectors[0]) >= 8
    for vector in vectors:
        assert sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-4)
    assert vectors[0] == vectors[2] != vectors[1]
    status, body = client.json("POST", "/v1/embed", {"inputs": [[0.5, 0.25]]})
    assert status == 200 and len(body["embeddings"]) == 1


def test_kserve_v2_infer(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    request = {
        "id": "req-1",
        "inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}],
    }
    status, body = client.json("POST", "/v2/models/resnet-50/infer", request)
    assert status == 200
    assert body["model_name"] == "resnet-50" and body["id"] == "req-1"
    probs, label = body["outputs"]
    assert set(probs) == {"name", "shape", "datatype", "data"}
    assert probs["datatype"] == "FP32" and probs["shape"][0] == 2
    assert len(probs["data"]) == probs["shape"][0] * probs["shape"][1]
    width = probs["shape"][1]
    for row in (probs["data"][:width], probs["data"][width:]):
        assert sum(row) == pytest.approx(1.0, abs=1e-4)
    assert label["shape"] == [2] and len(label["data"]) == 2
    bad_shape = {"inputs": [{"name": "x", "shape": [4], "datatype": "FP32", "data": [1, 2]}]}
    assert client.json("POST", "/v2/models/resnet-50/infer", bad_shape)[0] == 400
    bad_type = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}
    assert client.json("POST", "/v2/models/resnet-50/infer", bad_type)[0] == 400


def test_work_fast_health_and_json_errors(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    assert client.json("GET", "/work")[1]["status"] == "ok"
    assert client.json("POST", "/work", {"anything": 1})[0] == 200
    assert client.request("GET", "/fast")[::2] == (200, b"ok")
    assert client.json("GET", "/healthz") == (200, {"status": "ok"})
    status, body = client.json("GET", "/no/such/path")
    assert status == 404 and "no route" in body["error"]
    status, headers, data = client.request("GET", "/v1/classify")
    assert status == 405 and headers["Allow"] == "POST" and json.loads(data)["status"] == 405
    status, _, data = client.request("POST", "/v1/classify", raw=b"{not json")
    assert status == 400 and "not valid JSON" in json.loads(data)["error"]


def test_keep_alive_reuses_one_connection(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    client.request("GET", "/fast")
    sock = client.conn.sock
    for _ in range(5):
        status, headers, _ = client.request("GET", "/healthz")
        assert status == 200 and headers["Connection"] == "keep-alive"
    assert client.conn.sock is sock


def test_connection_close_is_honoured(server: DemoServerProcess) -> None:
    reply = raw_exchange(server.url, b"GET /fast HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\nok")


def test_malformed_request_line_is_400_and_closes(server: DemoServerProcess) -> None:
    reply = raw_exchange(server.url, b"THIS IS NOT HTTP\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b'"malformed request line"' in reply


def test_body_split_across_packets_is_read_whole(server: DemoServerProcess) -> None:
    body = json.dumps({"inputs": [[1.0, 2.0]]}).encode()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(head + body[:5])
        sock.sendall(body[5:])
        reply = sock.makefile("rb").read()
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"labels":["class_' in reply


# --------------------------------------------------------------------------- metrics


def test_metrics_series_labels_and_growth(server: DemoServerProcess, client_for: Any) -> None:
    client = client_for(server)
    client.json("POST", "/v2/models/resnet/infer")  # make the KServe model known
    before_text = server.metrics_text()
    before, types = parse_metrics(before_text)
    for name in COUNTERS:
        assert types[name] == "counter"
    assert types["container_cpu_usage_seconds_total"] == "counter"
    assert types["nv_gpu_utilization_ratio"] == "gauge"

    sent = {"classify": 3, "embed": 2, "resnet": 1, "work": 2}
    for _ in range(3):
        client.json("POST", "/v1/classify", {"inputs": [[1.0, 2.0]]})
    for _ in range(2):
        client.json("POST", "/v1/embed", {"inputs": ["a"]})
        client.json("GET", "/work")
    client.json("POST", "/v2/models/resnet/infer")
    after = scrape(server)

    service_ms = {"classify": 5, "embed": 6, "resnet": 7, "work": 5}
    for model, n in sent.items():
        labels = {**APP, "model": model}
        # The Triton names and the *_total names carry the same values.
        for name in COUNTERS:
            twin = COUNTERS[0] if "duration" in name else COUNTERS[2]
            assert sample(after, name, labels) == sample(after, twin, labels)

        def delta(name: str, labels: dict[str, str] = labels) -> float:
            return sample(after, name, labels) - sample(before, name, labels)

        assert delta("nv_inference_count") == n
        slot_us = delta("nv_inference_request_duration_us")
        # Deadline padding makes the time in a slot the service time, to the microsecond.
        assert slot_us == pytest.approx(n * service_ms[model] * 1000, rel=0.02)

    def answered(endpoint: str) -> float:
        key = (
            "mlload_demo_requests_total",
            frozenset({"endpoint": endpoint, "code": "200"}.items()),
        )
        return after[key] - before.get(key, 0.0)

    assert answered("/v1/classify") == 3
    assert answered("/v2/models/{model}/infer") == 1
    api_cpu = sample(after, "container_cpu_usage_seconds_total", API)
    triton_cpu = sample(after, "container_cpu_usage_seconds_total", TRITON)
    assert api_cpu > sample(before, "container_cpu_usage_seconds_total", API)
    assert triton_cpu > sample(before, "container_cpu_usage_seconds_total", TRITON)
    assert 0 < triton_cpu < api_cpu
    assert 0.0 <= sample(after, "nv_gpu_utilization_ratio", GPU) <= 1.0


def test_admin_stats_agree_with_metrics(server: DemoServerProcess, client_for: Any) -> None:
    client_for(server).json("POST", "/v1/classify")
    stats = server.stats()
    metrics = scrape(server)
    keys = "process_cpu_s triton_cpu_s busy_slot_s slots uptime_s requests inference_us"
    assert set(stats) >= set(keys.split())
    assert stats["slots"] == 4 and stats["uptime_s"] > 0
    for model, count in stats["requests"].items():
        labels = {**APP, "model": model}
        assert sample(metrics, "nv_inference_count_requests_total", labels) == count
        assert sample(
            metrics, "nv_inference_request_duration_us_microseconds_total", labels
        ) == pytest.approx(stats["inference_us"][model])
    assert sample(metrics, "container_cpu_usage_seconds_total", TRITON) == stats["triton_cpu_s"]
    api_cpu = sample(metrics, "container_cpu_usage_seconds_total", API)
    assert stats["process_cpu_s"] <= api_cpu < stats["process_cpu_s"] + 0.5
    # Busy-slot time includes every successful request's slot time.
    assert stats["busy_slot_s"] >= sum(stats["inference_us"].values()) / 1e6 - 1e-6


def test_unknown_knob_is_rejected_at_runtime(server: DemoServerProcess) -> None:
    with pytest.raises(ConfigError, match="unknown knob.*bogus"):
        server.set_config(bogus=1)
    with pytest.raises(ConfigError, match="error_ratio"):
        server.set_config(error_ratio=3)
    assert server.config()["error_ratio"] == 0.0


# --------------------------------------------------------------------------- knobs


def test_slowdown_doubles_latency(client_for: Any) -> None:
    with DemoServerProcess(slots=4, service_ms=20) as srv:
        client = client_for(srv)
        timed_get(client, "/work")  # connect outside the measurement
        base = statistics.median(timed_get(client, "/work") for _ in range(5))
        assert srv.set_config(slowdown=2.0)["slowdown"] == 2.0
        slow = statistics.median(timed_get(client, "/work") for _ in range(5))
    assert 0.020 <= base < 0.035  # deadline padding: never under the service time
    assert 0.040 <= slow < 0.065
    assert 1.7 < slow / base < 2.3


def test_error_ratio(client_for: Any) -> None:
    with DemoServerProcess(slots=4, service_ms=2, classify_ms=2, seed=7) as srv:
        client = client_for(srv)
        srv.set_config(error_ratio=1.0)
        status, body = client.json("GET", "/work")
        assert status == 500 and "injected error" in body["error"]
        assert client.json("POST", "/v1/classify")[0] == 500
        assert client.request("GET", "/fast")[0] == 200  # /fast bypasses the slots
        srv.set_config(error_ratio=0.5)
        codes = [client.request("GET", "/work")[0] for _ in range(60)]
        assert set(codes) == {200, 500}
        assert 15 <= codes.count(500) <= 45
        srv.set_config(error_ratio=0.0)
        assert client.json("GET", "/work")[0] == 200
        metrics = scrape(srv)
    failures = sample(metrics, "nv_inference_request_failure", {**APP, "model": "work"})
    successes = sample(metrics, "nv_inference_count", {**APP, "model": "work"})
    assert failures == 1 + codes.count(500)
    assert successes == codes.count(200) + 1


def test_throughput_matches_slots_over_service_time() -> None:
    slots, service_ms, clients = 4, 20, 8
    expected_rps = capacity_rps(slots=slots, service_ms=service_ms)
    warmup_s, window_s = 0.25, 2.0
    with DemoServerProcess(slots=slots, service_ms=service_ms) as srv:
        done: list[list[float]] = [[] for _ in range(clients)]
        errors: list[BaseException] = []
        scrape(srv)  # the utilisation gauge covers the time since the previous scrape
        t0 = time.monotonic()
        stop_at = t0 + warmup_s + window_s

        def worker(stamps: list[float]) -> None:
            client = Client(srv.url)
            try:
                while len(stamps) < 1000 and time.monotonic() < stop_at:
                    status, _, _ = client.request("GET", "/work")
                    assert status == 200
                    stamps.append(time.monotonic())
            except BaseException as exc:  # surfaced in the main thread below
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(d,), daemon=True) for d in done]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=warmup_s + window_s + 5)
        assert not any(t.is_alive() for t in threads) and not errors, errors
        metrics = scrape(srv)
    in_window = sum(1 for d in done for t in d if t0 + warmup_s <= t < t0 + warmup_s + window_s)
    rps = in_window / window_s
    assert abs(rps - expected_rps) / expected_rps <= 0.15, f"{rps:.1f} req/s vs {expected_rps}"
    # Saturated from start to end: the gauge sees (almost) all slots busy.
    assert sample(metrics, "nv_gpu_utilization_ratio", GPU) >= 0.85


def closed_loop(url: str, clients: int, window_s: float, warmup_s: float = 0.3) -> dict[str, Any]:
    """``clients`` threads, each one keep-alive connection sending GET /work back to back, for
    ``warmup_s + window_s`` (and at most 3000 requests each). Returns req/s of successes and
    the error ratio in the window, and the status codes seen."""
    records: list[list[tuple[float, int]]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    t0 = time.monotonic()
    stop_at = t0 + warmup_s + window_s

    def worker(out: list[tuple[float, int]]) -> None:
        client = Client(url)
        try:
            while len(out) < 3000 and time.monotonic() < stop_at:
                status, _, _ = client.request("GET", "/work")
                out.append((time.monotonic(), status))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=warmup_s + window_s + 10)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    seen = [c for r in records for t, c in r if t0 + warmup_s <= t < stop_at]
    assert seen, "no request completed in the window"
    ok = seen.count(200)
    return {
        "rps": ok / window_s,
        "error_ratio": 1 - ok / len(seen),
        "codes": set(seen),
        "requests": len(seen),
    }


def test_throughput_falls_past_the_knee() -> None:
    """64 slots, so only the knee limits: 20 ms x (1 + 1.0 x (busy - 4)). At 4 in flight no
    request is slowed (4 / 20 ms = 200 req/s); at 8 each is held 4x (8 / 80 ms = 100 req/s)."""
    with DemoServerProcess(slots=64, service_ms=20, knee=4, knee_penalty=1.0) as srv:
        at_knee = closed_loop(srv.url, clients=4, window_s=1.5)
        past = closed_loop(srv.url, clients=8, window_s=1.5)
        srv.set_config(knee=0)  # the same server without the knee scales with the clients
        no_knee = closed_loop(srv.url, clients=8, window_s=1.5)
    assert at_knee["codes"] == past["codes"] == {200}
    assert at_knee["rps"] == pytest.approx(200, rel=0.2), at_knee
    # the clients' own gaps leave fewer than 8 in flight part of the time (fewer held 4x):
    # 120.7 req/s was seen in a full suite, so the band is wider above; the fall is the point
    assert 80 <= past["rps"] <= 130, past
    assert past["rps"] < 0.7 * at_knee["rps"], (at_knee, past)
    assert no_knee["rps"] > 1.5 * at_knee["rps"], (at_knee, no_knee)


def test_errors_start_above_a_load_and_grow_with_it() -> None:
    """error_above=4: with 4 clients at most 3 others are in flight, never a 503; above it
    the shed share grows with the load. Knobs set at runtime, like slowdown."""
    with DemoServerProcess(slots=64, service_ms=10, seed=3) as srv:
        config = srv.set_config(error_above=4, error_growth=0.25)
        assert (config["error_above"], config["error_growth"]) == (4, 0.25)
        levels = {n: closed_loop(srv.url, clients=n, window_s=1.5) for n in (4, 8, 16)}
        stats = srv.stats()
    ratios = {n: round(level["error_ratio"], 3) for n, level in levels.items()}
    assert levels[4]["codes"] == {200} and levels[4]["requests"] > 200, levels[4]
    assert levels[8]["codes"] == levels[16]["codes"] == {200, 503}, ratios
    assert 0.05 < ratios[8] < ratios[16], ratios
    assert stats["shed"]["work"] >= levels[8]["requests"] * ratios[8]
    assert stats["failures"]["work"] == 0  # shed requests are not error_ratio failures


def test_degradation_knobs_validate() -> None:
    with pytest.raises(ConfigError, match="knee must be a number >= 0"):
        DemoKnobs(knee=-1)
    with pytest.raises(ConfigError, match="error_growth"):
        DemoKnobs().updated({"error_growth": "nan"})


def test_stall_holds_requests_for_the_stall(client_for: Any) -> None:
    stall_s = 0.25
    with DemoServerProcess(slots=4, service_ms=5) as srv:
        client = client_for(srv)
        srv.set_config(stall_every_s=0.4, stall_s=stall_s)
        latencies: list[float] = []
        deadline = time.monotonic() + 2.0
        while len(latencies) < 300 and time.monotonic() < deadline:
            latencies.append(timed_get(client, "/work"))
            if latencies[-1] >= stall_s:
                break
        # /fast bypasses the slots, so it is not frozen.
        fast = timed_get(client, "/fast")
    assert max(latencies) >= stall_s, f"no request waited out a stall: max {max(latencies):.3f} s"
    assert max(latencies) < stall_s + 0.2
    assert fast < 0.1


def test_a_slow_spell_begins_with_the_next_request_and_ends_by_itself(client_for: Any) -> None:
    """spell_s=0.5, spell_factor=4: requests in the first half second take ~4 x 20 ms, and
    the server is itself again afterwards without being told."""
    with DemoServerProcess(slots=4, service_ms=20) as srv:
        client = client_for(srv)
        timed_get(client, "/work")  # connect outside the measurement
        assert srv.set_config(spell_s=0.5, spell_factor=4)["spell_s"] == 0.5
        started = time.monotonic()
        timed: list[tuple[float, float]] = []  # (since the first request, latency)
        while len(timed) < 100 and time.monotonic() - started < 3.0:
            t = time.monotonic() - started
            timed.append((t, timed_get(client, "/work")))
            if t > 1.0 and len(timed) >= 3 and all(lat < 0.04 for _, lat in timed[-3:]):
                break
    during = [lat for t, lat in timed if t + lat < 0.45]
    after = [lat for t, lat in timed if t > 0.55]
    assert during and min(during) >= 0.08, timed
    assert after and statistics.median(after) < 0.035, timed


def test_cpu_ms_costs_real_process_cpu(client_for: Any) -> None:
    with DemoServerProcess(slots=4, service_ms=20, cpu_ms=10) as srv:
        client = client_for(srv)
        before = srv.stats()
        for _ in range(10):
            timed_get(client, "/work")
        after = srv.stats()
    triton_cpu_s = after["triton_cpu_s"] - before["triton_cpu_s"]
    process_cpu_s = after["process_cpu_s"] - before["process_cpu_s"]
    assert 0.095 <= triton_cpu_s < 0.2
    assert process_cpu_s >= triton_cpu_s


# --------------------------------------------------------------------------- lifecycle


def test_stop_leaves_no_process() -> None:
    srv = DemoServerProcess(slots=2)
    with srv:
        pid = srv.pid
        os.kill(pid, 0)
    assert srv.returncode == 0  # SIGTERM is a clean shutdown
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = srv.url


def test_sigint_exits_cleanly(client_for: Any) -> None:
    with DemoServerProcess() as srv:
        client = client_for(srv)
        client.request("GET", "/fast")  # an open keep-alive connection must not block exit
        os.kill(srv.pid, signal.SIGINT)
        assert srv.wait(5.0) == 0


def test_start_failure_reports_the_child_stderr() -> None:
    srv = DemoServerProcess(extra_args=["--slots", "0"])
    with pytest.raises(RuntimeError, match=r"(?s)did not start.*slots must be in \[1, 4096\]"):
        srv.start()
    with pytest.raises(ProcessLookupError):
        os.kill(srv.pid, 0)
