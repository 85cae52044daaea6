"""Timing an OpenAI-style streaming (SSE) response: TTFT, inter-token gaps, TPOT, tokens.

Pure parsing and bookkeeping, plus one small piece of glue for Locust responses; nothing here
imports Locust. The figures follow the definitions the LLM benchmarks agree on (see
``docs/llm-integration.md`` for where they differ):

* **TTFB** = send -> response headers (the first byte of the response).
* **TTFT** = send -> the first chunk with a non-empty content delta (chat ``delta.content``,
  ``delta.reasoning_content`` / ``delta.reasoning`` or ``delta.tool_calls``; completions
  ``choices[0].text``). The role-only first chunk (``{"role": "assistant", "content": ""}``)
  is not a token: servers flush it before prefill ends.
* **ITL** = the gaps between consecutive content chunks: a distribution, one value per gap
  (a chunk may carry several tokens; the gaps are what a reader sees).
* **TPOT** = (last content chunk - TTFT) / (output tokens - 1): the mean pace after the
  first token. It ends at the last content chunk, as vLLM and AIPerf do: the trailing usage
  chunk and ``[DONE]`` carry no token.
* **latency** = send -> end of the stream (``data: [DONE]``): what the user waits for.
* **output tokens** = ``usage.completion_tokens`` when the server sent usage (requested
  with ``stream_options: {"include_usage": true}``), ``token_source="usage"``; else the
  number of content chunks, ``token_source="chunks"`` (one token per chunk, which
  undercounts servers that bundle tokens).

A stream is a **failure** when it carries an error event, ends without ``data: [DONE]``
(cut short: the usage chunk may be missing too), or ends without any content. A failure
still reports its timing so far.

Using it from your own TaskSet (either Locust client; ``stream=True`` and
``catch_response=True`` are both needed)::

    from pytest_mlload.load.streaming import record_stream

    sent = time.perf_counter()
    with self.client.post("/v1/chat/completions", json=body, name="chat",
                          stream=True, catch_response=True) as response:
        figures = record_stream(response, sent_s=sent)

:func:`record_stream` reads the body as it arrives, marks the response as success or
failure, sets Locust's response time to the stream's latency and puts the figures in the
request event's ``context`` under :data:`CONTEXT_KEY`, where the load driver keeps them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "CONTEXT_KEY",
    "SseDecoder",
    "SseMessage",
    "StreamChunk",
    "StreamFigures",
    "StreamRecorder",
    "StreamSamples",
    "iter_body",
    "parse_chunk",
    "record_stream",
    "summarize_streams",
]

CONTEXT_KEY = "mlload_stream"
"""Key of the stream figures in a Locust request event's ``context``."""

DONE = "[DONE]"


# --------------------------------------------------------------------------- SSE framing


@dataclass(frozen=True, slots=True, kw_only=True)
class SseMessage:
    """One server-sent event: its ``event:`` type (default ``message``) and joined data."""

    event: str = "message"
    data: str = ""


@dataclass(slots=True)
class SseDecoder:
    """Incremental SSE decoder (WHATWG event-stream rules, the subset servers use).

    Feed bytes as they arrive; get the events completed so far. Lines end with LF, CRLF or
    CR; ``data:`` lines of one event are joined with newlines; an empty line ends the event;
    lines starting with ``:`` are comments (keep-alives). An event left unterminated when
    the stream ends is discarded, as the standard says.
    """

    _buffer: bytes = b""
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def feed(self, data: bytes) -> list[SseMessage]:
        """Decode ``data``; return the events it completed."""
        self._buffer += data
        out: list[SseMessage] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return out
            end, skip = cut
            line = self._buffer[:end].decode("utf-8", "replace")
            self._buffer = self._buffer[end + skip :]
            message = self._line(line)
            if message is not None:
                out.append(message)

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data:
                self._event = "message"
                return None
            message = SseMessage(event=self._event, data="\n".join(self._data))
            self._event, self._data = "message", []
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or "message"
        return None  # id:, retry: and unknown fields carry nothing we time


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Index of the first line end in ``buffer`` and its length, or None."""
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    if cr == -1 or (lf != -1 and lf < cr):
        return None if lf == -1 else (lf, 1)
    if cr == len(buffer) - 1:
        return None  # a CR at the end may be the first half of CRLF: wait for more
    return (cr, 2) if buffer[cr + 1 : cr + 2] == b"\n" else (cr, 1)


# --------------------------------------------------------------------------- chunk content


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamChunk:
    """What one SSE event of an OpenAI stream says, as far as timing is concerned."""

    done: bool = False
    """``data: [DONE]``: the stream ended normally."""
    text: str = ""
    """Content of the first choice (chat delta content/reasoning/tool calls, or text)."""
    completion_tokens: int | None = None
    """``usage.completion_tokens`` when the event carries usage (the include_usage chunk)."""
    finish_reason: str | None = None
    error: str | None = None
    """The server's error message (an error event or an ``{"error": ...}`` body)."""


