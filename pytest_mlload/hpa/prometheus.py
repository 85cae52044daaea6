"""A small Prometheus HTTP API client, (standard library only).

Only the standard library is used (``urllib``), so reading Prometheus adds no dependency.

:class:`PrometheusClient` runs *instant* queries with the ``time=`` parameter rather than
the PromQL ``@`` modifier, so it works against VictoriaMetrics as well; a tenant path
prefix in the base URL (``http://vmselect:8481/select/0/prometheus``) is kept as is.
A query never raises for a bad answer: every failure becomes a distinct ``warning`` on the
returned :class:`QueryOutcome` (unreachable, HTTP error, malformed answer, non-success
status, no series, several series, non-numeric value), so one broken trigger cannot crash
a run or hide the others.

The Prometheus process used by the tests is :mod:`pytest_mlload.testing.prometheus`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_mlload._redact import (
    PROMETHEUS_TOKEN_ENV,
    credentials_of,
    known_secrets,
    redact_url,
    scrub,
    strip_credentials,
)
from pytest_mlload.errors import ConfigError

__all__ = [
    "NO_SERIES",
    "InstantQuerier",
    "PrometheusClient",
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
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(
            f"prometheus_url={redact_url(base_url)!r} is invalid: want an http(s) URL such as "
            "http://prometheus:9090 (with a tenant prefix for VictoriaMetrics: "
            "http://vmselect:8481/select/0/prometheus)"
        )
    return base_url.rstrip("/")


def _labels_key(metric: Any) -> str:
    if not isinstance(metric, Mapping):
        return ""
    return ",".join(f"{k}={metric[k]}" for k in sorted(metric))


def _auth_header(base_url: str, token: str | None) -> str | None:
    """The ``Authorization`` value: basic auth from URL credentials, else the bearer token."""
    creds = credentials_of(base_url)
    if creds is not None and token:
        raise ConfigError(
            f"prometheus_url {redact_url(base_url)!r} carries credentials and "
            f"{PROMETHEUS_TOKEN_ENV} is set too: give one of them (basic auth in the URL, or "
            f"a bearer token in {PROMETHEUS_TOKEN_ENV})"
        )
    if creds is not None:
        return "Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode("ascii")
    return f"Bearer {token}" if token else None


class PrometheusClient:
    """Instant queries against the Prometheus HTTP API (``GET /api/v1/query``).

    ``base_url`` is everything before ``/api/v1``; a path prefix is kept (VictoriaMetrics
    tenants). ``timeout_s`` bounds each request. Queries never raise for a bad answer; see
    :meth:`instant`.

    Credentials in the URL (``http://user:pass@prometheus:9090``) are sent as basic auth;
    ``token`` (default: the :data:`~pytest_mlload._redact.PROMETHEUS_TOKEN_ENV` environment
    variable) as a bearer token. Neither is ever kept in ``base_url`` (redacted) nor in a
    warning.
    """

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, token: str | None = None) -> None:
        if not (isinstance(timeout_s, int | float) and timeout_s > 0):
            raise ConfigError(f"timeout_s={timeout_s!r} is invalid: want seconds > 0")
        checked = _check_base_url(base_url)
        token = os.environ.get(PROMETHEUS_TOKEN_ENV) if token is None else token
        self._authorization = _auth_header(checked, token or None)
        self._secrets = known_secrets(checked) + ((token,) if token else ())
        self._request_base = strip_credentials(checked)  # urllib does not use userinfo
        self.base_url = redact_url(checked)
        self.timeout_s = float(timeout_s)
        host = urllib.parse.urlsplit(self._request_base).hostname
        # a proxy from the environment must not intercept a loopback Prometheus
        handlers = [urllib.request.ProxyHandler({})] if host in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"PrometheusClient({self.base_url!r}, timeout_s={self.timeout_s})"

    def query_url(self, query: str, at_epoch: float) -> str:
        """The exact URL :meth:`instant` requests."""
        params = urllib.parse.urlencode({"query": query, "time": f"{at_epoch:.3f}"})
        return f"{self._request_base}/api/v1/query?{params}"

    def instant(self, query: str, at_epoch: float) -> QueryOutcome:
        """Evaluate ``query`` at ``at_epoch``; a failure is a warning, never an exception.

        Several series: the value of the first one in label order is used (deterministic)
        and the warning says how many came back, since the HPA queries aggregate to one.
        """
        outcome = self._instant(query, at_epoch)
        if outcome.warning is None:
            return outcome
        return dataclasses.replace(outcome, warning=scrub(outcome.warning, self._secrets))

    def _instant(self, query: str, at_epoch: float) -> QueryOutcome:
        url = self.query_url(query, at_epoch)
        headers = {"Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, headers=headers)
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
