"""A bundled demo inference server whose capacity is known in advance.

Run it with ``python -m pytest_mlload.demo --port 8000``. It needs only the standard library
and numpy: a small asyncio HTTP/1.1 server (keep-alive, ``Content-Length`` bodies) in front
of a shared pool of worker *slots*, like a GPU shared by a model server.

Capacity model
--------------
Every model endpoint (``/v1/classify``, ``/v1/embed``, ``/v2/models/{model}/infer``,
``/work``) takes one of ``slots`` slots (FIFO) and holds it for exactly its service time
``s = service_ms × slowdown``: it does a small piece of real numpy work (well under 1 ms),
then sleeps until the slot's deadline. The deadline does not depend on how fast the machine
is, as long as the work is shorter than the service time. So the capacity of one endpoint is::

    capacity = slots / (service_ms × slowdown / 1000)        requests/s

and for a mix of slotted endpoints with weights ``wᵢ`` (normalised so that Σ wᵢ = 1) and
service times ``sᵢ`` in seconds::

    capacity = slots / Σ wᵢ·sᵢ                              requests/s

(see :func:`capacity_rps` and :func:`mix_capacity_rps`). Below capacity, latency is about
``s`` plus HTTP overhead; above it, requests queue and latency grows as ``N·s / slots`` for
``N`` concurrent closed-loop clients. Deadlines are chained on a virtual per-slot timeline (a
request that waited for a slot starts when that slot's previous request was due, not when
the event loop got round to it), so the late wake-ups of ``asyncio.sleep`` (up to 1 ms
each) do not eat into throughput: a saturated server delivers ``slots / s``.

``/fast``, ``/healthz``, ``/metrics`` and ``/admin/*`` bypass the slots.

``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI, ``stream: true|false``)
are served by a simulated continuous-batching LLM engine instead, with its own knobs
(``llm_*``, plus ``slowdown`` and ``error_ratio``) and its own truth: see
:mod:`pytest_mlload.testing.llm`.

Knobs (command-line flags, and at runtime through ``POST /admin/config``): ``slowdown``
(service-time multiplier), ``error_ratio`` (fraction of slotted requests answered 500 after
their service time), ``stall_every_s`` / ``stall_s`` (every ``stall_every_s`` seconds slot
processing freezes for ``stall_s``), ``spell_s`` / ``spell_factor`` (a slow spell: service
times ``spell_factor`` times longer for ``spell_s`` seconds from the first request after it is
set), ``cpu_ms`` (extra real CPU work per slotted request in the event-loop thread) and the
per-endpoint service times.

Two knobs make a server that degrades under load, as the simulated service of
:mod:`pytest_mlload.testing.simulate` does (same names, same meaning):

* ``knee`` K with ``knee_penalty`` P: a request that starts while ``busy`` other requests
  hold a slot holds its own for ``s × (1 + P·max(0, busy − K))``. With more slots than K,
  throughput ``n / (s·(1 + P·(n − 1 − K)))`` at ``n`` in flight peaks at K + 1 and falls
  after it whenever ``P·(K + 1) > 1`` (contention, thrashing caches, a GPU past its batch).
* ``error_above`` N with ``error_growth`` G: a request arriving while ``in_flight`` others
  are queued or in service, ``in_flight > N``, is shed at once with 503 with probability
  ``min(1, G·(in_flight − N))`` (a load shedder). It takes no slot.

``GET /metrics`` exposes cAdvisor-like CPU counters, Triton-like inference counters and a
GPU-utilisation gauge; ``GET /admin/stats`` gives the server's own cumulative view of the
same numbers. :class:`DemoServerProcess` runs the server in a child process for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import http
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any, TypeVar

import numpy as np

from pytest_mlload._io import stop_process
from pytest_mlload.errors import ConfigError
from pytest_mlload.testing import llm

__all__ = [
    "DemoKnobs",
    "DemoServer",
    "DemoServerProcess",
    "DemoSettings",
    "capacity_rps",
    "main",
    "URL_LINE_PREFIX",
    "mix_capacity_rps",
    "serve",
    "settings_from_args",
    "stalled_finish_s",
]

_T = TypeVar("_T")

URL_LINE_PREFIX = "pytest-mlload demo server listening on "
"""The start of the one line the server prints to stdout once it accepts connections."""

_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_BATCH = 256
_MAX_SERVICE_MS = 60_000.0
_MODEL_NAME = re.compile(r"^/v2/models/([A-Za-z0-9_.\-]{1,64})/infer$")


# --------------------------------------------------------------------------- capacity model


def capacity_rps(*, slots: int, service_ms: float, slowdown: float = 1.0) -> float:
    """Requests/s one slotted endpoint sustains: ``slots / (service_ms × slowdown / 1000)``."""
    if slots < 1 or service_ms <= 0 or slowdown <= 0:
        raise ConfigError(
            f"capacity needs slots >= 1, service_ms > 0 and slowdown > 0, "
            f"got slots={slots}, service_ms={service_ms}, slowdown={slowdown}"
        )
    return slots / (service_ms * slowdown / 1000.0)


def mix_capacity_rps(
    *, slots: int, mix: Iterable[tuple[float, float]], slowdown: float = 1.0
) -> float:
    """Requests/s a weighted mix of slotted endpoints sustains: ``slots / Σ wᵢ·sᵢ``.

    ``mix`` holds ``(weight, service_ms)`` pairs; weights are normalised here, so Locust task
    weights can be passed as they are.
    """
    pairs = list(mix)
    total_weight = sum(w for w, _ in pairs)
    if not pairs or total_weight <= 0 or any(w < 0 or s <= 0 for w, s in pairs):
        raise ConfigError(
            f"mix must be non-empty (weight >= 0, service_ms > 0) pairs with a positive "
            f"total weight, got {pairs!r}"
        )
    mean_service_ms = sum(w * s for w, s in pairs) / total_weight
    return capacity_rps(slots=slots, service_ms=mean_service_ms, slowdown=slowdown)


def stalled_finish_s(
    start_s: float, work_s: float, *, epoch_s: float, every_s: float, stall_s: float
) -> float:
    """When work of ``work_s`` seconds that starts at ``start_s`` finishes, given stalls.

    Stalls are the windows ``[epoch_s + k·every_s, epoch_s + k·every_s + stall_s)`` for
    k = 1, 2, ...: slot processing freezes inside them, so work that would start in a window
    starts at its end, and work in progress when a window opens resumes after it.
    """
    if every_s <= 0 or stall_s <= 0:
        return start_s + work_s
    t, remaining = start_s, work_s
    while True:
        k = math.floor((t - epoch_s) / every_s)
        if k >= 1 and t < epoch_s + k * every_s + stall_s:
            t = epoch_s + k * every_s + stall_s  # arrived inside a stall: wait for its end
            k = math.floor((t - epoch_s) / every_s)
        next_stall = epoch_s + max(k + 1, 1) * every_s
        if t + remaining <= next_stall:
            return t + remaining
        remaining -= next_stall - t
        t = next_stall + stall_s


# --------------------------------------------------------------------------- settings


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoKnobs:
    """The knobs that can change at runtime (``POST /admin/config``). Times in ms or s."""

    service_ms: float = 20.0
    """Service time of ``/work``."""
    classify_ms: float = 20.0
    """Service time of ``POST /v1/classify``."""
    embed_ms: float = 30.0
    """Service time of ``POST /v1/embed``."""
    infer_ms: float = 40.0
    """Service time of ``POST /v2/models/{model}/infer``."""
    slowdown: float = 1.0
    """Multiplier on every service time (1.3 = 30 % slower)."""
    error_ratio: float = 0.0
    """Fraction of slotted requests answered 500 (after their service time)."""
    stall_every_s: float = 0.0
    """Period of slot-processing stalls; 0 turns stalls off."""
    stall_s: float = 0.0
    """Length of each stall; must be shorter than ``stall_every_s``."""
    cpu_ms: float = 0.0
    """Extra real CPU busy work per slotted request, in the event-loop thread."""
    knee: float = 0.0
    """Past this many requests in service, each request's hold time grows; 0 turns it off."""
    knee_penalty: float = 0.25
    """Hold time x ``1 + knee_penalty · max(0, busy − knee)``, busy = others in service."""
    error_above: float = 0.0
    """Past this many requests in flight, arrivals are shed with 503; 0 turns it off."""
    error_growth: float = 0.05
    """Shed probability ``min(1, error_growth · (in_flight − error_above))``."""
    spell_s: float = 0.0
    """A slow spell: for this long from the first slotted request after it is set, service
    times are ``spell_factor`` times longer, then the server is itself again; 0 = off."""
    spell_factor: float = 2.0
    """Service-time multiplier during a spell."""
    llm_batch: float = 8.0
    """LLM engine: most sequences in the batch at once."""
    llm_prefill_ms_per_token: float = 0.05
    """LLM engine: prefill time per prompt token (a prompt word)."""
    llm_decode_ms: float = 4.0
    """LLM engine: fixed part of a decode step."""
    llm_decode_ms_per_seq: float = 0.5
    """LLM engine: decode step time added per sequence in the batch."""
    llm_stream_options: float = 0.0
    """LLM engine: 0 honours ``stream_options``, 1 ignores it, 2 rejects it with 400."""

    def __post_init__(self) -> None:
        llm.EngineKnobs.from_demo(self)  # validates the llm_* knobs
        for name in ("service_ms", "classify_ms", "embed_ms", "infer_ms"):
            value = getattr(self, name)
            _check(
                0 < value <= _MAX_SERVICE_MS,
                f"{name} must be in (0, {_MAX_SERVICE_MS:g}] ms, got {value!r}",
            )
        _check(0 < self.slowdown <= 100, f"slowdown must be in (0, 100], got {self.slowdown!r}")
        _check(
            0 <= self.error_ratio <= 1,
            f"error_ratio must be a fraction in [0, 1] (0.1 = 10 %), got {self.error_ratio!r}",
        )
        _check(self.cpu_ms >= 0, f"cpu_ms must be >= 0, got {self.cpu_ms!r}")
        _check(
            0 < self.spell_factor <= 100,
            f"spell_factor must be in (0, 100], got {self.spell_factor!r}",
        )
        for name in ("knee", "knee_penalty", "error_above", "error_growth", "spell_s"):
            value = getattr(self, name)
            _check(
                math.isfinite(value) and value >= 0,
                f"{name} must be a number >= 0 (0 = off for knee and error_above), got {value!r}",
            )
        _check(
            self.stall_every_s >= 0 and self.stall_s >= 0,
            f"stall_every_s and stall_s must be >= 0, "
            f"got {self.stall_every_s!r} and {self.stall_s!r}",
        )
        if self.stall_every_s > 0 and self.stall_s > 0:
            _check(
                self.stall_every_s >= 0.01 and self.stall_s < self.stall_every_s,
                f"stalls need stall_every_s >= 0.01 and stall_s < stall_every_s, "
                f"got stall_every_s={self.stall_every_s!r}, stall_s={self.stall_s!r}",
            )

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """Names of all knobs, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def updated(self, changes: Mapping[str, Any]) -> DemoKnobs:
        """A copy with ``changes`` applied; unknown names and non-numbers raise ConfigError."""
        names = self.field_names()
        unknown = sorted(set(changes) - set(names))
        _check(not unknown, f"unknown knob(s) {unknown}; accepted: {', '.join(names)}")
        values: dict[str, float] = {}
        for name, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            try:
                values[name] = float(value)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {value!r}") from None
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, float]:
        """The knobs as a JSON-ready dict."""
        return {name: getattr(self, name) for name in self.field_names()}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSettings:
    """Start-up settings of a :class:`DemoServer` (fixed for its lifetime) plus its knobs."""

    host: str = "127.0.0.1"
    port: int = 0
    """0 picks a free port."""
    slots: int = 4
    seed: int = 0
    """Seeds the error-ratio RNG."""
    pod_name: str = "demo-api-0"
    triton_pod_name: str = "demo-triton-modelverse-0"
    application: str = "demo-triton-modelverse"
    namespace: str = "demo"
    knobs: DemoKnobs = dataclasses.field(default_factory=DemoKnobs)

    def __post_init__(self) -> None:
        _check(1 <= self.slots <= 4096, f"slots must be in [1, 4096], got {self.slots!r}")
        _check(0 <= self.port <= 65535, f"port must be in [0, 65535], got {self.port!r}")


# --------------------------------------------------------------------------- the model work

_FEATURES = 64
_CLASSES = 10
_EMBED_DIM = 32
_LABELS = tuple(f"class_{i}" for i in range(_CLASSES))
_KSERVE_DTYPES = frozenset(
    ["BOOL", "FP16", "FP32", "FP64", *(f"{k}{b}" for k in ("INT", "UINT") for b in (8, 16, 32, 64))]
)

_weights_rng = np.random.default_rng(20240607)
_W_CLASSIFY = (_weights_rng.standard_normal((_FEATURES, _CLASSES)) / 8.0).astype(np.float32)
_B_CLASSIFY = _weights_rng.standard_normal(_CLASSES).astype(np.float32)
_W_EMBED = (_weights_rng.standard_normal((_FEATURES, _EMBED_DIM)) / 8.0).astype(np.float32)
_B_EMBED = _weights_rng.standard_normal(_EMBED_DIM).astype(np.float32)
_DEFAULT_ROW = _weights_rng.standard_normal(_FEATURES).astype(np.float32)


class _BadRequest(Exception):
    """A request the client must fix: answered 400 with the message."""


def _fit_rows(rows: np.ndarray) -> np.ndarray:
    """Pad with zeros or truncate each row to the model's feature count."""
    if rows.shape[1] == _FEATURES:
        return rows
    if rows.shape[1] > _FEATURES:
        return np.ascontiguousarray(rows[:, :_FEATURES])
    return np.pad(rows, ((0, 0), (0, _FEATURES - rows.shape[1])))


