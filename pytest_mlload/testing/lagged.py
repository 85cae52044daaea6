"""Fake workers with report lag: the fake that ships with :mod:`pytest_mlload.load.merge`.

:class:`LaggedWorkers` splits the requests a :class:`~pytest_mlload.testing.simulate.
SimulatedService` completes among ``workers`` fake Locust workers. Each cuts a
:class:`~pytest_mlload.load.merge.Batch` every ``batch_s`` and its batches reach the master
``lag_s`` later, as reports over a loaded network or from a CPU-starved worker do.
:class:`LaggedClock` advances simulated time and delivers the batches that are due, so a
capacity search runs against lagging workers without sleeping.

``stamp="arrival"`` stamps every sample with the time its batch arrived instead of its
completion time: what a master gets from reports that carry no per-request times (Locust's
per-interval worker reports), for showing what that lag does to a search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pytest_mlload.load.merge import BATCH_S, Batch, MergedSamples
from pytest_mlload.testing.simulate import SimulatedService

__all__ = ["LaggedClock", "LaggedWorkers"]

STAMPS = ("completion", "arrival")


@dataclass(slots=True)
class LaggedWorkers:
    """``workers`` fake workers shipping ``service``'s samples to ``store`` with lag.

    ``lag_s`` is one lag for all workers or one per worker; ``cpu_ratio`` the CPU share
    each fake worker reports.
    """

    service: SimulatedService
    store: MergedSamples
    workers: int = 2
    lag_s: float | Sequence[float] = 1.7
    batch_s: float = BATCH_S
    stamp: str = "completion"
    cpu_ratio: float = 0.3
    _cursor: int = 0
    _next_cut: float = 0.0
    _seq: list[int] = field(default_factory=list)
    _pending: list[tuple[float, Batch]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stamp not in STAMPS:
            raise ValueError(f"stamp={self.stamp!r}: expected one of {', '.join(STAMPS)}")
        self._seq = [0] * self.workers
        self._next_cut = self.service.now + self.batch_s
        for k in range(self.workers):
            self.store.add_source(self.name(k))

    @staticmethod
    def name(k: int) -> str:
        """The name of fake worker ``k``."""
        return f"worker-{k}"

    def _lag(self, k: int) -> float:
        return float(self.lag_s) if isinstance(self.lag_s, int | float) else float(self.lag_s[k])

    def _cut(self, at: float) -> None:
        svc = self.service
        stop = self._cursor
        while stop < len(svc._end) and svc._end[stop] <= at:
            stop += 1
        for k in range(self.workers):
            idx = [i for i in range(self._cursor, stop) if i % self.workers == k]
            arrive = at + self._lag(k)
            ends = [arrive if self.stamp == "arrival" else svc._end[i] for i in idx]
            batch = Batch(
                source=self.name(k),
                seq=self._seq[k],
                sent_s=arrive if self.stamp == "arrival" else at,
                cpu_s=self.cpu_ratio * at,
                end_s=ends,
                latency_ms=[svc._lat[i] for i in idx],
                ok=[svc._ok[i] for i in idx],
                name=[svc._name[i] for i in idx],
                errors={n: "HTTPError 500" for n, i in enumerate(idx) if not svc._ok[i]},
            )
            self._seq[k] += 1
            self._pending.append((arrive, batch))
        self._cursor = stop

    def _deliver(self, now: float) -> None:
        due = [(t, b) for t, b in self._pending if t <= now]
        self._pending = [(t, b) for t, b in self._pending if t > now]
        for t, b in sorted(due, key=lambda tb: (tb[0], tb[1].source, tb[1].seq)):
            self.store.receive(b, arrived_s=t)

    def advance(self, t_end: float) -> None:
        """Run the service to ``t_end``, cutting and delivering batches on the way."""
        while self._next_cut <= t_end:
            self.service._process_until(self._next_cut)
            self._cut(self._next_cut)
            self._deliver(self._next_cut)
            self._next_cut += self.batch_s
        self.service._process_until(t_end)
        self._deliver(t_end)

    def stop_worker(self, k: int) -> None:
        """Worker ``k`` dies: none of its later batches is sent."""
        self.lag_s = [math.inf if j == k else self._lag(j) for j in range(self.workers)]
        self._pending = [(t, b) for t, b in self._pending if b.source != self.name(k)]


@dataclass(slots=True)
class LaggedClock:
    """Simulated time whose ``sleep`` runs the service and the workers' reports."""

    workers: LaggedWorkers

    def now(self) -> float:
        """Simulated time in seconds."""
        return self.workers.service.now

    def sleep(self, seconds: float) -> None:
        """Advance simulated time by ``seconds``."""
        self.workers.advance(self.now() + max(seconds, 0.0))
