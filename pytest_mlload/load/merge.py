"""Raw samples from several load generators merged into one store; no Locust, no clock.

With ``workers=N`` every Locust worker ships its raw per-request samples (completion time,
latency, success, name) to the master in small :class:`Batch` es. Locust's own worker
reports are rounded into ~2-significant-digit buckets and arrive every 3 s, so a P99 or a
window built from them is neither exact nor current; these batches keep every latency as
measured and say, by their send time, how far each worker's record is complete.

:class:`MergedSamples` holds them per worker. A batch sent at ``sent_s`` holds every sample
its worker completed after the previous batch and up to ``sent_s``, so a worker's samples
are complete up to its latest ``sent_s`` (its *watermark*). :class:`MergedLoad` is the
:class:`~pytest_mlload.load.controller.LoadGenerator` of the capacity search on top of it:
:meth:`MergedLoad.window` waits until every worker's watermark has passed the end of the
window, so a decision never rests on a window whose late reports are still in flight, and a
worker that stops reporting ends the run with :class:`WorkerLost` instead of a hang.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_mlload.load.controller import CapacitySearch, Clock, LoadGenerator, Samples, run_search

__all__ = [
    "BATCH_S",
    "JOIN_TIMEOUT_S",
    "REPORT_TIMEOUT_S",
    "Batch",
    "MergedLoad",
    "MergedSamples",
    "WorkerLost",
    "WorkersFailed",
    "cpu_share",
    "run_search_guarded",
]

BATCH_S = 0.25  # how often a worker ships its samples
# A worker whose reports stop for this long is lost (Locust's own heartbeat gives up after
# about 3 missed 1 s beats); a window waits at most this long for the reports covering it.
REPORT_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 30.0  # how long the master waits for its workers to join and load the code
_POLL_S = 0.02


class WorkerLost(Exception):
    """A worker stopped reporting (died, lost its connection, fell behind): the run cannot
    be judged, since its share of the load is missing from every later window."""


class WorkersFailed(Exception):
    """The workers could not start the run: too few joined, or one runs other code."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """One shipment of raw samples from a worker.

    Times are on the master's clock (a remote worker's wall clock, converted): ``sent_s``
    is when the worker cut the batch, ``cpu_s`` its process CPU time then. ``errors`` maps
    an index into the batch to the error text of that failed request, ``streams`` to the
    stream figures of a request that streamed (:mod:`pytest_mlload.load.streaming`).
    """

    source: str
    seq: int
    sent_s: float
    cpu_s: float
    end_s: Sequence[float] = ()
    latency_ms: Sequence[float] = ()
    ok: Sequence[bool] = ()
    name: Sequence[str] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    streams: Mapping[int, dict[str, Any]] = field(default_factory=dict)


def cpu_share(ticks: Sequence[tuple[float, float]], start_s: float, stop_s: float) -> float | None:
    """Share of one core used between two times, from ``(time, process CPU time)`` ticks.

    Uses the last tick at or before ``start_s`` and the last one up to ``stop_s``; None when
    they are the same tick (too short a window to say).
    """
    ts = [t for t, _ in ticks]
    i = max(bisect.bisect_left(ts, start_s) - 1, 0)
    j = min(bisect.bisect_right(ts, stop_s), len(ts)) - 1
    if j <= i:
        return None
    (t0, c0), (t1, c1) = ticks[i], ticks[j]
    return (c1 - c0) / (t1 - t0) if t1 > t0 else None


@dataclass(slots=True)
class _Source:
    end: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    err: dict[int, str] = field(default_factory=dict)
    stream: dict[int, dict[str, Any]] = field(default_factory=dict)
    cpu: list[tuple[float, float]] = field(default_factory=list)
    watermark: float = -math.inf
    seq: int = -1
    arrived_s: float = -math.inf
    lost: str = ""

    def add(self, b: Batch) -> None:
        order = sorted(range(len(b.end_s)), key=b.end_s.__getitem__)
        base = len(self.end)
        in_order = not self.end or not order or b.end_s[order[0]] >= self.end[-1]
        for k, i in enumerate(order):
            self.end.append(float(b.end_s[i]))
            self.lat.append(float(b.latency_ms[i]))
            self.ok.append(bool(b.ok[i]))
            self.name.append(str(b.name[i]))
            if i in b.errors:
                self.err[base + k] = str(b.errors[i])
            if i in b.streams:
                self.stream[base + k] = dict(b.streams[i])
        if not in_order:  # a wall clock stepped back: keep the record sorted
            self._resort()
        self.cpu.append((b.sent_s, b.cpu_s))
        self.watermark = max(self.watermark, b.sent_s)

    def _resort(self) -> None:
        order = sorted(range(len(self.end)), key=self.end.__getitem__)
        where = {old: new for new, old in enumerate(order)}
        self.end = [self.end[i] for i in order]
        self.lat = [self.lat[i] for i in order]
        self.ok = [self.ok[i] for i in order]
        self.name = [self.name[i] for i in order]
        self.err = {where[i]: t for i, t in self.err.items()}
        self.stream = {where[i]: f for i, f in self.stream.items()}

    def span(self, start_s: float, stop_s: float) -> tuple[int, int]:
        return bisect.bisect_left(self.end, start_s), bisect.bisect_right(self.end, stop_s)


class MergedSamples:
    """Every worker's raw samples, with how far each worker's record is complete."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}

    @property
    def sources(self) -> tuple[str, ...]:
        """The workers that joined, in joining order."""
        return tuple(self._sources)

    def add_source(self, source: str) -> None:
        """Register a worker before its first batch (its watermark starts at -inf)."""
        self._sources.setdefault(source, _Source())

    def receive(self, batch: Batch, arrived_s: float) -> None:
        """Store ``batch`` (which arrived at ``arrived_s``); a gap in ``seq`` loses the worker."""
        src = self._sources.setdefault(batch.source, _Source())
        if src.lost:
            return
        if batch.seq != src.seq + 1:
            src.lost = (
                f"worker {batch.source}: sample batch {src.seq + 1} never arrived (got "
                f"{batch.seq}), so its samples are incomplete"
            )
            return
        src.seq = batch.seq
        src.arrived_s = arrived_s
        src.add(batch)

    def mark_lost(self, source: str, reason: str) -> None:
        """Record that ``source`` is gone (the first reason is kept)."""
        src = self._sources.setdefault(source, _Source())
        src.lost = src.lost or reason

    def lost_reason(self, now_s: float, timeout_s: float = REPORT_TIMEOUT_S) -> str:
        """Why the record is incomplete ("" when every worker is fine) at ``now_s``."""
        for source, src in self._sources.items():
            if src.lost:
                return src.lost
            if src.seq >= 0 and now_s - src.arrived_s > timeout_s:
                return (
                    f"worker {source} sent no samples for {now_s - src.arrived_s:.1f} s "
                    f"(limit {timeout_s:g} s): it died, hung or lost its connection"
                )
        return ""

    def watermarks(self) -> dict[str, float]:
        """Each worker's watermark: its samples are complete up to that time."""
        return {k: s.watermark for k, s in self._sources.items()}

    def covered_until(self) -> float:
        """Every worker's samples are complete up to this time (-inf before any batch)."""
        if not self._sources:
            return -math.inf
        return min(src.watermark for src in self._sources.values())

    def count_since(self, t: float) -> int:
        """Samples completed at or after ``t`` that have arrived."""
        return sum(len(s.end) - bisect.bisect_left(s.end, t) for s in self._sources.values())

    def window(self, start_s: float, stop_s: float) -> Samples:
        """Every arrived sample completed in ``[start_s, stop_s]``, in completion order."""
        end: list[float] = []
        lat: list[float] = []
        ok: list[bool] = []
        name: list[str] = []
        err: dict[int, str] = {}
        for s in self._sources.values():
            i, j = s.span(start_s, stop_s)
            base = len(end)
            err.update({base + k - i: s.err[k] for k in range(i, j) if k in s.err})
            end += s.end[i:j]
            lat += s.lat[i:j]
            ok += s.ok[i:j]
            name += s.name[i:j]
        order = np.argsort(np.asarray(end), kind="stable")
        where = {int(old): new for new, old in enumerate(order)}
        return Samples(
            np.asarray(end)[order] if end else np.asarray([], dtype=float),
            np.asarray(lat, dtype=float)[order] if lat else np.asarray([], dtype=float),
            np.asarray(ok, dtype=bool)[order] if ok else np.asarray([], dtype=bool),
            np.asarray(name, dtype=object)[order] if name else np.asarray([], dtype=object),
            start_s,
            stop_s,
            tuple(err[k] for k in sorted(err, key=where.__getitem__)),
        )

    def stream_window(self, start_s: float, stop_s: float) -> list[dict[str, Any]]:
        """Stream figures of the requests completed in ``[start_s, stop_s]``, in order."""
        found: list[tuple[float, dict[str, Any]]] = []
        for s in self._sources.values():
            i, j = s.span(start_s, stop_s)
            found += [(s.end[k], s.stream[k]) for k in range(i, j) if k in s.stream]
        return [f for _, f in sorted(found, key=lambda tf: tf[0])]

    def cpu_by_source(self, start_s: float, stop_s: float) -> dict[str, float | None]:
        """Each worker's share of one core between two times (from its batches)."""
        return {k: cpu_share(s.cpu, start_s, stop_s) for k, s in self._sources.items()}

    def cpu_ratio(self, start_s: float, stop_s: float) -> float | None:
        """The busiest worker's share of one core: the generator-CPU guard is per worker."""
        known = [v for v in self.cpu_by_source(start_s, stop_s).values() if v is not None]
        return max(known) if known else None


