"""A simulated service and a fake clock: the fakes that ship with the controller.

:class:`SimulatedService` is a discrete-event model of closed-loop users (like Locust's)
against a server with ``slots`` FIFO workers and a service time per request. Its saturation
throughput is known exactly (``slots / service_s``), so tests and benchmarks can check the
capacity search against the truth without sleeping: :class:`FakeClock` advances simulated
time, and the service processes every event up to the new time.

Two overload behaviours of real servers can be switched on: a *knee* (past ``knee`` requests in
service every request gets slower, so throughput peaks there and falls beyond) and *errors that
start above a load* (past ``error_above`` requests in flight, requests fail more and more
often). Where the truth is not a formula, :func:`sweep` measures it by brute force: fixed user
counts, each on a fresh service, with no search involved.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pytest_mlload.load.controller import Samples

__all__ = ["FakeClock", "SimulatedService", "SweepPoint", "best_rate", "sweep"]


@dataclass(slots=True)
class SimulatedService:
    """Closed-loop users against ``slots`` FIFO workers (an M/G/c-style queue).

    ``service_ms`` is the mean time a request holds a worker; ``jitter`` the sigma of a
    lognormal multiplier on it; ``overhead_ms`` client/network time added to every latency
    without holding a worker; ``error_ratio`` the share of requests that fail;
    ``stall_every_s``/``stall_s`` freeze the workers periodically (``stall_once``: only the
    first time, a cold start's one-off stall). ``seed`` makes runs reproducible.

    ``knee`` > 0: a request's service time is multiplied by
    ``1 + knee_penalty * max(0, busy - knee)``, ``busy`` being the requests in service when it
    starts, itself included (contention: cache thrashing, lock convoys, GC). With enough
    ``slots`` the throughput ``busy / service`` peaks at ``knee`` in service and falls beyond.

    ``spell_s`` > 0: a slow spell, from ``spell_at_s`` for ``spell_s`` seconds, during which
    service times are ``spell_factor`` times longer (a cold start's tail, a neighbour's job on
    the runner).

    ``error_above`` > 0: a request issued while more than ``error_above`` requests are in
    flight (queued or in service, itself included) fails with probability
    ``min(1, error_growth * (in_flight - error_above))``. A failed request still holds its
    worker for its service time and reports the time it took, as a timeout or a 503 after
    work does.
    """

    slots: int = 4
    service_ms: float = 20.0
    jitter: float = 0.1
    overhead_ms: float = 1.0
    think_ms: float = 0.0
    error_ratio: float = 0.0
    stall_every_s: float = 0.0
    stall_s: float = 0.0
    stall_once: bool = False
    seed: int = 0
    names: tuple[str, ...] = ("/work",)
    weights: tuple[float, ...] = (1.0,)
    service_ms_by_name: dict[str, float] = field(default_factory=dict)
    knee: int = 0
    knee_penalty: float = 0.25
    error_above: int = 0
    error_growth: float = 0.05
    spell_at_s: float = 0.0
    spell_s: float = 0.0
    spell_factor: float = 1.0
    now: float = 0.0
    _rng: np.random.Generator = field(init=False)
    _events: list[tuple[float, int, str, int]] = field(init=False, default_factory=list)
    _seq: int = 0
    _free: int = 0
    _queue: list[tuple[int, float, str]] = field(init=False, default_factory=list)
    _active: int = 0
    _alive: set[int] = field(init=False, default_factory=set)
    _next_user: int = 0
    _end: list[float] = field(init=False, default_factory=list)
    _lat: list[float] = field(init=False, default_factory=list)
    _ok: list[bool] = field(init=False, default_factory=list)
    _name: list[str] = field(init=False, default_factory=list)
    _issued: dict[int, tuple[float, str]] = field(init=False, default_factory=dict)
    _doomed: set[int] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._free = self.slots

    @property
    def capacity_rps(self) -> float:
        """Exact saturation throughput of the workers for the configured mix."""
        w = np.asarray(self.weights, dtype=float)
        w = w / w.sum()
        s = np.array([self.service_ms_by_name.get(n, self.service_ms) for n in self.names])
        return float(self.slots / (float(np.dot(w, s)) / 1000.0))

    # -- event machinery -------------------------------------------------------------------
    def _push(self, t: float, kind: str, user: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, kind, user))

    def _stall_delay(self, t: float) -> float:
        if self.stall_every_s <= 0 or self.stall_s <= 0:
            return 0.0
        if self.stall_once and t >= self.stall_every_s:
            return 0.0
        phase = t % self.stall_every_s
        start = self.stall_every_s - self.stall_s
        return (self.stall_every_s - phase) if phase >= start else 0.0

    def _start_service(self, user: int, t: float, name: str) -> None:
        base = self.service_ms_by_name.get(name, self.service_ms) / 1000.0
        mult = float(self._rng.lognormal(0.0, self.jitter)) if self.jitter > 0 else 1.0
        t_start = t + self._stall_delay(t)
        if self.spell_at_s <= t_start < self.spell_at_s + self.spell_s:
            mult *= self.spell_factor
        self._free -= 1
        if self.knee > 0:
            busy = self.slots - self._free  # in service now, this request included
            mult *= 1.0 + self.knee_penalty * max(0, busy - self.knee)
        self._push(t_start + base * mult, "done", user)

    def _issue(self, user: int, t: float) -> None:
        if len(self.names) == 1:
            name = self.names[0]
        else:
            w = np.asarray(self.weights, dtype=float)
            name = self.names[int(self._rng.choice(len(self.names), p=w / w.sum()))]
        self._issued[user] = (t, name)
        if self.error_above > 0:
            over = len(self._issued) - self.error_above  # in flight, this request included
            if over > 0 and self._rng.random() < min(1.0, self.error_growth * over):
                self._doomed.add(user)
        if self._free > 0:
            self._start_service(user, t, name)
        else:
            self._queue.append((user, t, name))

    def _process_until(self, t_end: float) -> None:
        while self._events and self._events[0][0] <= t_end:
            t, _, kind, user = heapq.heappop(self._events)
            if kind == "issue":
                if user in self._alive:
                    self._issue(user, t)
                continue
            # a worker finished this user's request
            self._free += 1
            issued_at, name = self._issued.pop(user)
            done_at = t + self.overhead_ms / 1000.0
            ok = not (self.error_ratio > 0 and self._rng.random() < self.error_ratio)
            if user in self._doomed:
                self._doomed.discard(user)
                ok = False
            self._end.append(done_at)
            self._lat.append((done_at - issued_at) * 1000.0)
            self._ok.append(ok)
            self._name.append(name)
            if self._queue:
                nxt, _, qname = self._queue.pop(0)
                self._start_service(nxt, t, qname)
            if user in self._alive:
                self._push(done_at + self.think_ms / 1000.0, "issue", user)
        self.now = max(self.now, t_end)

    # -- LoadGenerator interface -----------------------------------------------------------
    def set_users(self, users: int) -> None:
        """Grow or shrink the set of live users (new users issue at once)."""
        set_live_users(self, users)

    def count_since(self, t: float) -> int:
        """Requests completed at or after ``t`` (up to now)."""
        return completed_since(self._end, self.now, t)

    def window(self, start_s: float, stop_s: float) -> Samples:
        """Requests completed in ``[start_s, stop_s]``."""
        # completion times are appended in order except for the fixed overhead shift
        i = bisect.bisect_left(self._end, start_s)
        j = bisect.bisect_right(self._end, stop_s)
        names = self._name[i:j]
        err = tuple("HTTPError 500" for k in range(i, j) if not self._ok[k])
        return Samples(
            np.asarray(self._end[i:j]),
            np.asarray(self._lat[i:j]),
            np.asarray(self._ok[i:j], bool),
            np.asarray(names, dtype=object),
            start_s,
            stop_s,
            err,
        )


class Simulated(Protocol):
    """A discrete-event load generator a :class:`FakeClock` advances (:class:`SimulatedService`,
    :class:`pytest_mlload.testing.llm.SimulatedLlm`)."""

    now: float

    def _process_until(self, t_end: float) -> None: ...


class _Users(Simulated, Protocol):
    _alive: set[int]
    _next_user: int

    def _push(self, t: float, kind: str, user: int) -> None: ...


def set_live_users(sim: _Users, users: int) -> None:
    """Grow (new users issue at once) or shrink the live users of a closed-loop simulation."""
    alive = sorted(sim._alive)
    while len(alive) < users:
        uid = sim._next_user
        sim._next_user += 1
        sim._alive.add(uid)
        alive.append(uid)
        sim._push(sim.now, "issue", uid)
    for uid in alive[users:]:
        sim._alive.discard(uid)
    sim._process_until(sim.now)


def completed_since(end: list[float], now: float, t: float) -> int:
    """Completions (sorted times ``end``) at or after ``t``, up to ``now``."""
    return bisect.bisect_right(end, now) - bisect.bisect_left(end, t)


@dataclass(slots=True)
class FakeClock:
    """A clock whose ``sleep`` advances a :class:`SimulatedService` (or any
    :class:`Simulated`) instead of waiting."""

    service: Simulated

    def now(self) -> float:
        """Simulated time in seconds."""
        return self.service.now

    def sleep(self, seconds: float) -> None:
        """Advance simulated time, processing every event on the way."""
        self.service._process_until(self.service.now + max(seconds, 0.0))


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """What a fixed load of ``users`` gave in a :func:`sweep`."""

    users: int
    rps: float
    p99_ms: float | None
    error_ratio: float
    requests: int


def sweep(
    make: Callable[[], SimulatedService],
    users: Iterable[int],
    *,
    settle_s: float = 1.0,
    measure_s: float = 4.0,
) -> list[SweepPoint]:
    """The truth by brute force: each user count held on a fresh service from ``make()``.

    Every count runs ``settle_s`` (discarded) then ``measure_s``; the figures are those of
    the second part: goodput, P99 of all requests (failures with the time they took), error
    ratio. Nothing of the capacity search is used, so it is an independent reference for it.
    """
    out = []
    for n in users:
        svc = make()
        clock = FakeClock(svc)
        svc.set_users(n)
        clock.sleep(settle_s)
        t0 = clock.now()
        clock.sleep(measure_s)
        w = svc.window(t0, clock.now())
        lat = w.latency_ms
        p99 = float(np.percentile(lat, 99)) if lat.size else None
        out.append(SweepPoint(n, w.rps, p99, w.error_ratio, w.requests))
    return out


def best_rate(
    points: Iterable[SweepPoint], target_p99_ms: float, max_error_ratio: float = 0.01
) -> SweepPoint:
    """The point with the highest goodput among those meeting the target and the error cap.

    Raises :class:`ValueError` when none meets them (widen the sweep or raise the target).
    """
    ok = [
        p
        for p in points
        if p.p99_ms is not None and p.p99_ms <= target_p99_ms and p.error_ratio <= max_error_ratio
    ]
    if not ok:
        raise ValueError(
            f"no swept load meets P99 <= {target_p99_ms:g} ms with errors <= "
            f"{max_error_ratio:.1%}: sweep lower user counts or raise the target"
        )
    return max(ok, key=lambda p: p.rps)