def parse_chunk(message: SseMessage) -> StreamChunk:
    """Classify one SSE event of an OpenAI chat or completions stream."""
    data = message.data.strip()
    if data == DONE:
        return StreamChunk(done=True)
    try:
        payload = json.loads(data)
    except ValueError:
        if message.event == "error":
            return StreamChunk(error=data[:200] or "error event")
        return StreamChunk(error=f"not JSON: {data[:80]!r}")
    if not isinstance(payload, dict):
        return StreamChunk(error=f"not a JSON object: {data[:80]!r}")
    if message.event == "error" or "error" in payload:
        return StreamChunk(error=_error_text(payload.get("error", payload)))
    usage = payload.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    choices = payload.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    return StreamChunk(
        text=_choice_text(first),
        completion_tokens=int(tokens) if isinstance(tokens, int | float) else None,
        finish_reason=first.get("finish_reason"),
    )


def _choice_text(choice: dict[str, Any]) -> str:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in ("content", "reasoning_content", "reasoning"):
            if isinstance(delta.get(key), str) and delta[key]:
                return str(delta[key])
        return "<tool_calls>" if delta.get("tool_calls") else ""
    text = choice.get("text")
    return text if isinstance(text, str) else ""


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)[:200]
    return str(error)[:200]


# --------------------------------------------------------------------------- the recorder


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamFigures:
    """The timing of one streamed response (times in ms from the send)."""

    ok: bool
    error: str | None
    """Why the stream failed (None when ``ok``)."""
    ttfb_ms: float | None
    ttft_ms: float | None
    latency_ms: float
    """Send -> end of the stream (or of what arrived, for a failure)."""
    last_token_ms: float | None
    itl_ms: tuple[float, ...]
    """Gaps between consecutive content chunks."""
    output_tokens: int
    token_source: str
    """``usage`` (the server's count) or ``chunks`` (content chunks counted)."""
    chunks: int
    """Content chunks received."""
    usage_tokens: int | None
    """``usage.completion_tokens`` if the server sent it (kept to cross-check chunks)."""

    @property
    def tpot_ms(self) -> float | None:
        """(last content chunk - TTFT) / (output tokens - 1); None under two tokens."""
        if self.ttft_ms is None or self.last_token_ms is None or self.output_tokens < 2:
            return None
        return (self.last_token_ms - self.ttft_ms) / (self.output_tokens - 1)

    def to_context(self) -> dict[str, Any]:
        """JSON-ready form carried in the Locust request event's ``context``."""
        return {
            "ok": self.ok,
            "error": self.error,
            "ttfb_ms": self.ttfb_ms,
            "ttft_ms": self.ttft_ms,
            "tpot_ms": self.tpot_ms,
            "latency_ms": self.latency_ms,
            "itl_ms": list(self.itl_ms),
            "output_tokens": self.output_tokens,
            "token_source": self.token_source,
            "chunks": self.chunks,
            "usage_tokens": self.usage_tokens,
        }