class MergedLoad:
    """The capacity search's load generator over merged worker samples.

    ``actuate(users)`` re-targets the workers (Locust's ``MasterRunner.start``); ``check()``
    returns a reason when a worker is known to be gone (a local process exited...).
    ``wait_for_reports=False`` builds windows from whatever has arrived, as a master reading
    its workers' lagging reports would: only for showing what that does to a search.
    """

    def __init__(
        self,
        store: MergedSamples,
        clock: Clock,
        actuate: Callable[[int], None],
        *,
        check: Callable[[], str] = lambda: "",
        timeout_s: float = REPORT_TIMEOUT_S,
        wait_for_reports: bool = True,
    ) -> None:
        self.store, self.clock, self._actuate, self._check = store, clock, actuate, check
        self.timeout_s, self.wait_for_reports = timeout_s, wait_for_reports

    def _raise_if_lost(self) -> None:
        reason = self._check() or self.store.lost_reason(self.clock.now(), self.timeout_s)
        if reason:
            raise WorkerLost(reason)

    def set_users(self, users: int) -> None:
        """Re-target the workers to ``users`` in total."""
        self._raise_if_lost()
        self._actuate(users)

    def count_since(self, t: float) -> int:
        """Samples completed since ``t`` that have arrived (they lag by up to a batch)."""
        self._raise_if_lost()
        return self.store.count_since(t)

    def window(self, start_s: float, stop_s: float) -> Samples:
        """The window ``[start_s, stop_s]`` once every worker's samples cover ``stop_s``."""
        give_up = self.clock.now() + self.timeout_s
        while self.wait_for_reports and self.store.covered_until() < stop_s:
            self._raise_if_lost()
            if self.clock.now() >= give_up:
                late = [s for s, v in self.store.watermarks().items() if v < stop_s]
                raise WorkerLost(
                    f"the samples of worker(s) {', '.join(late)} covering the window ending at "
                    f"{stop_s:.2f} s did not arrive within {self.timeout_s:g} s"
                )
            self.clock.sleep(_POLL_S)
        return self.store.window(start_s, stop_s)

    def stream_window(self, start_s: float, stop_s: float) -> list[dict[str, Any]]:
        """Stream figures of a window (ask after :meth:`window`, which waits for them)."""
        return self.store.stream_window(start_s, stop_s)

    def cpu_ratio(self, start_s: float, stop_s: float) -> float | None:
        """The busiest worker's CPU share over a window."""
        return self.store.cpu_ratio(start_s, stop_s)


def run_search_guarded(
    search: CapacitySearch, load: LoadGenerator, clock: Clock, **kw: Any
) -> None:
    """:func:`~pytest_mlload.load.controller.run_search`; a lost worker ends it inconclusive."""
    try:
        run_search(search, load, clock, **kw)
    except WorkerLost as exc:
        search.abort(f"a load worker was lost, so the load and the samples are incomplete: {exc}")
