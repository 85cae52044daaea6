"""What a capacity run produces: keyword-only records that round-trip through JSON.

A :class:`CapacityResult` is what ``mlload.run(...)`` returns in every mode. It is produced in
the load driver (child process), shipped as JSON, and rebuilt here, so nothing in this module
imports Locust or pytest. Each concept has one record and is serialised here, once:
:class:`OpenLoopWindow` (one constant-arrival window), :class:`OpenLoopResult` (the open-loop
confirmation), :class:`SpikeResult` (pre-spike, spike, recovery), the recommended
``rate_limit_rps`` and the HPA report (:class:`pytest_mlload.hpa.recommend.HpaReport`).

A run of several parts (modes, endpoints) gives one :class:`CapacityResult` whose figures are
its headline part's (``production`` when the mix ran, else the single part) and whose
``parts`` hold every part: ``result["production"]``, ``result.parts["spike"]``. In
individual mode on several endpoints ``result.endpoints[name]`` is each endpoint's full
result (:class:`CapacityResult` is an :class:`EndpointResult` with more figures).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mlload.hpa.recommend import HpaReport

__all__ = [
    "CapacityResult",
    "EndpointResult",
    "OpenLoopResult",
    "OpenLoopWindow",
    "ProbeResult",
    "SpikeResult",
    "StreamResult",
    "WindowRecord",
    "part_key",
    "part_name",
]

RESULT_SCHEMA = 2  # bumped when a field changes meaning; 2: typed records replace ``extra``


def part_name(test_key: str, name: str) -> str:
    """The part a result of a test is: "" for the test's only part (a result named like the
    test, or unnamed), else the result's name (``production``, ``individual /v1/embed``)."""
    return "" if name in ("", test_key) else name