@dataclass(slots=True)
class StreamRecorder:
    """Feeds an SSE byte stream with arrival times; :meth:`finish` gives the figures.

    All times are seconds on one clock (``time.perf_counter`` in :func:`record_stream`,
    anything in tests): ``sent_s`` when the request went out, then :meth:`headers` when
    the response headers arrived, :meth:`feed` for each piece of body, :meth:`finish` at
    the end of the body. Pure: no I/O, no clock of its own.
    """

    sent_s: float
    _decoder: SseDecoder = field(default_factory=SseDecoder)
    _headers_s: float | None = None
    _token_s: list[float] = field(default_factory=list)
    _usage: int | None = None
    _done: bool = False
    _error: str | None = None

    def headers(self, now_s: float) -> None:
        """The response headers arrived (time to first byte)."""
        if self._headers_s is None:
            self._headers_s = now_s

    def feed(self, data: bytes, now_s: float) -> None:
        """A piece of the body arrived at ``now_s``."""
        self.headers(now_s)
        for message in self._decoder.feed(data):
            if self._done or self._error is not None:
                continue  # nothing after [DONE] or an error counts
            chunk = parse_chunk(message)
            if chunk.error is not None:
                self._error = f"error event in the stream: {chunk.error}"
            elif chunk.done:
                self._done = True
            else:
                if chunk.text:
                    self._token_s.append(now_s)
                if chunk.completion_tokens is not None:
                    self._usage = chunk.completion_tokens

    def fail(self, reason: str) -> None:
        """Mark the stream failed (the read raised, the status was not 200, ...)."""
        if self._error is None:
            self._error = reason

    def finish(self, now_s: float) -> StreamFigures:
        """The figures of the stream that ended at ``now_s``."""
        error = self._error
        if error is None and not self._done:
            error = "the stream ended before data: [DONE] (cut short)"
        if error is None and not self._token_s:
            error = "the stream ended without any content delta (no token to time)"
        ms = [(t - self.sent_s) * 1000.0 for t in self._token_s]
        source = "usage" if self._usage is not None else "chunks"
        return StreamFigures(
            ok=error is None,
            error=error,
            ttfb_ms=None if self._headers_s is None else (self._headers_s - self.sent_s) * 1e3,
            ttft_ms=ms[0] if ms else None,
            latency_ms=(now_s - self.sent_s) * 1000.0,
            last_token_ms=ms[-1] if ms else None,
            itl_ms=tuple(b - a for a, b in zip(ms, ms[1:], strict=False)),
            output_tokens=self._usage if self._usage is not None else len(ms),
            token_source=source,
            chunks=len(ms),
            usage_tokens=self._usage,
        )


# --------------------------------------------------------------------------- Locust glue


def iter_body(response: Any) -> Iterator[bytes]:
    """The body of a streamed Locust response, piece by piece as it arrives.

    FastHttpUser (geventhttpclient): line by line (its ``read(n)`` would wait for ``n``
    bytes and bunch tokens together). HttpUser (requests): each HTTP chunk as received.
    """
    raw = getattr(response, "_response", None)
    if raw is not None and hasattr(raw, "readline"):
        while line := raw.readline(b"\n"):
            yield bytes(line)
        return
    yield from response.iter_content(chunk_size=None)


def record_stream(
    response: Any, *, sent_s: float, clock: Callable[[], float] = time.perf_counter
) -> StreamFigures:
    """Read a streamed response opened with ``catch_response=True`` and report it.

    Call inside the ``with`` block, right after the request returned (that instant is the
    time to first byte). Marks the response success or failure, sets Locust's response time
    to the stream latency and stores :meth:`StreamFigures.to_context` in the event context.
    """
    recorder = StreamRecorder(sent_s=sent_s)
    recorder.headers(clock())
    status = int(getattr(response, "status_code", 0) or 0)
    if status != 200:
        text = (getattr(response, "text", "") or "")[:200]
        recorder.fail(f"HTTP {status or 'error'}: {text or getattr(response, 'error', '')}")
    else:
        try:
            for piece in iter_body(response):
                recorder.feed(piece, clock())
        except Exception as exc:  # a reset or timeout mid-stream: the stream is cut
            recorder.fail(f"reading the stream failed: {type(exc).__name__}: {exc}")
    figures = recorder.finish(clock())
    meta = response.request_meta
    meta["response_time"] = figures.latency_ms
    meta["context"] = {**(meta.get("context") or {}), CONTEXT_KEY: figures.to_context()}
    if figures.ok:
        response.success()
    else:
        response.failure(figures.error)
    return figures


# --------------------------------------------------------------------------- summaries


