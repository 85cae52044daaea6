"""What counts as the load generator's own error, and how open-loop figures leave it out
(issue 11): a local error (EMFILE, no free port) is never a server failure."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from pytest_mlload.load.openloop import OpenLoopSamples, local_error_reason, summarize

# -- row 4: what counts as the generator's own error ----------------------------------------


def _wrapped_like_requests() -> BaseException:
    """EMFILE as requests/urllib3 report it: ConnectionError(MaxRetryError(reason=...))."""
    inner = OSError(errno.EMFILE, "Too many open files")
    try:
        try:
            raise inner
        except OSError as exc:
            raise ConnectionError("Failed to establish a new connection") from exc
    except ConnectionError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "local"),
    [
        (OSError(errno.EMFILE, "Too many open files"), "EMFILE: Too many open files"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "EADDRNOTAVAIL: Cannot assign"),
        (_wrapped_like_requests(), "EMFILE: Too many open files"),
        (RuntimeError("HTTPConnectionPool: [Errno 24] Too many open files"), "EMFILE"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), None),
        (TimeoutError("timed out"), None),
        (None, None),
    ],
    ids=["emfile", "eaddrnotavail", "wrapped", "in-message", "refused", "timeout", "none"],
)
def test_local_error_reason(exc: BaseException | None, local: str | None) -> None:
    found = local_error_reason(exc)
    assert (found is None) == (local is None)
    if local is not None:
        assert found is not None and found.startswith(local)


def test_summarize_leaves_local_arrivals_out_of_server_figures() -> None:
    """Ten arrivals at 10 req/s: six answered in 20 ms, one server failure, three local
    (EMFILE or no request): 7 requests, 1 failure, 3 local errors; sent counts all ten."""
    intended = np.arange(10) / 10.0
    end = intended + 0.020
    ok = np.array([True] * 6 + [False] * 4)
    local = np.array([False] * 7 + [True] * 3)
    samples = OpenLoopSamples(intended, intended.copy(), end, ok, local)
    s = summarize(samples, 0.0, 1.0, 10.0)
    assert (s.requests, s.failures, s.local_errors) == (7, 1, 3)
    assert s.error_ratio == pytest.approx(1 / 7)
    assert s.sent_rps == pytest.approx(10.0)
    assert s.p50_ms == pytest.approx(20.0)
    plain = summarize(OpenLoopSamples(intended, intended.copy(), end, ok), 0.0, 1.0, 10.0)
    assert (plain.requests, plain.failures, plain.local_errors) == (10, 4, 0)
