"""SSE parsing and stream timing on recorded byte streams: no network, explicit times."""

from __future__ import annotations

import json

import pytest

from pytest_mlload.load.streaming import (
    CONTEXT_KEY,
    SseDecoder,
    SseMessage,
    StreamRecorder,
    parse_chunk,
    record_stream,
    summarize_streams,
)


def chat_chunk(delta: dict | None, finish: str | None = None, **extra: object) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


ROLE = chat_chunk({"role": "assistant", "content": ""})
DONE = b"data: [DONE]\n\n"
USAGE = chat_chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11})
FINISH = chat_chunk({}, "length")


def content(text: str) -> bytes:
    return chat_chunk({"content": text})


def feed_all(pieces: list[tuple[float, bytes]], *, sent_s: float = 0.0, end_s: float | None = None):
    rec = StreamRecorder(sent_s=sent_s)
    for t, data in pieces:
        rec.feed(data, t)
    return rec.finish(end_s if end_s is not None else pieces[-1][0])


# --------------------------------------------------------------------------- SSE framing


def test_decoder_joins_data_lines_skips_comments_and_handles_any_line_end():
    raw = (
        b": keep-alive\r\nevent: error\r\ndata: a\r\ndata: b\r\n\r\ndata: c\rdata: d\r\rdata: e\n\n"
    )
    assert SseDecoder().feed(raw) == [
        SseMessage(event="error", data="a\nb"),
        SseMessage(data="c\nd"),
        SseMessage(data="e"),
    ]


def test_decoder_gives_the_same_events_fed_one_byte_at_a_time():
    raw = (ROLE + content("Hel") + content("lo") + USAGE + DONE).replace(b"\n", b"\r\n")
    whole = SseDecoder().feed(raw)
    decoder = SseDecoder()
    split = [m for i in range(len(raw)) for m in decoder.feed(raw[i : i + 1])]
    assert split == whole and len(whole) == 5


def test_decoder_discards_an_unterminated_event():
    decoder = SseDecoder()
    assert decoder.feed(b'data: {"choices": []}\n') == []  # no blank line yet


# --------------------------------------------------------------------------- chunk content


@pytest.mark.parametrize(
    ("data", "text", "tokens", "done", "error"),
    [
        (ROLE, "", None, False, None),  # the role-only chunk is not a token
        (content("hi"), "hi", None, False, None),
        (USAGE, "", 6, False, None),  # usage chunk: empty choices
        (DONE, "", None, True, None),
        (chat_chunk({"reasoning_content": "think"}), "think", None, False, None),
        (chat_chunk({"tool_calls": [{"index": 0}]}), "<tool_calls>", None, False, None),
        (b'data: {"choices": [{"index": 0, "text": " t0"}]}\n\n', " t0", None, False, None),
        (b'data: {"error": {"message": "overloaded"}}\n\n', "", None, False, "overloaded"),
        (b"event: error\ndata: upstream died\n\n", "", None, False, "upstream died"),
        (b"data: not json\n\n", "", None, False, "not JSON: 'not json'"),
    ],
)
def test_parse_chunk(data, text, tokens, done, error):
    (message,) = SseDecoder().feed(data)
    chunk = parse_chunk(message)
    assert (chunk.text, chunk.completion_tokens, chunk.done, chunk.error) == (
        text,
        tokens,
        done,
        error,
    )


# --------------------------------------------------------------------------- the recorder


def test_usage_stream_timings():
    # role chunk flushed at 5 ms (before prefill), tokens at 40, 50, 70 ms; the server says
    # 6 tokens (two per chunk), so TPOT divides by 5, not by 2
    fig = feed_all(
        [(0.005, ROLE), (0.040, content("a")), (0.050, content("b")), (0.070, content("c"))]
        + [(0.071, FINISH + USAGE), (0.072, DONE)],
        end_s=0.073,
    )
    assert fig.ok and fig.error is None
    assert fig.ttfb_ms == pytest.approx(5.0)
    assert fig.ttft_ms == pytest.approx(40.0)  # not the role chunk's 5 ms
    assert fig.itl_ms == pytest.approx((10.0, 20.0))
    assert (fig.output_tokens, fig.token_source, fig.chunks, fig.usage_tokens) == (6, "usage", 3, 6)
    assert fig.tpot_ms == pytest.approx((70.0 - 40.0) / 5)
    assert fig.latency_ms == pytest.approx(73.0)
    assert fig.last_token_ms == pytest.approx(70.0)


def test_no_usage_counts_chunks():
    fig = feed_all([(0.01, ROLE), (0.02, content("a")), (0.03, content("b")), (0.04, DONE)])
    assert fig.ok
    assert (fig.output_tokens, fig.token_source, fig.usage_tokens) == (2, "chunks", None)
    assert fig.tpot_ms == pytest.approx(10.0)


