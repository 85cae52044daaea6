"""In-memory stand-ins for the I/O edges, for tests and examples."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pytest_mlload.errors import ConfigError
from pytest_mlload.hpa.prometheus import QueryOutcome, no_series_warning, unreachable_warning
from pytest_mlload.hpa.recommend import HpaSettings, build_queries

__all__ = ["FakePrometheus"]


class FakePrometheus:
    """An in-memory :class:`InstantQuerier` answering from a dict keyed by exact query.

    A value may be a float (one series), ``None`` or a missing key (no series), or a ready
    :class:`QueryOutcome` (any warning). ``unreachable=True`` answers every query as a
    refused connection. ``calls`` records ``(query, at_epoch)`` pairs.
    """

    def __init__(
        self,
        answers: Mapping[str, float | QueryOutcome | None] | None = None,
        *,
        url: str = "http://fake-prometheus:9090",
        unreachable: bool = False,
    ) -> None:
        self.answers = dict(answers or {})
        self.url = url
        self.unreachable = unreachable
        self.calls: list[tuple[str, float]] = []

    @classmethod
    def for_triggers(
        cls,
        settings: HpaSettings,
        window_s: int,
        observed: Mapping[str, float | QueryOutcome | None],
        **kwargs: Any,
    ) -> FakePrometheus:
        """Answers keyed by trigger (``"api.cpuUtilization"``, ...) for a ``window_s`` window."""
        by_key = {q.key: q for q in build_queries(settings, window_s)}
        unknown = sorted(set(observed) - set(by_key))
        if unknown:
            raise ConfigError(f"unknown trigger(s) {unknown}; known: {sorted(by_key)}")
        return cls({by_key[k].query: v for k, v in observed.items()}, **kwargs)

    def instant(self, query: str, at_epoch: float) -> QueryOutcome:
        """Answer ``query`` from the dict (``at_epoch`` is only recorded)."""
        self.calls.append((query, at_epoch))
        if self.unreachable:
            reason = "[Errno 111] Connection refused"
            return QueryOutcome(query, None, 0, unreachable_warning(self.url, reason, query))
        answer = self.answers.get(query)
        if isinstance(answer, QueryOutcome):
            return dataclasses.replace(answer, query=query)
        if answer is None:
            return QueryOutcome(query, None, 0, no_series_warning(query))
        return QueryOutcome(query, float(answer), 1, None)
