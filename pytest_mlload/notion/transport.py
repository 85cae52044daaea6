"""Requests to Notion: a client-side rate limiter, retries with backoff, one deadline.

Every request goes through :meth:`NotionApi.call`, which

* waits for the token bucket (an average of ``rate_rps`` requests/s, bursts of ``burst``:
  Notion's limit is an average of 3 requests/s);
* retries 429 (waiting what ``Retry-After`` says), 529, 500, 502, 503, 504, timeouts and
  connection errors, and 409 ``conflict_error`` (Notion: "try again"), with exponential
  backoff and jitter, for every method;
* gives up with a :class:`~pytest_mlload.errors.NotionError` once the next wait would pass
  the sync's deadline (so a sync never takes more than ``deadline_s``).

A write that is not idempotent (creating a page, appending blocks) is not blindly retried
after an *ambiguous* failure (a timeout or a 5xx: Notion may have done it): the call raises
:class:`AmbiguousWrite` and the caller looks before it writes again, so a retry never makes
a duplicate. notion-client's own retries are switched off: one policy, one deadline.

The clock, the sleep and the random source are injectable, so tests never wait.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from pytest_mlload.errors import NotionError
from pytest_mlload.notion.settings import NOTION_VERSION, NotionSettings, redact

__all__ = ["AmbiguousWrite", "NotionApi", "RateLimiter"]

log = logging.getLogger("pytest_mlload.notion")
RETRY_STATUSES = (409, 429, 500, 502, 503, 504, 529)
NOT_DONE = (409, 429)  # Notion refused these before doing anything: a retry cannot duplicate
INSTALL_HINT = (
    "the Notion sync needs notion-client 2.6 or later: pip install 'notion-client>=2.6,<4'"
)


class AmbiguousWrite(NotionError):
    """A non-idempotent write failed in a way that may have left it done (timeout, 5xx)."""


class _GiveUp(Exception):
    """The next wait would pass the deadline."""


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self.rate, self.burst = rate, float(burst)
        self._clock, self._sleep = clock, sleep
        self._tokens, self._last = float(burst), clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self, deadline: float) -> None:
        """Take one token, sleeping until there is one; :class:`_GiveUp` past ``deadline``."""
        self._refill()
        if self._tokens < 1:
            wait = (1 - self._tokens) / self.rate
            if self._clock() + wait > deadline:
                raise _GiveUp
            self._sleep(wait)
            self._refill()
        self._tokens = max(self._tokens - 1, 0.0)


@dataclass(frozen=True, slots=True)
class _Fault:
    """A failed request: retryable or not, possibly done anyway, the wait Notion asked."""

    text: str
    retryable: bool
    ambiguous: bool
    retry_after_s: float | None = None
    status: int | None = None


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _classify(exc: Exception) -> _Fault:
    import httpx
    from notion_client import errors

    if isinstance(exc, errors.RequestTimeoutError | httpx.TimeoutException):
        return _Fault("request timed out", retryable=True, ambiguous=True)
    if isinstance(exc, httpx.ConnectError):
        return _Fault(f"cannot connect: {exc}", retryable=True, ambiguous=False)
    if isinstance(exc, httpx.TransportError):
        return _Fault(f"connection broke: {exc}", retryable=True, ambiguous=True)
    if isinstance(exc, errors.HTTPResponseError):
        code = getattr(exc, "code", "")
        code = getattr(code, "value", code)
        status = int(exc.status)
        text = f"HTTP {status} {code or ''}: {exc}".replace(" :", ":")
        return _Fault(
            text,
            retryable=status in RETRY_STATUSES,
            ambiguous=status not in NOT_DONE,
            retry_after_s=_retry_after(exc.headers) if status in RETRY_STATUSES else None,
            status=status,
        )
    return _Fault(f"{type(exc).__name__}: {exc}", retryable=False, ambiguous=False)


def _hint(status: int | None) -> str:
    if status == 401:
        return "; check NOTION_TOKEN (the integration's secret)"
    if status in (403, 404):
        return (
            "; check the database ids and share both databases with the integration "
            "(in Notion: ••• > Connections)"
        )
    return ""


def make_client(settings: NotionSettings, timeout_s: float) -> Any:
    """A notion-client ``Client`` speaking Notion-Version 2025-09-03, retries off, quiet."""
    try:
        import notion_client
    except ImportError:
        raise NotionError(INSTALL_HINT) from None
    quiet = logging.getLogger("pytest_mlload.notion.client")
    quiet.propagate = False  # its failure lines would repeat ours (and carry server text)
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    options: dict[str, Any] = {
        "auth": settings.token,
        "base_url": settings.base_url,
        "notion_version": NOTION_VERSION,
        "timeout_ms": int(timeout_s * 1000),
        "logger": quiet,
        "log_level": logging.CRITICAL,
    }
    if "retry" in notion_client.client.ClientOptions.__dataclass_fields__:  # 3.1+
        options["retry"] = False
    client = notion_client.Client(**options)
    if not hasattr(client, "data_sources"):  # before 2.6: no data sources, old API version
        client.close()
        raise NotionError(INSTALL_HINT)
    return client


class NotionApi:
    """notion-client calls behind the limiter, the retry policy and the deadline."""

    def __init__(
        self,
        settings: NotionSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        client: Any = None,
    ) -> None:
        self.settings = settings
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self.deadline = clock() + settings.deadline_s
        self.limiter = RateLimiter(settings.rate_rps, settings.burst, clock, sleep)
        self._client = client if client is not None else make_client(settings, settings.timeout_s)
        self.sent_at: list[float] = []  # clock time of every request, for rate checks
        self.retries = 0

    def close(self) -> None:
        """Close the HTTP connection pool."""
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    def _fail(self, what: str, text: str, status: int | None = None) -> NotionError:
        return NotionError(redact(f"Notion: {what} failed: {text}{_hint(status)}", self._token))

    @property
    def _token(self) -> str:
        return self.settings.token

    def pause(self, attempt: int, what: str, text: str, wait_s: float | None = None) -> None:
        """Back off before retry ``attempt`` (``wait_s`` when Notion said how long), or raise
        :class:`NotionError` when that would pass the deadline."""
        if wait_s is None:
            cap = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt)
            wait_s = cap / 2 + self._rng.uniform(0, cap / 2)  # equal jitter: never ~0
        left = self.deadline - self._clock()
        if wait_s > left:
            raise self._fail(
                what,
                f"{text}; gave up after {attempt + 1} attempt(s): the next wait ({wait_s:.1f} s) "
                f"would pass the {self.settings.deadline_s:g} s deadline",
            )
        log.info(redact(f"Notion: {what}: {text}; retrying in {wait_s:.2f} s", self._token))
        self.retries += 1
        self._sleep(wait_s)

    def call(self, what: str, method: str, *, write_once: bool = False, **kwargs: Any) -> Any:
        """``client.<method>(**kwargs)`` with limiter, retries and deadline.

        ``write_once``: the call is not idempotent; an ambiguous failure raises
        :class:`AmbiguousWrite` instead of retrying.
        """
        target: Any = self._client
        for name in method.split("."):
            target = getattr(target, name)
        attempt = 0
        while True:
            try:
                self.limiter.acquire(self.deadline)
            except _GiveUp:
                raise self._fail(what, "the rate limiter's wait would pass the deadline") from None
            self._cap_timeout()
            self.sent_at.append(self._clock())
            try:
                return target(**kwargs)
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                fault = _classify(exc)
            if not fault.retryable:
                raise self._fail(what, fault.text, fault.status) from None
            if write_once and fault.ambiguous:
                raise AmbiguousWrite(redact(f"{what}: {fault.text}", self._token))
            self.pause(attempt, what, fault.text, fault.retry_after_s)
            attempt += 1

    def _cap_timeout(self) -> None:
        """The per-request timeout, never past the deadline."""
        inner = getattr(self._client, "client", None)
        if inner is None or not hasattr(inner, "timeout"):
            return
        import httpx

        left = max(self.deadline - self._clock(), 0.05)
        inner.timeout = httpx.Timeout(min(self.settings.timeout_s, left))
