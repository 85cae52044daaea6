"""A simulated continuous-batching LLM engine and its OpenAI endpoints, with known truth.

The demo server (:mod:`pytest_mlload.testing.demo`) serves ``POST /v1/chat/completions``
and ``POST /v1/completions`` (``stream: true|false``) from one :class:`Engine`.

Engine model
------------
* A **batch** holds at most ``B`` sequences; requests beyond it wait FIFO for a place.
* A sequence admitted at ``a`` runs its **prefill** for ``p = prefill_ms_per_token × prompt
  tokens × slowdown`` and emits its first token at ``a + p`` (time to first token).
* Then each **decode step** emits one token and lasts ``d(b) = (decode_ms + decode_ms_per_seq
  × b) × slowdown`` where ``b`` is the number of sequences in the batch when the step
  starts: a bigger batch makes every sequence slower, as on a GPU.
* A sequence generates exactly ``max_tokens`` tokens (like ``ignore_eos``), one per chunk,
  then leaves the batch; the next waiting request takes its place at that instant.

Steps run per sequence (not on one global tick), so a sequence's pace is exactly ``d(b)``:
a real engine's shared step adds up to one step of jitter to the first decode token and
nothing to the averages. Deadlines are chained on a virtual timeline (a token is due one
step after the previous one was *due*, a queued request starts when its place was freed),
so asyncio's late wake-ups jitter single gaps but never slow the engine down.

Truth
-----
For ``N`` closed-loop users (each sends its next request when the previous one ended),
prompt length ``P``, ``T`` output tokens and ``ε`` of time per request outside the engine
(client and HTTP), :func:`truth` gives, with ``p`` and ``d`` as above:

* ``N ≤ B``: ``b = N``; TTFT = ``p``; TPOT = ``d(N)``; latency ``L = p + (T − 1)·d(N)``;
  request rate ``N / (L + ε)``.
* ``N > B``: the batch stays full, ``b = B``; service time ``S = p + (T − 1)·d(B)``; request
  rate ``X = B / S``; by Little's law latency ``L = N / X − ε``; TTFT ``= L − (T − 1)·d(B)``
  (the queueing wait plus ``p``); TPOT = ``d(B)``.

Up to ``B`` every request has the same figures in steady state, so goodput at ``N`` is the
request rate when TTFT, TPOT and latency all meet their SLOs, else 0. Past ``B`` the TTFT
and latency are *means*: FIFO queueing waits differ from request to request (in the exact
simulation some users never wait and others wait twice the mean), so there ``meets_slo``
judges the means and ``per_request`` is False. :func:`goodput_capacity` finds the
concurrency with the highest goodput. :func:`simulate` runs the real :class:`Engine`
under closed-loop users on a virtual clock (no sleeping) so tests can hold it to the truth.
:class:`SimulatedLlm` is a load generator for the capacity search whose requests have the
truth's figures (with seeded jitter), on the ``FakeClock`` of
:mod:`pytest_mlload.testing.simulate`.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import heapq
import itertools
import json
import math
import selectors
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pytest_mlload.errors import ConfigError

if TYPE_CHECKING:
    from pytest_mlload.load.controller import Samples

__all__ = [
    "Engine",
    "EngineKnobs",
    "LlmPoint",
    "LlmReply",
    "SimulatedLlm",
    "SimulatedRequest",
    "goodput_capacity",
    "openai_reply",
    "run_virtual",
    "simulate",
    "truth",
]

_T = TypeVar("_T")
_MAX_TOKENS = 4096
STREAM_OPTIONS_MODES = {0: "honour", 1: "ignore", 2: "reject"}


# --------------------------------------------------------------------------- knobs and truth


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineKnobs:
    """The engine's knobs (the demo's ``llm_*`` knobs and ``slowdown``)."""

    batch: int = 8
    """Most sequences in the batch at once (``B``)."""
    prefill_ms_per_token: float = 0.05
    """Prefill time per prompt token."""
    decode_ms: float = 4.0
    """Decode step time of a batch of zero (the fixed part)."""
    decode_ms_per_seq: float = 0.5
    """Decode step time added per sequence in the batch."""
    slowdown: float = 1.0
    """Multiplier on prefill and decode times."""
    stream_options: int = 0
    """0: honour ``stream_options.include_usage``; 1: ignore it (no usage chunk); 2: reject
    a request carrying ``stream_options`` with 400, as some servers do."""

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 4096:
            raise ConfigError(f"llm_batch must be in [1, 4096], got {self.batch!r}")
        for name in ("prefill_ms_per_token", "decode_ms", "decode_ms_per_seq"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 10_000):
                raise ConfigError(f"llm_{name} must be in [0, 10000] ms, got {value!r}")
        if self.decode_ms + self.decode_ms_per_seq <= 0:
            raise ConfigError("llm_decode_ms + llm_decode_ms_per_seq must be > 0")
        if not 0 < self.slowdown <= 100:
            raise ConfigError(f"slowdown must be in (0, 100], got {self.slowdown!r}")
        if self.stream_options not in STREAM_OPTIONS_MODES:
            raise ConfigError(
                f"llm_stream_options must be 0 (honour), 1 (ignore) or 2 (reject), "
                f"got {self.stream_options!r}"
            )

    @classmethod
    def from_demo(cls, knobs: Any) -> EngineKnobs:
        """The engine knobs held in a :class:`~pytest_mlload.testing.demo.DemoKnobs`."""
        batch, mode = float(knobs.llm_batch), float(knobs.llm_stream_options)
        if batch != int(batch) or mode != int(mode):
            raise ConfigError(
                f"llm_batch and llm_stream_options must be whole numbers, got "
                f"{knobs.llm_batch!r} and {knobs.llm_stream_options!r}"
            )
        return cls(
            batch=int(batch),
            prefill_ms_per_token=float(knobs.llm_prefill_ms_per_token),
            decode_ms=float(knobs.llm_decode_ms),
            decode_ms_per_seq=float(knobs.llm_decode_ms_per_seq),
            slowdown=float(knobs.slowdown),
            stream_options=int(mode),
        )

    def prefill_s(self, prompt_tokens: int) -> float:
        """Prefill time of a prompt, in seconds."""
        return self.prefill_ms_per_token * prompt_tokens * self.slowdown / 1000.0

    def step_s(self, batch: int) -> float:
        """One decode step with ``batch`` sequences in the batch, in seconds."""
        return (self.decode_ms + self.decode_ms_per_seq * batch) * self.slowdown / 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmPoint:
    """What the engine gives ``concurrency`` closed-loop users (times in ms)."""

    concurrency: int
    ttft_ms: float
    tpot_ms: float
    latency_ms: float
    per_request: bool
    """True when every request has these figures (``N ≤ B``); else TTFT and latency are
    means over requests (queueing waits vary)."""
    rps: float
    output_tokens_per_s: float
    meets_slo: bool
    """TTFT, TPOT and latency all within the SLOs given (True when none is given)."""
    goodput_rps: float
    """``rps`` when ``meets_slo``, else 0."""


def truth(
    knobs: EngineKnobs,
    *,
    concurrency: int,
    prompt_tokens: int,
    output_tokens: int,
    overhead_ms: float = 0.0,
    ttft_slo_ms: float | None = None,
    tpot_slo_ms: float | None = None,
    e2e_slo_ms: float | None = None,
) -> LlmPoint:
    """Expected TTFT, TPOT, latency and goodput at ``concurrency`` (module docstring)."""
    if concurrency < 1 or output_tokens < 1 or prompt_tokens < 0 or overhead_ms < 0:
        raise ConfigError(
            f"truth needs concurrency >= 1, output_tokens >= 1, prompt_tokens >= 0 and "
            f"overhead_ms >= 0, got {concurrency}, {output_tokens}, {prompt_tokens}, "
            f"{overhead_ms}"
        )
    p = knobs.prefill_s(prompt_tokens) * 1000.0
    b = min(concurrency, knobs.batch)
    d = knobs.step_s(b) * 1000.0
    decode = (output_tokens - 1) * d
    if concurrency <= knobs.batch:
        latency = p + decode
        rps = concurrency / ((latency + overhead_ms) / 1000.0)
    else:
        rps = knobs.batch / ((p + decode) / 1000.0)
        latency = max(concurrency / rps * 1000.0 - overhead_ms, p + decode)
    ttft = latency - decode
    meets = all(
        slo is None or value <= slo
        for value, slo in ((ttft, ttft_slo_ms), (d, tpot_slo_ms), (latency, e2e_slo_ms))
    )
    return LlmPoint(
        concurrency=concurrency,
        ttft_ms=ttft,
        tpot_ms=d,
        latency_ms=latency,
        per_request=concurrency <= knobs.batch,
        rps=rps,
        output_tokens_per_s=rps * output_tokens,
        meets_slo=meets,
        goodput_rps=rps if meets else 0.0,
    )


def goodput_capacity(
    knobs: EngineKnobs, *, max_concurrency: int = 1024, **kw: Any
) -> LlmPoint | None:
    """The concurrency (1..``max_concurrency``) with the highest goodput under the SLOs.

    ``kw`` are the arguments of :func:`truth` but ``concurrency``. None when no level meets
    the SLOs. Ties go to the lowest concurrency.
    """
    best: LlmPoint | None = None
    for n in range(1, max_concurrency + 1):
        point = truth(knobs, concurrency=n, **kw)
        if point.meets_slo and (best is None or point.goodput_rps > best.goodput_rps):
            best = point
    return best


# --------------------------------------------------------------------------- the engine


class Engine:
    """The continuous-batching engine on the running asyncio loop (module docstring).

    ``knobs`` is read at every step, so runtime changes (``slowdown``) apply at once.
    """

    def __init__(self, knobs: Callable[[], EngineKnobs]) -> None:
        self._knobs = knobs
        self._running = 0
        self._waiters: collections.deque[asyncio.Future[float]] = collections.deque()
        self.tokens = 0
        """Tokens generated so far."""

    @property
    def running(self) -> int:
        """Sequences in the batch now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests waiting for a place in the batch."""
        return sum(1 for f in self._waiters if not f.done())

    async def generate(self, prompt_tokens: int, output_tokens: int) -> AsyncGenerator[int, None]:
        """Yield token indices 0..``output_tokens``-1, each when the engine produced it.

        Close the generator (``contextlib.aclosing``) if you stop early: that frees the place.
        """
        loop = asyncio.get_running_loop()
        start = await self._admit(loop)
        due = start + self._knobs().prefill_s(prompt_tokens)
        try:
            for i in range(output_tokens):
                if i:
                    due += self._knobs().step_s(self._running)
                await _sleep_until(loop, due)
                self.tokens += 1
                yield i
        finally:
            self._release(min(due, loop.time()))

    async def _admit(self, loop: asyncio.AbstractEventLoop) -> float:
        """Take a place in the batch; return the (virtual) time the sequence starts."""
        now = loop.time()
        if self._running < self._knobs().batch and not self.waiting:
            self._running += 1
            return now
        future: asyncio.Future[float] = loop.create_future()
        self._waiters.append(future)
        try:
            freed = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(loop.time())  # the place was handed over as we were cancelled
            raise
        return max(now, freed)

    def _release(self, at: float) -> None:
        """Leave the batch at (virtual) time ``at``; hand the place to the next in line."""
        self._running -= 1
        batch = self._knobs().batch
        while self._waiters and self._running < batch:
            future = self._waiters.popleft()
            if not future.done():
                self._running += 1
                future.set_result(at)


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------- OpenAI endpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmReply:
    """An endpoint's answer: a whole body, or an SSE ``stream`` of body pieces."""

    status: int
    body: bytes = b""
    stream: AsyncGenerator[bytes, None] | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ask:
    chat: bool
    model: str
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool


_ids = itertools.count(1)


def _bad(message: str) -> LlmReply:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": 400}}
    return LlmReply(status=400, body=json.dumps(body).encode())


def _words(value: Any) -> int:
    """Prompt length: whitespace-separated words (the demo's tokenizer)."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content", "")) + _words(value.get("text", ""))
    return 0


def _parse_ask(payload: dict[str, Any], *, chat: bool, knobs: EngineKnobs) -> _Ask | LlmReply:
    """The request's parameters, or a 400 reply naming what is wrong."""
    if chat and not isinstance(payload.get("messages"), list):
        return _bad("messages must be a list of {role, content}")
    if not chat and not isinstance(payload.get("prompt"), str | list):
        return _bad("prompt must be a string or a list of strings")
    limit = payload.get("max_completion_tokens", payload.get("max_tokens", 16))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_TOKENS:
        return _bad(f"max_tokens must be an integer in [1, {_MAX_TOKENS}], got {limit!r}")
    options = payload.get("stream_options")
    if options is not None and knobs.stream_options == 2:
        return _bad("Unrecognized request argument supplied: stream_options")
    usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return _Ask(
        chat=chat,
        model=str(payload.get("model") or "demo"),
        prompt_tokens=_words(payload.get("messages") if chat else payload.get("prompt")),
        max_tokens=limit,
        stream=bool(payload.get("stream")),
        include_usage=usage and knobs.stream_options == 0,
    )