def _as_rows(value: Any, what: str) -> np.ndarray:
    """Convert a JSON list (one row or a list of rows) of numbers into a 2-D float32 array."""
    try:
        rows = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError):
        raise _BadRequest(f"{what} must be a list of equal-length lists of numbers") from None
    if rows.ndim == 1:
        rows = rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] == 0:
        raise _BadRequest(f"{what} must be a non-empty list of non-empty lists of numbers")
    if rows.shape[0] > _MAX_BATCH:
        raise _BadRequest(f"batch of {rows.shape[0]} rows is over the limit of {_MAX_BATCH}")
    if not np.isfinite(rows).all():
        raise _BadRequest(f"{what} must hold finite numbers")
    return _fit_rows(rows)


def _embed_inputs(value: Any) -> np.ndarray:
    """Strings become byte vectors, lists of numbers stay numbers; one row per input."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > _MAX_BATCH:
            raise _BadRequest(f"batch of {len(value)} inputs is over the limit of {_MAX_BATCH}")
        rows = np.zeros((len(value), _FEATURES), dtype=np.float32)
        for i, text in enumerate(value):
            data = np.frombuffer(text.encode()[:_FEATURES], dtype=np.uint8)
            rows[i, : data.size] = data / np.float32(255.0)
        return rows
    return _as_rows(value, "inputs")


def _probabilities(rows: np.ndarray) -> np.ndarray:
    logits = rows @ _W_CLASSIFY + _B_CLASSIFY
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    probs: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return probs


def _classify(rows: np.ndarray) -> dict[str, Any]:
    probs = _probabilities(rows)
    best = probs.argmax(axis=1)
    return {
        "labels": [_LABELS[i] for i in best.tolist()],
        "scores": probs[np.arange(len(best)), best].astype(np.float64).round(6).tolist(),
    }


def _embed(rows: np.ndarray) -> dict[str, Any]:
    vectors = np.tanh(rows @ _W_EMBED + _B_EMBED)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + np.float32(1e-12)
    return {"embeddings": vectors.astype(np.float64).round(6).tolist()}


def _kserve_rows(payload: Any) -> tuple[np.ndarray, Any]:
    """Validate a KServe v2 request; return its first input as rows and the request id."""
    if payload is None:
        return _DEFAULT_ROW.reshape(1, -1), None
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        raise _BadRequest('"inputs" must be a non-empty list of {name, shape, datatype, data}')
    tensor = inputs[0]
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(tensor.get("name"), str):
        raise _BadRequest("inputs[0].name must be a string")
    if datatype not in _KSERVE_DTYPES:
        raise _BadRequest(f"inputs[0].datatype {datatype!r} is not one of {sorted(_KSERVE_DTYPES)}")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise _BadRequest("inputs[0].shape must be a non-empty list of positive integers")
    try:
        array = np.asarray(data, dtype=np.float32).reshape(shape)
    except (ValueError, TypeError):
        raise _BadRequest(f"inputs[0].data does not hold numbers of shape {shape}") from None
    return _as_rows(array.reshape(shape[0], -1), "inputs[0].data"), payload.get("id")


def _burn_cpu(seconds: float) -> None:
    """Spin on real CPU work in this thread for ``seconds`` of thread CPU time."""
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        sum(range(500))


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    version: str = "HTTP/1.1"


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    stream: AsyncGenerator[bytes, None] | None = None
    """Body pieces sent as they come (chunked encoding) instead of ``body``."""


class _Overloaded(Exception):
    """A request shed by ``error_above``: answered 503 without taking a slot."""


class _HttpError(Exception):
    """A protocol error: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Response(status, body, "application/json", headers)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    return _json(status, {"error": message, "status": status}, headers)


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _parse_head(head: bytes) -> _Request:
    """Parse the request line and headers (``head`` ends with the blank line)."""
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1].startswith(b"/"):
        raise _HttpError(400, "malformed request line")
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        if parts[2].startswith(b"HTTP/"):
            raise _HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
        raise _HttpError(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise _HttpError(400, "malformed header line")
        headers[name.decode("latin-1").lower()] = value.strip().decode("latin-1")
    path = parts[1].decode("latin-1").partition("?")[0]
    return _Request(parts[0].decode("ascii"), path, headers, version=parts[2].decode("ascii"))


def _keep_alive(request: _Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def _encode(response: _Response, keep_alive: bool) -> bytes:
    length = (
        "Transfer-Encoding: chunked" if response.stream else f"Content-Length: {len(response.body)}"
    )
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}",
        f"Content-Type: {response.content_type}",
        length,
        "Connection: keep-alive" if keep_alive else "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def _decode_json(body: bytes) -> Any:
    """The JSON body, or None for an empty body; anything but an object is a 400."""
    if not body.strip():
        return None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise _BadRequest("body must be a JSON object")
    return payload


# --------------------------------------------------------------------------- Prometheus text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


class _Exposition:
    """Collects metric families and renders Prometheus text format 0.0.4."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]],
    ) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {float(value)!r}")

    def render(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode()


# --------------------------------------------------------------------------- the server


class _SlotPool:
    """``slots`` FIFO slots; each remembers when (on the virtual timeline) it became free."""

    def __init__(self, slots: int) -> None:
        self._semaphore = asyncio.Semaphore(slots)
        self._free_at: list[float] = [0.0] * slots

    async def acquire(self) -> float:
        """Wait for a slot (FIFO); return the time its previous request was due to end."""
        await self._semaphore.acquire()
        return self._free_at.pop()

    def release(self, free_at: float) -> None:
        self._free_at.append(free_at)
        self._semaphore.release()


class DemoServer:
    """The demo inference server on the running asyncio loop.

    ``await server.start()`` binds and listens, :attr:`url` is then known;
    ``await server.close()`` stops it. :func:`main` wraps this for the command line.
    """

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.knobs = settings.knobs
        self._rng = random.Random(settings.seed)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._pool = _SlotPool(settings.slots)
        self._port = settings.port
        self._started = 0.0
        self._stall_epoch = 0.0
        # A slow spell's (start, end); start 0.0: armed, begins with the next request
        self._spell: tuple[float, float] | None = (0.0, 0.0) if self.knobs.spell_s > 0 else None
        # Counters. Busy-slot time is the sum of finished in-slot intervals plus the elapsed
        # part of the in-flight ones, so it can be read at any instant.
        self._busy_done_s = 0.0
        self._in_slot: dict[int, tuple[float, float]] = {}
        self._next_token = 0
        self._queued = 0
        self._triton_cpu_s = 0.0
        self._inference_count: dict[str, int] = dict.fromkeys(("classify", "embed", "work"), 0)
        self._inference_us: dict[str, float] = dict.fromkeys(("classify", "embed", "work"), 0.0)
        self._failures: dict[str, int] = dict.fromkeys(("classify", "embed", "work"), 0)
        self._shed: dict[str, int] = dict.fromkeys(("classify", "embed", "work"), 0)
        self._requests: dict[tuple[str, int], int] = {}
        self._last_scrape = (0.0, 0.0)  # (loop time, busy-slot seconds) at the previous scrape
        routes: dict[str, tuple[str, Callable[[_Request], Awaitable[_Response]]]] = {
            "/v1/classify": ("POST", self._classify),
            "/v1/embed": ("POST", self._embed),
            "/work": ("GET, POST", self._work),
            "/v1/chat/completions": ("POST", lambda r: self._openai(r, chat=True)),
            "/v1/completions": ("POST", lambda r: self._openai(r, chat=False)),
            "/fast": ("GET", self._fast),
            "/healthz": ("GET", self._healthz),
            "/metrics": ("GET", self._metrics),
            "/admin/config": ("GET, POST", self._config),
            "/admin/stats": ("GET", self._stats),
        }
        self._routes = routes
        self._engine = llm.Engine(lambda: llm.EngineKnobs.from_demo(self.knobs))

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://host:port`` once started."""
        host = self.settings.host
        return f"http://[{host}]:{self._port}" if ":" in host else f"http://{host}:{self._port}"

    async def start(self) -> None:
        """Bind and start accepting connections."""
        loop = asyncio.get_running_loop()
        self._started = self._stall_epoch = loop.time()
        self._last_scrape = (self._started, 0.0)
        self._server = await asyncio.start_server(
            self._serve_connection, self.settings.host, self.settings.port, limit=_MAX_HEAD_BYTES
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- connections ----------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Responses are one small write each; Nagle would hold them for the ACK.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._serve_requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _serve_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    writer.write(_encode(_error(400, "incomplete request head"), False))
                return
            except asyncio.LimitOverrunError:
                writer.write(_encode(_error(431, "request head too large"), False))
                return
            try:
                request = _parse_head(head)
                request.body = await self._read_body(reader, request)
            except _HttpError as exc:
                self._count("unmatched", exc.status)
                writer.write(_encode(_error(exc.status, str(exc)), False))
                return
            keep_alive = _keep_alive(request)
            response = await self._dispatch(request)
            writer.write(_encode(response, keep_alive))
            if response.stream is not None:
                await _write_chunked(writer, response.stream)
            await writer.drain()
            if not keep_alive:
                return

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, request: _Request) -> bytes:
        if "transfer-encoding" in request.headers:
            raise _HttpError(501, "Transfer-Encoding is not supported; send Content-Length")
        raw = request.headers.get("content-length")
        if raw is None:
            return b""
        if not raw.isdigit():
            raise _HttpError(400, f"invalid Content-Length {raw!r}")
        length = int(raw)
        if length > _MAX_BODY_BYTES:
            raise _HttpError(413, f"body of {length} bytes is over {_MAX_BODY_BYTES} bytes")
        return await reader.readexactly(length) if length else b""

    def _count(self, endpoint: str, status: int) -> None:
        key = (endpoint, status)
        self._requests[key] = self._requests.get(key, 0) + 1

    async def _dispatch(self, request: _Request) -> _Response:
        route = self._routes.get(request.path)
        endpoint = request.path
        if route is None:
            match = _MODEL_NAME.match(request.path)
            if match is None:
                self._count("unmatched", 404)
                return _error(404, f"no route for {request.path}")
            endpoint = "/v2/models/{model}/infer"
            model = match.group(1)
            route = ("POST", lambda r: self._infer(r, model))
        allowed, handler = route
        if request.method not in allowed.split(", "):
            self._count(endpoint, 405)
            return _error(405, f"{request.method} not allowed on {endpoint}", (("Allow", allowed),))
        try:
            response = await handler(request)
        except _BadRequest as exc:
            response = _error(400, str(exc))
        except _Overloaded as exc:
            response = _error(503, str(exc), (("Retry-After", "1"),))
        except Exception as exc:  # a bug in a handler: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            response = _error(500, f"internal error: {exc!r}")
        self._count(endpoint, response.status)
        return response

    # -- slots ----------------------------------------------------------------------------

    def _busy_slot_s(self, now: float) -> float:
        in_flight = sum(max(0.0, min(now, end) - start) for start, end in self._in_slot.values())
        return self._busy_done_s + in_flight

    async def _slotted(self, model: str, service_ms: float, work: Callable[[], _T]) -> _T | None:
        """Run ``work`` in a slot held for the service time; None means answer 500."""
        loop = asyncio.get_running_loop()
        knobs = self.knobs
        in_flight = self._queued + len(self._in_slot)
        if knobs.error_above > 0 and in_flight > knobs.error_above:
            chance = min(1.0, knobs.error_growth * (in_flight - knobs.error_above))
            if self._rng.random() < chance:
                self._shed[model] = self._shed.get(model, 0) + 1
                raise _Overloaded(
                    f"overloaded: {in_flight} requests in flight, above error_above="
                    f"{knobs.error_above:g} (shed with probability {chance:.2f})"
                )
        fail = knobs.error_ratio > 0 and self._rng.random() < knobs.error_ratio
        arrived = loop.time()
        self._queued += 1
        try:
            free_at = await self._pool.acquire()
        finally:
            self._queued -= 1
        # Past the knee every request in service slows the others down.
        busy = len(self._in_slot)
        knee_factor = 1.0
        if knobs.knee > 0:
            knee_factor += knobs.knee_penalty * max(0.0, busy - knobs.knee)
        if self._spell is not None:
            if self._spell[0] == 0.0:  # the spell begins with the first request
                self._spell = (arrived, arrived + knobs.spell_s)
            if arrived < self._spell[1]:
                knee_factor *= knobs.spell_factor
        # A request that queued starts when the slot's previous request was due, not when the
        # loop woke it: asyncio's up-to-1-ms late wake-ups must not lower the capacity.
        start = max(arrived, free_at)
        end = stalled_finish_s(
            start,
            service_ms * knobs.slowdown * knee_factor / 1000.0,
            epoch_s=self._stall_epoch,
            every_s=knobs.stall_every_s,
            stall_s=knobs.stall_s,
        )
        token = self._next_token = self._next_token + 1
        self._in_slot[token] = (start, end)
        finished = False
        try:
            cpu_before = time.thread_time()
            result = work()
            if knobs.cpu_ms > 0:
                _burn_cpu(knobs.cpu_ms / 1000.0)
            self._triton_cpu_s += time.thread_time() - cpu_before
            end = max(end, loop.time())  # the work overran its service time
            self._in_slot[token] = (start, end)
            await _sleep_until(loop, end)
            finished = True
        finally:
            del self._in_slot[token]
            if not finished:  # cancelled (shutdown): the slot was busy until now
                end = min(end, loop.time())
            self._busy_done_s += end - start
            self._pool.release(end)
        if fail:
            self._failures[model] = self._failures.get(model, 0) + 1
            return None
        self._inference_count[model] = self._inference_count.get(model, 0) + 1
        self._inference_us[model] = self._inference_us.get(model, 0.0) + (end - start) * 1e6
        return result

    # -- handlers -------------------------------------------------------------------------

    @staticmethod
    def _injected_error(model: str) -> _Response:
        return _error(500, f"injected error on model {model!r} (error_ratio)")

    async def _classify(self, request: _Request) -> _Response:
        payload = _decode_json(request.body)
        value = None if payload is None else payload.get("inputs")
        rows = _DEFAULT_ROW.reshape(1, -1) if not value else _as_rows(value, "inputs")
        result = await self._slotted("classify", self.knobs.classify_ms, lambda: _classify(rows))
        return self._injected_error("classify") if result is None else _json(200, result)

    async def _embed(self, request: _Request) -> _Response:
        payload = _decode_json(request.body)
        value = None if payload is None else payload.get("inputs")
        rows = _DEFAULT_ROW.reshape(1, -1) if not value else _embed_inputs(value)
        result = await self._slotted("embed", self.knobs.embed_ms, lambda: _embed(rows))
        return self._injected_error("embed") if result is None else _json(200, result)

    async def _infer(self, request: _Request, model: str) -> _Response:
        rows, request_id = _kserve_rows(_decode_json(request.body))

        def work() -> dict[str, Any]:
            probs = _probabilities(rows)
            outputs = [
                {
                    "name": "probabilities",
                    "shape": list(probs.shape),
                    "datatype": "FP32",
                    "data": probs.ravel().astype(np.float64).round(6).tolist(),
                },
                {
                    "name": "label",
                    "shape": [probs.shape[0]],
                    "datatype": "INT64",
                    "data": probs.argmax(axis=1).tolist(),
                },
            ]
            response: dict[str, Any] = {"model_name": model, "model_version": "1"}
            if request_id is not None:
                response["id"] = request_id
            response["outputs"] = outputs
            return response

        result = await self._slotted(model, self.knobs.infer_ms, work)
        return self._injected_error(model) if result is None else _json(200, result)

    async def _work(self, request: _Request) -> _Response:
        rows = _DEFAULT_ROW.reshape(1, -1)
        result = await self._slotted("work", self.knobs.service_ms, lambda: _probabilities(rows))
        if result is None:
            return self._injected_error("work")
        service_ms = self.knobs.service_ms * self.knobs.slowdown
        return _json(200, {"status": "ok", "model": "work", "service_ms": service_ms})

    async def _openai(self, request: _Request, *, chat: bool) -> _Response:
        knobs = self.knobs
        fail = knobs.error_ratio > 0 and self._rng.random() < knobs.error_ratio
        reply = await llm.openai_reply(
            self._engine,
            _decode_json(request.body),
            chat=chat,
            knobs=llm.EngineKnobs.from_demo(knobs),
            fail=fail,
        )
        return _Response(reply.status, reply.body, reply.content_type, stream=reply.stream)

    async def _fast(self, request: _Request) -> _Response:
        return _Response(200, b"ok", "text/plain; charset=utf-8")

    async def _healthz(self, request: _Request) -> _Response:
        return _json(200, {"status": "ok"})

    async def _config(self, request: _Request) -> _Response:
        if request.method == "POST":
            payload = _decode_json(request.body) or {}
            try:
                knobs = self.knobs.updated(payload)
            except ConfigError as exc:
                raise _BadRequest(str(exc)) from None
            stall_keys = ("stall_every_s", "stall_s")
            if any(getattr(knobs, k) != getattr(self.knobs, k) for k in stall_keys):
                self._stall_epoch = asyncio.get_running_loop().time()  # first stall in 1 period
            if "spell_s" in payload:  # (re)armed: begins with the next request
                self._spell = (0.0, 0.0) if knobs.spell_s > 0 else None
            self.knobs = knobs
        return _json(200, {**self.knobs.as_dict(), "slots": self.settings.slots})

    def stats(self) -> dict[str, Any]:
        """The server's own cumulative counters (what ``GET /admin/stats`` returns)."""
        now = asyncio.get_running_loop().time()
        return {
            "process_cpu_s": time.process_time(),
            "triton_cpu_s": self._triton_cpu_s,
            "busy_slot_s": self._busy_slot_s(now),
            "slots": self.settings.slots,
            "uptime_s": now - self._started,
            "requests": dict(self._inference_count),
            "inference_us": dict(self._inference_us),
            "failures": dict(self._failures),
            "shed": dict(self._shed),
            "busy_slots": len(self._in_slot),
            "queued": self._queued,
        }

    async def _stats(self, request: _Request) -> _Response:
        return _json(200, self.stats())

    async def _metrics(self, request: _Request) -> _Response:
        utilization = self._scrape_utilization()
        out = _Exposition()
        self._export_triton(out, utilization)
        self._export_demo(out)
        return _Response(200, out.render(), "text/plain; version=0.0.4; charset=utf-8")

    def _scrape_utilization(self) -> float:
        """Busy-slot share of the slots since the previous scrape (0.0 over no time); this
        scrape starts the next interval."""
        now = asyncio.get_running_loop().time()
        busy_s = self._busy_slot_s(now)
        last_time, last_busy_s = self._last_scrape
        self._last_scrape = (now, busy_s)
        wall_s = now - last_time
        return (busy_s - last_busy_s) / (self.settings.slots * wall_s) if wall_s > 0 else 0.0

    def _per_model(self, values: Mapping[str, float]) -> list[tuple[Mapping[str, str], float]]:
        s = self.settings
        return [
            ({"application": s.application, "model": model, "pod": s.triton_pod_name}, v)
            for model, v in sorted(values.items())
        ]

    def _export_triton(self, out: _Exposition, utilization: float) -> None:
        """The cAdvisor CPU, DCGM GPU and Triton inference families the HPA triggers read."""
        s = self.settings
        api = {"container": "api", "pod": s.pod_name, "namespace": s.namespace}
        triton = {"container": "triton", "pod": s.triton_pod_name, "namespace": s.namespace}
        gpu = {"application": s.application, "pod": s.triton_pod_name, "gpu_uuid": "GPU-demo-0"}
        out.family(
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative CPU time consumed, in seconds (api: the whole process; "
            "triton: the slotted model work).",
            [(api, time.process_time()), (triton, self._triton_cpu_s)],
        )
        out.family(
            "nv_gpu_utilization_ratio",
            "gauge",
            "Busy-slot time / (slots x wall time) since the previous scrape of /metrics.",
            [(gpu, min(1.0, max(0.0, utilization)))],
        )
        durations = self._per_model(self._inference_us)
        counts = self._per_model({k: float(v) for k, v in self._inference_count.items()})
        for name in (
            "nv_inference_request_duration_us_microseconds_total",
            "nv_inference_request_duration_us",
        ):
            out.family(
                name,
                "counter",
                "Cumulative time successful requests spent in a slot, in microseconds.",
                durations,
            )
        for name in ("nv_inference_count_requests_total", "nv_inference_count"):
            out.family(name, "counter", "Successful slotted requests.", counts)
        out.family(
            "nv_inference_request_failure",
            "counter",
            "Slotted requests answered 500 by error_ratio.",
            self._per_model({k: float(v) for k, v in self._failures.items()}),
        )

    def _export_demo(self, out: _Exposition) -> None:
        """The demo server's own families: answers by route and code, slots, busy, queued."""
        out.family(
            "mlload_demo_requests_total",
            "counter",
            "HTTP requests answered, by route template and status code.",
            [
                ({"endpoint": endpoint, "code": str(code)}, count)
                for (endpoint, code), count in sorted(self._requests.items())
            ],
        )
        out.family("mlload_demo_slots", "gauge", "Worker slots.", [({}, self.settings.slots)])
        out.family(
            "mlload_demo_busy_slots", "gauge", "Slots in use now.", [({}, len(self._in_slot))]
        )
        out.family(
            "mlload_demo_queued_requests",
            "gauge",
            "Requests waiting for a slot.",
            [({}, self._queued)],
        )


async def _write_chunked(writer: asyncio.StreamWriter, pieces: AsyncGenerator[bytes, None]) -> None:
    """Send ``pieces`` as HTTP/1.1 chunks, each flushed at once; close them if the peer left."""
    try:
        async for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
    finally:
        await pieces.aclose()


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    """Sleep until ``loop.time() >= deadline`` (an absolute deadline, unlike asyncio.sleep)."""
    if deadline <= loop.time():
        return
    future: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(deadline, _resolve, future)
    try:
        await future
    finally:
        handle.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# --------------------------------------------------------------------------- command line


_KNOB_HELP = {
    "service_ms": "service time of /work in ms",
    "classify_ms": "service time of POST /v1/classify in ms",
    "embed_ms": "service time of POST /v1/embed in ms",
    "infer_ms": "service time of POST /v2/models/{model}/infer in ms",
    "slowdown": "multiplier on every service time, 1.3 = 30 %% slower",
    "error_ratio": "fraction of slotted requests answered 500",
    "stall_every_s": "freeze slot processing every this many seconds, 0 = never",
    "stall_s": "length of each freeze in seconds",
    "cpu_ms": "extra real CPU work per slotted request in ms",
    "knee": "past this many requests in service each one slows down, 0 = off",
    "knee_penalty": "hold time x (1 + this x (busy - knee)) past the knee",
    "error_above": "past this many requests in flight arrivals may get 503, 0 = off",
    "error_growth": "503 probability = min(1, this x (in flight - error_above))",
    "spell_s": "a slow spell this many seconds long from the next request, 0 = off",
    "spell_factor": "service-time multiplier during a slow spell",
    "llm_batch": "LLM engine: most sequences in the batch",
    "llm_prefill_ms_per_token": "LLM engine: prefill ms per prompt token",
    "llm_decode_ms": "LLM engine: fixed ms of a decode step",
    "llm_decode_ms_per_seq": "LLM engine: decode step ms added per sequence in the batch",
    "llm_stream_options": "LLM engine: 0 honours stream_options, 1 ignores it, 2 rejects it (400)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlload.demo",
        description="Demo ML inference server with known capacity: slots / service time.",
    )
    defaults = DemoSettings()
    parser.add_argument("--host", default=defaults.host, help="bind address (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=8000, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--slots", type=int, default=defaults.slots, help="worker slots (default: %(default)s)"
    )
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="error RNG seed (default: %(default)s)"
    )
    for name in ("pod_name", "triton_pod_name", "application", "namespace"):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            default=getattr(defaults, name),
            help="metric label (default: %(default)s)",
        )
    for name, value in defaults.knobs.as_dict().items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=value,
            help=f"{_KNOB_HELP[name]} (default: %(default)s)",
        )
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> DemoSettings:
    """Parse command-line flags into :class:`DemoSettings`; bad values exit with status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        knobs = DemoKnobs(**{name: getattr(args, name) for name in DemoKnobs.field_names()})
        return DemoSettings(
            host=args.host,
            port=args.port,
            slots=args.slots,
            seed=args.seed,
            pod_name=args.pod_name,
            triton_pod_name=args.triton_pod_name,
            application=args.application,
            namespace=args.namespace,
            knobs=knobs,
        )
    except ConfigError as exc:
        parser.error(str(exc))


async def serve(settings: DemoSettings) -> None:
    """Run a :class:`DemoServer` until SIGTERM or SIGINT, printing the URL line first."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = DemoServer(settings)
    await server.start()
    print(URL_LINE_PREFIX + server.url, flush=True)
    try:
        await stop.wait()
    finally:
        await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m pytest_mlload.demo [flags]``."""
    asyncio.run(serve(settings_from_args(argv)))
    return 0


# --------------------------------------------------------------------------- child process

_START_ONLY = ("host", "slots", "seed", "pod_name", "triton_pod_name", "application", "namespace")


class DemoServerProcess:
    """The demo server in a child process on a free port, for tests and the example suite.

    ``DemoServerProcess(slots=4, service_ms=20, slowdown=1.3)`` takes any knob of
    :class:`DemoKnobs` and the start-up settings ``host``, ``slots``, ``seed``, ``pod_name``,
    ``triton_pod_name``, ``application`` and ``namespace``; ``extra_args`` are passed to the
    command line as they are. Use it as a context manager, or call :meth:`start` and
    :meth:`stop` (idempotent).
    """

    def __init__(self, *, extra_args: Sequence[str] = (), **knobs: Any) -> None:
        accepted = DemoKnobs.field_names() + _START_ONLY
        unknown = sorted(set(knobs) - set(accepted))
        if unknown:
            raise ConfigError(
                f"unknown demo server setting(s) {unknown}; accepted: {', '.join(accepted)}"
            )
        DemoKnobs().updated({k: v for k, v in knobs.items() if k in DemoKnobs.field_names()})
        self._args = [
            arg
            for name, value in knobs.items()
            for arg in ("--" + name.replace("_", "-"), str(value))
        ]
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._url: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def command(self) -> list[str]:
        """The child's command line."""
        return [
            sys.executable,
            "-m",
            "pytest_mlload.testing.demo",
            "--port",
            "0",
            *self._args,
            *self._extra_args,
        ]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the running server."""
        if self._url is None:
            raise RuntimeError("the demo server is not running; call start() first")
        return self._url

    @property
    def pid(self) -> int:
        """Process id of the child."""
        if self._process is None:
            raise RuntimeError("the demo server was never started; call start() first")
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has stopped, else None."""
        return None if self._process is None else self._process.poll()

    def start(self, timeout_s: float = 10.0) -> DemoServerProcess:
        """Spawn the server and wait (at most ``timeout_s``) for its URL line."""
        if self._process is not None:
            raise RuntimeError("this DemoServerProcess was already started")
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, "1")  # tiny matmuls: BLAS threads would only burn CPU
        # A file, not a pipe, so a chatty child never blocks; closed by close().
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        line = self._read_url_line(self._process, timeout_s)
        if not line.startswith(URL_LINE_PREFIX):
            self.stop()
            stderr = self._stderr_text()
            self.close()
            raise RuntimeError(
                f"demo server did not start within {timeout_s:g} s "
                f"(exit status {self.returncode}, first line {line!r}); stderr:\n{stderr}"
            )
        url = line[len(URL_LINE_PREFIX) :]
        self._url = url.replace("://0.0.0.0:", "://127.0.0.1:")
        return self

    @staticmethod
    def _read_url_line(process: subprocess.Popen[bytes], timeout_s: float) -> str:
        assert process.stdout is not None
        stdout = process.stdout
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return result[0].decode(errors="replace").strip() if result else ""

    def _stderr_text(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM the child, SIGKILL it after ``timeout_s``; safe to call twice."""
        process = self._process
        if process is not None:
            stop_process(process, grace_s=timeout_s)
        if process is not None and process.stdout is not None:
            process.stdout.close()
        self._url = None

    def wait(self, timeout_s: float = 5.0) -> int:
        """Wait for the child to exit by itself (e.g. after a signal); return its status."""
        if self._process is None:
            raise RuntimeError("the demo server was never started; call start() first")
        returncode = self._process.wait(timeout_s)
        self._url = None
        return returncode

    def close(self) -> None:
        """Stop the child and release its stderr buffer."""
        self.stop()
        if self._stderr is not None:
            self._stderr.close()

    def stderr_text(self) -> str:
        """What the child wrote to stderr so far (the last 4000 characters)."""
        return self._stderr_text()

    def request_json(self, path: str, payload: Any = None, timeout_s: float = 10.0) -> Any:
        """GET ``path`` (or POST ``payload`` as JSON) and decode the JSON answer."""
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json"},
            method="GET" if data is None else "POST",
        )
        try:
            with self._opener.open(request, timeout=timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if exc.code == 400:
                raise ConfigError(f"demo server rejected {path}: {detail}") from None
            raise

    def set_config(self, **knobs: float) -> dict[str, Any]:
        """Change knobs at runtime (``POST /admin/config``); returns the new config."""
        result: dict[str, Any] = self.request_json("/admin/config", knobs)
        return result

    def config(self) -> dict[str, Any]:
        """The current knobs and slot count (``GET /admin/config``)."""
        result: dict[str, Any] = self.request_json("/admin/config")
        return result

    def stats(self) -> dict[str, Any]:
        """The server's cumulative counters (``GET /admin/stats``)."""
        result: dict[str, Any] = self.request_json("/admin/stats")
        return result

    def metrics_text(self, timeout_s: float = 10.0) -> str:
        """The raw Prometheus exposition (``GET /metrics``)."""
        with self._opener.open(self.url + "/metrics", timeout=timeout_s) as response:
            text: str = response.read().decode()
            return text

    def __enter__(self) -> DemoServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    raise SystemExit(main())