def test_headers_time_is_ttfb_when_given():
    rec = StreamRecorder(sent_s=1.0)
    rec.headers(1.002)
    rec.feed(content("a") + DONE, 1.010)
    fig = rec.finish(1.011)
    assert fig.ttfb_ms == pytest.approx(2.0) and fig.ttft_ms == pytest.approx(10.0)
    assert fig.tpot_ms is None  # one token: no pace to measure


def test_error_event_is_a_failure_and_later_chunks_are_ignored():
    error = b'event: error\ndata: {"error": {"message": "CUDA out of memory"}}\n\n'
    fig = feed_all([(0.01, content("a")), (0.02, error), (0.03, content("b") + DONE)])
    assert not fig.ok
    assert fig.error == "error event in the stream: CUDA out of memory"
    assert fig.chunks == 1  # the chunk after the error does not count


def test_cut_stream_is_a_failure_never_a_success():
    fig = feed_all([(0.01, ROLE), (0.02, content("a")), (0.03, content("b"))])
    assert not fig.ok and "cut short" in (fig.error or "")
    assert fig.ttft_ms == pytest.approx(20.0)  # what arrived is still timed


def test_cut_inside_an_event_is_a_failure():
    fig = feed_all([(0.01, content("a")), (0.02, DONE[:-2])])  # [DONE] never terminated
    assert not fig.ok and "cut short" in (fig.error or "")


def test_stream_without_content_is_a_failure():
    fig = feed_all([(0.01, ROLE), (0.02, FINISH), (0.03, DONE)])
    assert not fig.ok and "without any content" in (fig.error or "")
    assert fig.ttft_ms is None


def test_to_context_is_json():
    fig = feed_all([(0.01, content("a")), (0.02, content("b")), (0.03, USAGE + DONE)])
    ctx = json.loads(json.dumps(fig.to_context()))
    assert ctx["tpot_ms"] == pytest.approx(10.0 / 5) and ctx["token_source"] == "usage"
    assert ctx["itl_ms"] == pytest.approx([10.0])


def test_summarize_streams_exact_percentiles_over_successes():
    good = [
        feed_all([(0.0, b""), (t, content("a")), (t + 0.01, content("b")), (t + 0.011, DONE)])
        for t in (0.01, 0.02, 0.03, 0.04)
    ]
    bad = feed_all([(0.5, content("a"))])  # cut: excluded from the timings
    summary = summarize_streams([f.to_context() for f in [*good, bad]], duration_s=2.0)
    assert (summary["requests"], summary["ok"]) == (5, 4)
    assert summary["ttft_p50_ms"] == pytest.approx(25.0)
    assert summary["tpot_p99_ms"] == pytest.approx(10.0)
    assert summary["output_tokens_per_s"] == pytest.approx(8 / 2.0)
    assert summary["token_source"] == "chunks"


# --------------------------------------------------------------------------- Locust glue


class FakeSocketResponse:
    """geventhttpclient's response: ``readline`` gives one line as soon as it arrived."""

    def __init__(self, body: bytes, clock: FakeClock, step_s: float) -> None:
        self._lines = body.splitlines(keepends=True)
        self._clock, self._step = clock, step_s

    def readline(self, sep: bytes = b"\r\n") -> bytes:
        assert sep == b"\n"
        self._clock.now += self._step
        return self._lines.pop(0) if self._lines else b""


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLocustResponse:
    """The parts of Locust's ResponseContextManager that record_stream uses."""

    def __init__(self, status: int, body: bytes, clock: FakeClock) -> None:
        self.status_code = status
        self.text = body.decode() if status != 200 else ""
        self._response = FakeSocketResponse(body, clock, 0.001)
        self.request_meta: dict = {"response_time": 1.0, "context": {"user": "u"}}
        self.outcome: object = None

    def success(self) -> None:
        self.outcome = True

    def failure(self, exc: object) -> None:
        self.outcome = exc


def test_record_stream_reports_figures_through_the_request_meta():
    clock = FakeClock()
    clock.now = 0.010  # headers came 10 ms after the send
    response = FakeLocustResponse(200, ROLE + content("a") + content("b") + USAGE + DONE, clock)
    fig = record_stream(response, sent_s=0.0, clock=clock)
    assert response.outcome is True and fig.ok
    assert fig.ttfb_ms == pytest.approx(10.0)
    # lines arrive 1 ms apart: role data line at 11, its blank line at 12, "a" at 13-14, ...
    assert fig.ttft_ms == pytest.approx(14.0) and fig.itl_ms == pytest.approx((2.0,))
    assert response.request_meta["response_time"] == pytest.approx(fig.latency_ms)
    assert response.request_meta["context"]["user"] == "u"  # Locust's context is kept
    assert response.request_meta["context"][CONTEXT_KEY]["output_tokens"] == 6


def test_record_stream_http_error_is_a_failure_with_the_status():
    clock = FakeClock()
    response = FakeLocustResponse(503, b'{"error": "overloaded"}', clock)
    fig = record_stream(response, sent_s=0.0, clock=clock)
    assert not fig.ok and str(response.outcome).startswith("HTTP 503: ")
    assert response.request_meta["context"][CONTEXT_KEY]["ok"] is False
