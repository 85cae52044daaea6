"""What a capacity run produces: plain dataclasses that round-trip through JSON.

A :class:`CapacityResult` is what ``mlload.run(target)`` returns. It is produced in the load
driver (child process), shipped as JSON, and rebuilt here, so nothing in this module imports
Locust or pytest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["CapacityResult", "EndpointResult", "ProbeResult", "WindowRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointResult:
    """Figures for one request name (endpoint) inside the operating-point window."""

    name: str
    capacity_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int
    error_ratio: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EndpointResult:
        """Rebuild from :meth:`to_dict` output."""
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeResult:
    """P99 measured at a fixed user count (the baseline's operating load) in its own window."""

    users: int
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    failures: int
    duration_s: float
    p99_ci: tuple[float, float] | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        """Rebuild from :meth:`to_dict` output."""
        kw = {k: d.get(k) for k in cls.__dataclass_fields__}
        kw["p99_ci"] = _pair(d.get("p99_ci"))
        return cls(**kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowRecord:
    """One measured window of the search trajectory (for reports and plots)."""

    phase: str
    users: int
    start_s: float
    end_s: float
    requests: int
    failures: int
    rps: float
    p99_ms: float | None
    decision: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityResult:
    """The outcome of one adaptive capacity search.

    ``capacity_rps`` is the *successful*-request throughput sustained at the operating point
    (``users`` concurrent users: the load with the best throughput whose P99 stayed at or under
    the target, usually the highest such load), measured in its own window after a settle
    period. Percentiles come from raw per-request latencies of every request, failures
    included with the time they took; failures are also counted in ``error_ratio``.
    ``status`` is ``"converged"`` or ``"inconclusive"`` (then ``reason`` says why).
    A converged result's ``p99_ms`` is at or under ``target_p99_ms`` (except in check mode,
    which holds the baseline's load whatever its P99).

    ``bound`` is ``"max_users"`` when the search stopped at ``max_users`` with P99 still under
    the target: the capacity is then a lower bound. ``knee_users`` is the user count past which
    throughput fell (a server that slows down under contention), None when it did not.
    ``check`` marks a check-mode run (the baseline's load held, no search). ``note`` is the
    human sentence about either, for reports.
    ``capacity_ci`` is a 95 % moving-block bootstrap interval over per-bin completion counts;
    ``p99_ci`` a 95 % distribution-free order-statistic interval (see :mod:`pytest_mlload.stats`).
    """

    name: str
    host: str
    status: str
    reason: str
    capacity_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    users: int
    requests: int
    failures: int
    error_ratio: float
    measure_s: float
    elapsed_s: float
    target_p99_ms: float
    endpoints: dict[str, EndpointResult] = field(default_factory=dict)
    probe: ProbeResult | None = None
    trajectory: tuple[WindowRecord, ...] = ()
    error_samples: tuple[str, ...] = ()
    generator_cpu_ratio: float | None = None
    window_start_epoch: float | None = None
    window_end_epoch: float | None = None
    capacity_ci: tuple[float, float] | None = None
    p99_ci: tuple[float, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    bound: str = ""
    knee_users: int | None = None
    check: bool = False
    note: str = ""

    @property
    def converged(self) -> bool:
        """True when the search found an operating point with enough data."""
        return self.status == "converged"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (inverse of :meth:`from_dict`)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["endpoints"] = {k: v.to_dict() for k, v in self.endpoints.items()}
        d["probe"] = self.probe.to_dict() if self.probe else None
        d["trajectory"] = [w.to_dict() for w in self.trajectory]
        d["error_samples"] = list(self.error_samples)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CapacityResult:
        """Rebuild from :meth:`to_dict` output (e.g. the driver's JSON)."""
        kw: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__ if k in d}
        kw["endpoints"] = {
            k: EndpointResult.from_dict(v) for k, v in (d.get("endpoints") or {}).items()
        }
        kw["probe"] = ProbeResult.from_dict(d["probe"]) if d.get("probe") else None
        kw["trajectory"] = tuple(WindowRecord(**w) for w in d.get("trajectory") or ())
        kw["error_samples"] = tuple(d.get("error_samples") or ())
        kw["capacity_ci"] = _pair(d.get("capacity_ci"))
        kw["p99_ci"] = _pair(d.get("p99_ci"))
        kw["settings"] = dict(d.get("settings") or {})
        kw["extra"] = dict(d.get("extra") or {})
        kw["bound"] = str(d.get("bound") or "")
        kw["knee_users"] = int(d["knee_users"]) if d.get("knee_users") is not None else None
        kw["check"] = bool(d.get("check", False))
        kw["note"] = str(d.get("note") or "")
        return cls(**kw)


def _pair(value: Any) -> tuple[float, float] | None:
    """A JSON [lo, hi] back to a tuple; None (or NaN bounds) stays None."""
    if not value:
        return None
    lo, hi = float(value[0]), float(value[1])
    return None if (lo != lo or hi != hi) else (lo, hi)