def summarize_streams(records: list[dict[str, Any]], duration_s: float) -> dict[str, Any]:
    """Exact percentiles of the stream figures of one window (``to_context`` dicts).

    Timing percentiles are over successful streams; ITL pools every gap of every one.
    ``token_source`` is ``usage``, ``chunks`` or ``mixed``. Figures are None when absent.
    """
    ok = [r for r in records if r.get("ok")]

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    ttft = [r["ttft_ms"] for r in ok if r.get("ttft_ms") is not None]
    tpot = [r["tpot_ms"] for r in ok if r.get("tpot_ms") is not None]
    e2e = [r["latency_ms"] for r in ok]
    itl = [g for r in ok for g in r.get("itl_ms", ())]
    sources = sorted({r["token_source"] for r in ok})
    return {
        "requests": len(records),
        "ok": len(ok),
        "ttft_p50_ms": pct(ttft, 50),
        "ttft_p99_ms": pct(ttft, 99),
        "tpot_p50_ms": pct(tpot, 50),
        "tpot_p99_ms": pct(tpot, 99),
        "itl_p50_ms": pct(itl, 50),
        "itl_p99_ms": pct(itl, 99),
        "e2e_p99_ms": pct(e2e, 99),
        "output_tokens_per_s": sum(r["output_tokens"] for r in ok) / max(duration_s, 1e-9),
        "token_source": sources[0] if len(sources) == 1 else ("mixed" if sources else None),
    }


# --------------------------------------------------------------------------- per window


def _floats(values: list[Any]) -> np.ndarray:
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSamples:
    """The stream figures of one window's requests, row for row with its latencies.

    A row of a request that did not stream (a plain request in a mixed window) has
    ``streamed`` False and nan figures; a failure keeps the timing it had (nan where absent).
    ``itl_ms`` pools every inter-chunk gap of the window, ``itl_row`` the row each came from.
    """

    streamed: np.ndarray
    ttfb_ms: np.ndarray
    ttft_ms: np.ndarray
    tpot_ms: np.ndarray
    output_tokens: np.ndarray
    chunks: np.ndarray
    usage: np.ndarray
    """True where the token count came from the server's usage chunk."""
    itl_ms: np.ndarray
    itl_row: np.ndarray

    @classmethod
    def from_records(cls, records: list[dict[str, Any] | None]) -> StreamSamples | None:
        """Rows from :meth:`StreamFigures.to_context` dicts (None: not streamed); None when
        no request of the window streamed."""
        if not any(r is not None for r in records):
            return None
        rows = [r or {} for r in records]
        gaps = [(i, float(g)) for i, r in enumerate(rows) for g in r.get("itl_ms") or ()]
        return cls(
            streamed=np.asarray([r is not None for r in records], dtype=bool),
            ttfb_ms=_floats([r.get("ttfb_ms") for r in rows]),
            ttft_ms=_floats([r.get("ttft_ms") for r in rows]),
            tpot_ms=_floats([r.get("tpot_ms") for r in rows]),
            output_tokens=np.asarray([int(r.get("output_tokens") or 0) for r in rows]),
            chunks=np.asarray([int(r.get("chunks") or 0) for r in rows]),
            usage=np.asarray([r.get("token_source") == "usage" for r in rows], dtype=bool),
            itl_ms=np.asarray([g for _, g in gaps], dtype=float),
            itl_row=np.asarray([i for i, _ in gaps], dtype=int),
        )

    def select(self, mask: np.ndarray) -> StreamSamples:
        """The rows where ``mask`` is True (and their gaps)."""
        keep = mask[self.itl_row] if self.itl_row.size else np.zeros(0, dtype=bool)
        renumber = np.cumsum(mask) - 1
        return StreamSamples(
            streamed=self.streamed[mask],
            ttfb_ms=self.ttfb_ms[mask],
            ttft_ms=self.ttft_ms[mask],
            tpot_ms=self.tpot_ms[mask],
            output_tokens=self.output_tokens[mask],
            chunks=self.chunks[mask],
            usage=self.usage[mask],
            itl_ms=self.itl_ms[keep],
            itl_row=renumber[self.itl_row[keep]] if keep.size else self.itl_row[keep],
        )