def _token_text(i: int) -> str:
    return f" t{i}"


def _usage(ask: _Ask) -> dict[str, int]:
    return {
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": ask.max_tokens,
        "total_tokens": ask.prompt_tokens + ask.max_tokens,
    }


def _chunk(ask: _Ask, rid: str, choice: dict[str, Any] | None, **extra: Any) -> bytes:
    obj = "chat.completion.chunk" if ask.chat else "text_completion"
    body: dict[str, Any] = {"id": rid, "object": obj, "created": int(time.time())}
    body["model"] = ask.model
    body["choices"] = [] if choice is None else [{"index": 0, **choice}]
    if ask.include_usage:
        body["usage"] = None  # OpenAI: null on every chunk but the last
    body.update(extra)
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _piece(ask: _Ask, text: str, finish: str | None) -> dict[str, Any]:
    if ask.chat:
        return {"delta": {"content": text} if text else {}, "finish_reason": finish}
    return {"text": text, "finish_reason": finish}


async def _sse(engine: Engine, ask: _Ask, fail: bool) -> AsyncGenerator[bytes, None]:
    rid = f"{'chatcmpl' if ask.chat else 'cmpl'}-{next(_ids)}"
    if ask.chat:  # the role-only chunk, flushed before prefill as many servers do
        yield _chunk(
            ask, rid, {"delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        )
    async with contextlib.aclosing(engine.generate(ask.prompt_tokens, ask.max_tokens)) as tokens:
        async for i in tokens:
            if fail:  # error_ratio: an error event after prefill, and no [DONE]
                error = {"message": "injected error (error_ratio)", "type": "server_error"}
                yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
                return
            yield _chunk(ask, rid, _piece(ask, _token_text(i), None))
    yield _chunk(ask, rid, _piece(ask, "", "length"))
    if ask.include_usage:
        yield _chunk(ask, rid, None, usage=_usage(ask))
    yield b"data: [DONE]\n\n"


async def _whole(engine: Engine, ask: _Ask, fail: bool) -> LlmReply:
    text = ""
    async with contextlib.aclosing(engine.generate(ask.prompt_tokens, ask.max_tokens)) as tokens:
        async for i in tokens:
            if fail:
                error = {"error": {"message": "injected error (error_ratio)", "code": 500}}
                return LlmReply(status=500, body=json.dumps(error).encode())
            text += _token_text(i)
    rid = f"{'chatcmpl' if ask.chat else 'cmpl'}-{next(_ids)}"
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
    if ask.chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion" if ask.chat else "text_completion",
        "created": int(time.time()),
        "model": ask.model,
        "choices": [choice],
        "usage": _usage(ask),
    }
    return LlmReply(status=200, body=json.dumps(body).encode())


async def openai_reply(
    engine: Engine, payload: Any, *, chat: bool, knobs: EngineKnobs, fail: bool = False
) -> LlmReply:
    """Answer one OpenAI chat (``chat=True``) or completions request body.

    ``fail`` (the demo's ``error_ratio``) makes it an error: a 500 for a whole answer, an SSE
    error event after prefill (and no ``[DONE]``) for a stream.
    """
    if not isinstance(payload, dict):
        return _bad("body must be a JSON object")
    ask = _parse_ask(payload, chat=chat, knobs=knobs)
    if isinstance(ask, LlmReply):
        return ask
    if ask.stream:
        return LlmReply(
            status=200, stream=_sse(engine, ask, fail), content_type="text/event-stream"
        )
    return await _whole(engine, ask, fail)


# --------------------------------------------------------------------------- virtual time


class _VirtualSelector(selectors.DefaultSelector):
    """A selector whose waits advance a virtual clock instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("virtual-time loop would wait forever: nothing is scheduled")
        self.now += max(timeout, 0.0)
        return []


def run_virtual(main: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run ``main()`` on an event loop whose clock only moves when every task waits.

    Timers fire in order at their exact due times and no time passes while code runs, so
    an engine run of minutes takes milliseconds and its timings are exact. No I/O.
    """
    selector = _VirtualSelector()
    loop = asyncio.SelectorEventLoop(selector)
    loop.time = lambda: selector.now  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulatedRequest:
    """One request of :func:`simulate` (seconds on the virtual clock)."""

    sent_s: float
    token_s: tuple[float, ...]

    @property
    def ttft_ms(self) -> float:
        """Send -> first token."""
        return (self.token_s[0] - self.sent_s) * 1000.0

    @property
    def tpot_ms(self) -> float:
        """(last token - first token) / (tokens - 1)."""
        n = len(self.token_s)
        return (self.token_s[-1] - self.token_s[0]) * 1000.0 / max(n - 1, 1)

    @property
    def latency_ms(self) -> float:
        """Send -> last token."""
        return (self.token_s[-1] - self.sent_s) * 1000.0


def simulate(
    knobs: EngineKnobs,
    *,
    concurrency: int,
    prompt_tokens: int,
    output_tokens: int,
    duration_s: float,
    overhead_ms: float = 0.0,
) -> list[SimulatedRequest]:
    """Closed-loop users against an :class:`Engine` for ``duration_s`` of virtual time.

    Each user sends, collects its tokens, waits ``overhead_ms`` and sends again; requests
    finished before ``duration_s`` are returned in completion order.
    """
    done: list[SimulatedRequest] = []

    async def user(engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        while loop.time() < duration_s:
            sent = loop.time()
            times = []
            async with contextlib.aclosing(engine.generate(prompt_tokens, output_tokens)) as gen:
                async for _ in gen:
                    times.append(loop.time())
            done.append(SimulatedRequest(sent_s=sent, token_s=tuple(times)))
            await asyncio.sleep(overhead_ms / 1000.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        engine = Engine(lambda: knobs)
        await asyncio.gather(*(user(engine, loop) for _ in range(concurrency)))

    run_virtual(main)
    return [r for r in done if r.token_s[-1] <= duration_s]


# --------------------------------------------------------------------------- load generator


@dataclass(slots=True)
class SimulatedLlm:
    """Closed-loop users streaming from the engine's :func:`truth`, for the capacity search.

    A request issued while ``N`` users are live takes the figures of ``truth(N)``: TTFT and
    TPOT each times a lognormal factor of sigma ``jitter`` (seeded), latency ``TTFT + (T - 1)
    x TPOT``; the user sends again ``overhead_ms`` after it ended (the truth's ``ε``). With
    ``error_ratio`` a request fails after its prefill, like the demo's error event. It is a
    :class:`~pytest_mlload.load.controller.LoadGenerator`; drive it with
    ``FakeClock(simulated)``. Past the batch the truth's TTFT is a mean, so SLOs that bind
    there are not per-request exact (see the module docstring).
    """

    knobs: EngineKnobs = field(default_factory=EngineKnobs)
    prompt_tokens: int = 256
    output_tokens: int = 32
    overhead_ms: float = 1.0
    jitter: float = 0.01
    error_ratio: float = 0.0
    seed: int = 0
    now: float = 0.0
    _rng: Any = None
    _events: list[tuple[float, int, str, int]] = field(default_factory=list)
    _seq: int = 0
    _alive: set[int] = field(default_factory=set)
    _next_user: int = 0
    _truth: dict[int, LlmPoint] = field(default_factory=dict)
    _end: list[float] = field(default_factory=list)
    _lat: list[float] = field(default_factory=list)
    _ok: list[bool] = field(default_factory=list)
    _stream: list[dict[str, Any]] = field(default_factory=list)
    _pending: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def point(self, users: int) -> LlmPoint:
        """The truth at ``users`` for this generator's prompt, output and overhead."""
        if users not in self._truth:
            self._truth[users] = truth(
                self.knobs,
                concurrency=users,
                prompt_tokens=self.prompt_tokens,
                output_tokens=self.output_tokens,
                overhead_ms=self.overhead_ms,
            )
        return self._truth[users]

    def _push(self, t: float, kind: str, user: int, figures: dict[str, Any] | None = None) -> None:
        self._seq += 1
        if figures is not None:
            self._pending[self._seq] = figures
        heapq.heappush(self._events, (t, self._seq, kind, user))

    def _issue(self, user: int, t: float) -> None:
        p = self.point(max(len(self._alive), 1))
        ttft, tpot = (float(v) for v in np.exp(self._rng.normal(0.0, self.jitter, 2)))
        ttft, tpot = p.ttft_ms * ttft, p.tpot_ms * tpot
        ok = not (self.error_ratio > 0 and self._rng.random() < self.error_ratio)
        n = self.output_tokens
        latency = ttft + (n - 1) * tpot if ok else ttft
        figures = {
            "ok": ok,
            "error": None if ok else "error event in the stream: injected error",
            "ttfb_ms": 0.5,
            "ttft_ms": ttft if ok else None,
            "tpot_ms": tpot if ok and n > 1 else None,
            "latency_ms": latency,
            "itl_ms": [tpot] * (n - 1) if ok else [],
            "output_tokens": n if ok else 0,
            "token_source": "usage",
            "chunks": n if ok else 0,
            "usage_tokens": n if ok else None,
        }
        self._push(t + latency / 1000.0, "done", user, figures)

    def _process_until(self, t_end: float) -> None:
        while self._events and self._events[0][0] <= t_end:
            t, seq, kind, user = heapq.heappop(self._events)
            if kind == "issue":
                if user in self._alive:
                    self._issue(user, t)
                continue
            figures = self._pending.pop(seq)
            self._end.append(t)
            self._lat.append(figures["latency_ms"])
            self._ok.append(figures["ok"])
            self._stream.append(figures)
            if user in self._alive:
                self._push(t + self.overhead_ms / 1000.0, "issue", user)
        self.now = max(self.now, t_end)

    def set_users(self, users: int) -> None:
        """Grow or shrink the set of live users (new users send at once)."""
        from pytest_mlload.testing.simulate import set_live_users

        set_live_users(self, users)

    def count_since(self, t: float) -> int:
        """Requests completed at or after ``t`` (up to now)."""
        from pytest_mlload.testing.simulate import completed_since

        return completed_since(self._end, self.now, t)

    def window(self, start_s: float, stop_s: float) -> Samples:
        """Requests completed in ``[start_s, stop_s]``, with their stream figures."""
        from pytest_mlload.load.controller import Samples
        from pytest_mlload.load.streaming import StreamSamples

        i = bisect.bisect_left(self._end, start_s)
        j = bisect.bisect_right(self._end, stop_s)
        rows: list[dict[str, Any] | None] = list(self._stream[i:j])
        errors = tuple(str(r["error"]) for r in self._stream[i:j] if not r["ok"])
        return Samples(
            np.asarray(self._end[i:j]),
            np.asarray(self._lat[i:j]),
            np.asarray(self._ok[i:j], dtype=bool),
            np.asarray(["chat"] * (j - i), dtype=object),
            start_s,
            stop_s,
            errors,
            stream=StreamSamples.from_records(rows),
        )