def part_key(test_key: str, part: str) -> str:
    """The baseline key of one part of a test: ``key`` alone, or ``key[part]``."""
    return test_key if part_name(test_key, part) == "" else f"{test_key}[{part}]"


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
    def from_dict(cls, d: Mapping[str, Any]) -> EndpointResult:
        """Rebuild from :meth:`to_dict` output."""
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in fields(EndpointResult)}
        return EndpointResult(**kw)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenLoopWindow:
    """What one constant-arrival window showed (failures and unfinished arrivals included).

    ``sent_rps`` counts arrivals actually dispatched inside the window: when it falls short
    of ``rate_rps`` the generator, not the server, was the limit.
    """

    rate_rps: float
    sent_rps: float
    goodput_rps: float
    requests: int
    failures: int
    error_ratio: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p99_ci: tuple[float, float] | None
    dispatch_lag_p95_ms: float | None
    duration_s: float
    local_errors: int = 0  # arrivals the generator could not send (EMFILE, ...): not failures

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        d = asdict(self)
        d["p99_ci"] = list(self.p99_ci) if self.p99_ci else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpenLoopWindow:
        """Rebuild from :meth:`to_dict` output."""
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls)}
        kw["p99_ci"] = _pair(d.get("p99_ci"))
        kw["local_errors"] = int(d.get("local_errors") or 0)
        return cls(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenLoopResult:
    """The open-loop confirmation of an operating point: ``rate_rps`` offered at a constant
    arrival rate. ``skipped`` says why it did not run ("" when it ran; ``window`` is None
    then)."""

    rate_rps: float
    window: OpenLoopWindow | None = None
    peak_workers: int = 0
    skipped: str = ""
    generator_problem: str = ""  # why the generator, not the server, set the pace ("" = none)

    @property
    def p99_ms(self) -> float | None:
        """The window's P99, None when skipped."""
        return self.window.p99_ms if self.window else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return {
            "rate_rps": self.rate_rps,
            "window": self.window.to_dict() if self.window else None,
            "peak_workers": self.peak_workers,
            "skipped": self.skipped,
            "generator_problem": self.generator_problem,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OpenLoopResult:
        """Rebuild from :meth:`to_dict` output."""
        w = d.get("window")
        return cls(
            rate_rps=float(d["rate_rps"]),
            window=OpenLoopWindow.from_dict(w) if w else None,
            peak_workers=int(d.get("peak_workers") or 0),
            skipped=str(d.get("skipped") or ""),
            generator_problem=str(d.get("generator_problem") or ""),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SpikeResult:
    """A spike run: ``base_rps`` before, ``target_rps`` for ``duration_s``, ``base_rps`` after.

    ``recovery_s`` is how long after the spike P99 came back near the pre-spike P99 (None:
    not within ``recovery_limit_s``); ``ok_requests`` the successes inside the spike.
    """

    target_rps: float
    base_rps: float
    duration_s: float
    pre: OpenLoopWindow
    spike: OpenLoopWindow
    recovery_s: float | None
    recovery_limit_s: float
    peak_workers: int
    ok_requests: int = 0
    generator_problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["pre"], d["spike"] = self.pre.to_dict(), self.spike.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SpikeResult:
        """Rebuild from :meth:`to_dict` output."""
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls)}
        kw["pre"] = OpenLoopWindow.from_dict(d["pre"])
        kw["spike"] = OpenLoopWindow.from_dict(d["spike"])
        kw["ok_requests"] = int(d.get("ok_requests") or 0)
        kw["generator_problem"] = str(d.get("generator_problem") or "")
        return cls(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamResult:
    """What the streamed requests of one window showed (times in ms).

    ``goodput_rps`` is the rate of requests that met every SLO set (every successful one when
    none is set), ``goodput_ci`` its 95 % block-bootstrap interval. ``slo_attainment`` is
    conforming / determined requests with its Wilson interval ``slo_attainment_ci`` (None
    without SLOs); failures count as not conforming, and requests whose set SLO cannot be
    measured (TPOT of a one-token answer) are ``undetermined`` and left out. Percentiles are
    over successful streams; ``itl_p99_ms`` pools every inter-chunk gap. ``token_source`` is
    ``usage``, ``chunks`` or ``mixed``; ``usage_to_chunks_ratio`` > 1 means the server
    bundles several tokens per chunk (ITL is then per chunk, not per token).
    """

    goodput_rps: float
    goodput_ci: tuple[float, float] | None = None
    slo_attainment: float | None = None
    slo_attainment_ci: tuple[float, float] | None = None
    slo_target: float | None = None
    slo_decision: str = ""
    """``meets``, ``misses`` or ``unresolved`` (interval straddles the target); "" without SLOs."""
    determined: int = 0
    undetermined: int = 0
    streamed: int = 0
    ttft_p50_ms: float | None = None
    ttft_p99_ms: float | None = None
    ttft_p99_ci: tuple[float, float] | None = None
    tpot_p50_ms: float | None = None
    tpot_p99_ms: float | None = None
    tpot_p99_ci: tuple[float, float] | None = None
    itl_p99_ms: float | None = None
    e2e_p99_ms: float | None = None
    ttfb_p50_ms: float | None = None
    output_tokens_per_s: float = 0.0
    token_source: str = ""
    usage_to_chunks_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        d = asdict(self)
        for name in _STREAM_PAIRS:
            d[name] = list(d[name]) if d[name] else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamResult:
        """Rebuild from :meth:`to_dict` output."""
        kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for name in _STREAM_PAIRS:
            kw[name] = _pair(d.get(name))
        return cls(**kw)


_STREAM_PAIRS = ("goodput_ci", "slo_attainment_ci", "ttft_p99_ci", "tpot_p99_ci")


def _stream_from(d: Mapping[str, Any] | None) -> StreamResult | None:
    return StreamResult.from_dict(d) if d else None


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
    rps_ci: tuple[float, float] | None = None
    """95 % interval of the window's successful requests/s (as the capacity's interval)."""
    stream: StreamResult | None = None
    """TTFT, TPOT and SLO attainment at this load, for a streaming target."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        """Rebuild from :meth:`to_dict` output."""
        kw = {k: d.get(k) for k in cls.__dataclass_fields__}
        kw["p99_ci"] = _pair(d.get("p99_ci"))
        kw["rps_ci"] = _pair(d.get("rps_ci"))
        kw["stream"] = _stream_from(d.get("stream"))
        return cls(**kw)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        d = asdict(self)
        d["stream"] = self.stream.to_dict() if self.stream else None
        return d


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
class CapacityResult(EndpointResult):
    """The outcome of one adaptive capacity search (or of a run of several parts).

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
    human sentence about either, for reports. ``confirm`` says how a check run's windows read
    when the first read a regression (see :func:`pytest_mlload.flow.confirm_check`); the
    figures are then the last window's.
    ``capacity_ci`` is a 95 % moving-block bootstrap interval over per-bin completion counts;
    ``p99_ci`` a 95 % interval from batch means (see :mod:`pytest_mlload.stats`).

    ``open_loop``, ``spike``, ``rate_limit_rps`` (capacity x safety factor) and ``hpa`` are
    the typed figures of the phases that ran. ``parts``, ``exploration`` and ``rate_limits``
    are filled on the result of a run of several parts (see the module docstring). ``mix``
    is the endpoint -> weight of a mix target (empty for one endpoint); it is compared with
    the baseline's like a setting.
    """

    host: str
    status: str
    reason: str
    users: int
    measure_s: float
    elapsed_s: float
    target_p99_ms: float
    endpoints: Mapping[str, EndpointResult] = field(default_factory=dict)
    probe: ProbeResult | None = None
    trajectory: tuple[WindowRecord, ...] = ()
    error_samples: tuple[str, ...] = ()
    generator_cpu_ratio: float | None = None
    window_start_epoch: float | None = None
    window_end_epoch: float | None = None
    capacity_ci: tuple[float, float] | None = None
    p99_ci: tuple[float, float] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    bound: str = ""
    knee_users: int | None = None
    check: bool = False
    note: str = ""
    confirm: str = ""
    open_loop: OpenLoopResult | None = None
    spike: SpikeResult | None = None
    rate_limit_rps: float | None = None
    hpa: HpaReport | None = None
    parts: Mapping[str, CapacityResult] = field(default_factory=dict)
    exploration: dict[str, Any] | None = None
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    mix: Mapping[str, float] = field(default_factory=dict)
    stream: StreamResult | None = None

    @property
    def converged(self) -> bool:
        """True when the search found an operating point with enough data (every part's)."""
        return self.status == "converged" and all(p.converged for p in self.parts.values())

    # The streaming contract (issue 14): None for a test whose requests did not stream.
    @property
    def goodput_rps(self) -> float | None:
        """Requests/s that met every SLO at the operating point (= ``capacity_rps`` in SLO
        mode)."""
        return self.stream.goodput_rps if self.stream else None

    @property
    def ttft_p50_ms(self) -> float | None:
        """Median time to first token at the operating point."""
        return self.stream.ttft_p50_ms if self.stream else None

    @property
    def ttft_p99_ms(self) -> float | None:
        """P99 time to first token at the operating point."""
        return self.stream.ttft_p99_ms if self.stream else None

    @property
    def tpot_p99_ms(self) -> float | None:
        """P99 of the per-request time per output token at the operating point."""
        return self.stream.tpot_p99_ms if self.stream else None

    @property
    def itl_p99_ms(self) -> float | None:
        """P99 of every inter-chunk gap at the operating point."""
        return self.stream.itl_p99_ms if self.stream else None

    @property
    def output_tokens_per_s(self) -> float | None:
        """Output tokens per second of successful streams at the operating point."""
        return self.stream.output_tokens_per_s if self.stream else None

    @property
    def token_source(self) -> str | None:
        """Where token counts came from: ``usage``, ``chunks`` or ``mixed``."""
        return self.stream.token_source if self.stream else None

    def __getitem__(self, part: str) -> CapacityResult:
        """The result of one part: ``result["production"]``, ``result["spike"]``."""
        try:
            return self.parts[part]
        except KeyError:
            known = ", ".join(repr(p) for p in self.parts) or "none (a single-part run)"
            raise KeyError(f"no part {part!r} in this result; its parts: {known}") from None

    def __iter__(self) -> Iterator[tuple[str, CapacityResult]]:
        """``(part name, result)`` for every part; a single-part run yields ``(name, self)``."""
        if self.parts:
            yield from self.parts.items()
        else:
            yield self.name, self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (inverse of :meth:`from_dict`)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["schema"] = RESULT_SCHEMA
        d["endpoints"] = {k: v.to_dict() for k, v in self.endpoints.items()}
        d["probe"] = self.probe.to_dict() if self.probe else None
        d["trajectory"] = [w.to_dict() for w in self.trajectory]
        d["error_samples"] = list(self.error_samples)
        d["open_loop"] = self.open_loop.to_dict() if self.open_loop else None
        d["spike"] = self.spike.to_dict() if self.spike else None
        d["hpa"] = self.hpa.to_dict() if self.hpa else None
        d["parts"] = {k: v.to_dict() for k, v in self.parts.items()}
        d["rate_limits"] = dict(self.rate_limits)
        d["mix"] = dict(self.mix)
        d["stream"] = self.stream.to_dict() if self.stream else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CapacityResult:
        """Rebuild from :meth:`to_dict` output (e.g. the driver's JSON)."""
        kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["endpoints"] = {
            k: (CapacityResult if "status" in v else EndpointResult).from_dict(v)
            for k, v in (d.get("endpoints") or {}).items()
        }
        kw["probe"] = ProbeResult.from_dict(d["probe"]) if d.get("probe") else None
        kw["trajectory"] = tuple(WindowRecord(**w) for w in d.get("trajectory") or ())
        kw["error_samples"] = tuple(d.get("error_samples") or ())
        kw["capacity_ci"] = _pair(d.get("capacity_ci"))
        kw["p99_ci"] = _pair(d.get("p99_ci"))
        kw["settings"] = dict(d.get("settings") or {})
        kw["bound"] = str(d.get("bound") or "")
        kw["knee_users"] = int(d["knee_users"]) if d.get("knee_users") is not None else None
        kw["check"] = bool(d.get("check", False))
        kw["note"] = str(d.get("note") or "")
        kw["confirm"] = str(d.get("confirm") or "")
        kw["open_loop"] = OpenLoopResult.from_dict(d["open_loop"]) if d.get("open_loop") else None
        kw["spike"] = SpikeResult.from_dict(d["spike"]) if d.get("spike") else None
        kw["hpa"] = _hpa_from(d.get("hpa"))
        kw["parts"] = {k: cls.from_dict(v) for k, v in (d.get("parts") or {}).items()}
        kw["rate_limits"] = dict(d.get("rate_limits") or {})
        kw["mix"] = dict(d.get("mix") or {})
        kw["stream"] = _stream_from(d.get("stream"))
        return cls(**kw)


def _hpa_from(d: Mapping[str, Any] | None) -> HpaReport | None:
    if not d:
        return None
    from pytest_mlload.hpa.recommend import HpaReport

    return HpaReport.from_dict(d)


def _pair(value: Any) -> tuple[float, float] | None:
    """A JSON [lo, hi] back to a tuple; None (or NaN bounds) stays None."""
    if not value:
        return None
    lo, hi = float(value[0]), float(value[1])
    return None if (lo != lo or hi != hi) else (lo, hi)
