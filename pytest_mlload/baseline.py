"""Baselines: the recorded figures CI gates compare against, kept in one reviewable YAML file.

A baseline file holds one :class:`BaselineEntry` per capacity test, keyed by
:func:`baseline_key` (the test file's path relative to the baseline file, ``::``, the test
name), so the same test gets the same key on every machine and from every working directory.
Each entry keeps the comparable settings it was measured with, the environment fingerprint
of the newest run and the last ``history`` runs; gates compare against the robust aggregates
(:attr:`BaselineEntry.capacity_rps`, :attr:`BaselineEntry.p99_ms`).

The file is written to be reviewed in pull requests:

- tests sorted by key, schema fields in a fixed order (``settings, fingerprint, runs``;
  ``recorded_at, capacity_rps, p50_ms, p95_ms, p99_ms, users, ...`` in a run), free-form
  mappings (settings, fingerprint, endpoints, extra) sorted, block style, figures rounded
  (rps and ms to 2 decimals, ratios to 4), so re-recording an identical figure produces no
  diff and the same data always gives the same bytes;
- plain YAML only (``yaml.safe_dump``/``safe_load``), no Python tags, no anchors;
- validated on load against a closed schema (``schema: 1``): a hand-edit that breaks it is a
  :class:`~pytest_mlload.errors.BaselineError` naming the file, the entry and the field,
  never a silent default; duplicate keys (a bad merge) are errors too;
- never corrupted: :meth:`BaselineStore.update` does read-modify-write under an exclusive
  ``flock`` on a sibling ``<name>.lock`` file (so pytest-xdist workers lose no entries), and
  replaces the file atomically (temp file in the same directory, fsync, ``os.replace``).
  Entries not being updated are written back with exactly the data they had. YAML comments
  are not preserved by a rewrite.

Nothing here imports pytest or Locust.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any

import yaml

from pytest_mlload._io import atomic_write, timed_lock
from pytest_mlload.config import DEFAULT_HISTORY, RunSettings
from pytest_mlload.errors import BaselineError
from pytest_mlload.results import CapacityResult, StreamResult

__all__ = [
    "SCHEMA_VERSION",
    "BaselineEntry",
    "BaselineRun",
    "BaselineStore",
    "RunExtras",
    "StoredP99",
    "StoredSpike",
    "StoredStream",
    "StoredStreamPoint",
    "baseline_key",
    "environment_fingerprint",
    "fingerprint_differences",
    "rounded_interval",
]

SCHEMA_VERSION = 1
"""The baseline file schema this version of pytest-mlload reads and writes."""

_HEADER = (
    "# pytest-mlload baselines: one entry per capacity test, keyed by test path relative to"
    " this file.\n"
    "# Record or refresh with: pytest --mlload-update-baseline\n"
)
REFERENCE_SPAN = 1.5
"""A run operating within this factor of the reference load agrees with it."""
MIN_DISPUTE_RUNS = 3
"""Kept runs needed before their operating points can move the reference load."""

_WAY_OUT = "fix or delete the entry, or rerun with --mlload-update-baseline"

# Decimals kept per unit suffix: enough to be meaningful, few enough that run-to-run float
# noise in an identical figure does not show up as a diff.
_DECIMALS = {"_rps": 2, "_ms": 2, "_ratio": 4}

_RUN_FIELDS = (
    "recorded_at",
    "capacity_rps",
    "capacity_ci_rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "p99_ci_ms",
    "users",
    "error_ratio",
    "requests",
    "endpoints",
    "extra",
)
_ENTRY_FIELDS = ("settings", "fingerprint", "runs")


# --------------------------------------------------------------------------- plain data


class _Invalid(Exception):
    """A validation problem at ``where`` (a field path); turned into BaselineError/ValueError."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}" if where else problem)
        self.where = where
        self.problem = problem


def _join(where: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{where}[{name}]"
    return f"{where}.{name}" if where else name


def _plain(value: Any, where: str) -> Any:
    """A fresh deep copy of ``value`` as plain YAML data, or :class:`_Invalid`.

    Plain means str, bool, int, finite float, None, lists (tuples become lists) and mappings
    with string keys. Fresh containers keep the dumper from emitting anchors.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(where, f"{value!r} is not a finite number (NaN/inf are never stored)")
        return value + 0.0  # -0.0 -> 0.0: the same figure always dumps to the same bytes
    if isinstance(value, list | tuple):
        return [_plain(v, _join(where, i)) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Invalid(where, f"mapping key {k!r} is not a string")
            out[k] = _plain(v, _join(where, k))
        return out
    raise _Invalid(
        where,
        f"{type(value).__name__} {value!r} is not plain data "
        "(expected str, number, bool, null, list or mapping)",
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid(where, f"expected a mapping, got {_describe(value)}")
    out: dict[str, Any] = _plain(value, where)
    return out


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(
    d: Mapping[str, Any],
    name: str,
    where: str,
    *,
    optional: bool = False,
    maximum: float | None = None,
) -> float | None:
    """A finite number >= 0 (<= ``maximum``) at ``d[name]``; None allowed when ``optional``."""
    here = _join(where, name)
    if name not in d:
        raise _Invalid(here, "missing")
    v = d[name]
    if v is None and optional:
        return None
    want = "a number >= 0" + (f" and <= {maximum:g}" if maximum is not None else "")
    if optional:
        want += " or null"
    if not _is_number(v) or not math.isfinite(v) or v < 0 or (maximum is not None and v > maximum):
        raise _Invalid(here, f"expected {want}, got {_describe(v)}")
    return float(v) + 0.0


def _integer(d: Mapping[str, Any], name: str, where: str, *, minimum: int) -> int:
    here = _join(where, name)
    if name not in d:
        raise _Invalid(here, "missing")
    v = d[name]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise _Invalid(here, f"expected an integer >= {minimum}, got {_describe(v)}")
    return v


def _rounded(name: str, value: Any) -> Any:
    """Round a figure by its unit suffix (``_rps``/``_ms`` 2 decimals, ``_ratio`` 4)."""
    if not isinstance(value, float):
        return value
    for suffix, decimals in _DECIMALS.items():
        if name.endswith(suffix):
            return round(value, decimals) + 0.0
    return value


def rounded_interval(name: str, pair: Any) -> tuple[float, float] | None:
    """An interval rounded like its figure, or None when there is no finite one."""
    if pair is None or not all(isinstance(v, float | int) and math.isfinite(v) for v in pair):
        return None
    lo, hi = (_rounded(name, float(v)) for v in pair)
    return (lo, hi)


def _interval(d: Mapping[str, Any], name: str, where: str) -> tuple[float, float] | None:
    """An optional ``[low, high]`` pair of numbers >= 0 with low <= high at ``d[name]``."""
    v = d.get(name)
    if v is None:
        return None
    if (
        not isinstance(v, list | tuple)
        or len(v) != 2
        or not all(_is_number(x) and math.isfinite(x) and x >= 0 for x in v)
        or v[0] > v[1]
    ):
        raise _Invalid(
            _join(where, name), f"expected [low, high] with 0 <= low <= high, got {_describe(v)}"
        )
    return (float(v[0]) + 0.0, float(v[1]) + 0.0)


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in d if k not in allowed)
    if unknown:
        raise _Invalid(
            _join(where, unknown[0]),
            f"unknown field (expected only {', '.join(allowed)})",
        )


def _utc_stamp(now: datetime | None) -> str:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"now={now!r} is naive; pass an aware datetime (e.g. datetime.now(UTC))")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _settings_dict(
    settings: RunSettings | Mapping[str, Any], mix: Mapping[str, float] | None = None
) -> dict[str, Any]:
    raw = settings.comparable(mix) if isinstance(settings, RunSettings) else settings
    try:
        return _mapping(raw, "settings")
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredP99:
    """A P99 a baseline run keeps beside its operating point: at another user count (the
    probe, ``users``) or at a constant arrival rate (the open-loop confirmation,
    ``rate_rps``)."""

    p99_ms: float
    p99_ci: tuple[float, float] | None = None
    users: int | None = None
    rate_rps: float | None = None
    p50_ms: float | None = None
    rps: float | None = None
    """Successful requests/s of the probe window: the baseline's throughput at ``users``,
    which check mode (holding that load) is compared with. None in older baselines."""
    rps_ci: tuple[float, float] | None = None
    """Its 95 % interval (None in older baselines)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSpike:
    """What a baseline run keeps of a spike: its rate, P99, error ratio and recovery."""

    target_rps: float
    p99_ms: float | None
    p99_ci: tuple[float, float] | None
    error_ratio: float
    recovery_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredStreamPoint:
    """TTFT and TPOT P99 (with intervals), SLO attainment and token source at ``users``."""

    users: int
    ttft_p99_ms: float | None = None
    ttft_p99_ci: tuple[float, float] | None = None
    tpot_p99_ms: float | None = None
    tpot_p99_ci: tuple[float, float] | None = None
    slo_attainment: float | None = None
    token_source: str = ""

    @classmethod
    def of(cls, users: int, st: StreamResult | None) -> StoredStreamPoint | None:
        """What a baseline keeps of a window's stream figures (4 significant digits)."""
        if st is None:
            return None
        return cls(
            users=users,
            ttft_p99_ms=_sig(st.ttft_p99_ms),
            ttft_p99_ci=_sig_pair(st.ttft_p99_ci),
            tpot_p99_ms=_sig(st.tpot_p99_ms),
            tpot_p99_ci=_sig_pair(st.tpot_p99_ci),
            slo_attainment=_sig(st.slo_attainment),
            token_source=st.token_source,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data as stored; absent figures left out."""
        d: dict[str, Any] = {"users": self.users}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "users" and v not in (None, ""):
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredStream:
    """The stream figures of a run: at its operating load and at its probe load."""

    operating: StoredStreamPoint | None = None
    probe: StoredStreamPoint | None = None

    def at(self, users: int) -> StoredStreamPoint | None:
        """The figures at ``users`` (the probe first: it is the common reference load)."""
        for point in (self.probe, self.operating):
            if point is not None and point.users == users:
                return point
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunExtras:
    """The figures a baseline run keeps beyond the core ones (the YAML ``extra`` mapping).

    Serialised here and only here: :meth:`from_result` (what a recorded run keeps, rounded
    to 4 significant digits so the file diffs cleanly), :meth:`to_dict` (as stored) and
    :meth:`parse` (validated; a bad field names itself). ``hpa`` is the
    :meth:`~pytest_mlload.hpa.recommend.HpaReport.to_dict` of a report with recommendations.
    """

    rate_limit_rps: float | None = None
    probe: StoredP99 | None = None
    open_loop: StoredP99 | None = None
    spike: StoredSpike | None = None
    hpa: dict[str, Any] | None = None
    bound: str = ""
    knee_users: int | None = None
    stream: StoredStream | None = None

    @classmethod
    def from_result(cls, r: CapacityResult) -> RunExtras:
        """What recording ``r`` keeps: probe, bound, knee, open loop, spike, rate limit, HPA."""
        probe = open_loop = spike = None
        pr = r.probe
        if pr is not None and pr.p99_ms is not None:
            # P99 at the previous baseline's user count: every recorded run has P99 at one
            # common load, which the P99 gate compares against
            probe = StoredP99(
                users=pr.users,
                p99_ms=_sig4(pr.p99_ms),
                p99_ci=_sig_pair(pr.p99_ci),
                rps=_sig4((pr.requests - pr.failures) / pr.duration_s) if pr.duration_s else None,
                rps_ci=rounded_interval("capacity_ci_rps", pr.rps_ci),
            )
        w = r.open_loop.window if r.open_loop else None
        if r.open_loop is not None and w is not None and w.p99_ms is not None:
            open_loop = StoredP99(
                rate_rps=_sig(r.open_loop.rate_rps),
                p50_ms=_sig(w.p50_ms),
                p99_ms=_sig4(w.p99_ms),
                p99_ci=_sig_pair(w.p99_ci),
            )
        if r.spike is not None:
            spike = StoredSpike(
                target_rps=_sig4(r.spike.target_rps),
                p99_ms=_sig(r.p99_ms),
                p99_ci=_sig_pair(r.p99_ci),
                error_ratio=_sig4(r.error_ratio),
                recovery_s=_sig(r.spike.recovery_s),
            )
        hpa = r.hpa.to_dict() if r.hpa is not None and r.hpa.recommended else None
        return cls(
            rate_limit_rps=_sig(r.rate_limit_rps),
            probe=probe,
            open_loop=open_loop,
            spike=spike,
            hpa=_round_floats(hpa),  # an empty report (Prometheus away) would hide the reference
            bound=r.bound,
            knee_users=r.knee_users,
            stream=_stored_stream(r),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data as stored; empty parts left out."""
        d: dict[str, Any] = {}
        if self.rate_limit_rps is not None:
            d["rate_limit_rps"] = self.rate_limit_rps
        if self.probe is not None:
            d["probe"] = {"users": self.probe.users, "p99_ms": self.probe.p99_ms}
            if self.probe.p99_ci:
                d["probe"]["p99_ci"] = list(self.probe.p99_ci)
            if self.probe.rps is not None:
                d["probe"]["rps"] = self.probe.rps
            if self.probe.rps_ci:
                d["probe"]["rps_ci"] = list(self.probe.rps_ci)
        if self.open_loop is not None:
            ol = self.open_loop
            d["open_loop"] = {"rate_rps": ol.rate_rps, "p50_ms": ol.p50_ms, "p99_ms": ol.p99_ms}
            if ol.p99_ci:
                d["open_loop"]["p99_ci"] = list(ol.p99_ci)
        if self.spike is not None:
            d["spike"] = {f.name: getattr(self.spike, f.name) for f in fields(self.spike)}
            d["spike"].pop("p99_ci")
            if self.spike.p99_ci:
                d["spike"]["p99_ci"] = list(self.spike.p99_ci)
        if self.hpa:
            d["hpa"] = self.hpa
        if self.bound:
            d["bound"] = self.bound
        if self.knee_users is not None:
            d["knee_users"] = self.knee_users
        if self.stream is not None:
            d["stream"] = {
                name: point.to_dict()
                for name in ("operating", "probe")
                if (point := getattr(self.stream, name)) is not None
            }
        return d

    @classmethod
    def parse(cls, d: Mapping[str, Any], where: str) -> RunExtras:
        """Validate stored ``extra`` data; :class:`_Invalid` names the bad field."""
        _check_keys(d, _EXTRA_FIELDS, where)
        bound = d.get("bound", "")
        if bound not in ("", "max_users"):
            raise _Invalid(_join(where, "bound"), f"expected 'max_users', got {_describe(bound)}")
        hpa = d.get("hpa")
        if hpa is not None and not isinstance(hpa, dict):
            raise _Invalid(_join(where, "hpa"), f"expected a mapping, got {_describe(hpa)}")
        return cls(
            rate_limit_rps=_positive(d, "rate_limit_rps", where) if "rate_limit_rps" in d else None,
            probe=_stored_p99(d, "probe", where, ("users", "p99_ms", "p99_ci", "rps", "rps_ci")),
            open_loop=_stored_p99(
                d, "open_loop", where, ("rate_rps", "p50_ms", "p99_ms", "p99_ci")
            ),
            spike=_stored_spike(d, where),
            hpa=hpa,
            bound=str(bound),
            knee_users=_integer(d, "knee_users", where, minimum=1) if "knee_users" in d else None,
            stream=_parse_stream(d, where),
        )


_EXTRA_FIELDS = tuple(f.name for f in fields(RunExtras))


def _stored_stream(r: CapacityResult) -> StoredStream | None:
    """The stream figures a recorded run keeps (None for a test that did not stream)."""
    operating = StoredStreamPoint.of(r.users, r.stream)
    probe = StoredStreamPoint.of(r.probe.users, r.probe.stream) if r.probe else None
    return StoredStream(operating=operating, probe=probe) if operating or probe else None


_STREAM_POINT_FIELDS = tuple(f.name for f in fields(StoredStreamPoint))


def _sub_mapping(d: Mapping[str, Any], name: str, where: str) -> tuple[Mapping[str, Any], str]:
    """``d[name]`` (present, not None) as a mapping, and where it is; else :class:`_Invalid`."""
    raw, here = d[name], _join(where, name)
    if not isinstance(raw, Mapping):
        raise _Invalid(here, f"expected a mapping, got {_describe(raw)}")
    return raw, here


def _parse_stream_point(d: Mapping[str, Any], name: str, where: str) -> StoredStreamPoint | None:
    if d.get(name) is None:
        return None
    raw, here = _sub_mapping(d, name, where)
    _check_keys(raw, _STREAM_POINT_FIELDS, here)
    source = raw.get("token_source", "")
    if source not in ("", "usage", "chunks", "mixed"):
        raise _Invalid(
            _join(here, "token_source"), f"expected usage, chunks or mixed, got {_describe(source)}"
        )

    def num(name: str, maximum: float | None = None) -> float | None:
        return _number(raw, name, here, optional=True, maximum=maximum) if name in raw else None

    return StoredStreamPoint(
        users=_integer(raw, "users", here, minimum=1),
        ttft_p99_ms=num("ttft_p99_ms"),
        ttft_p99_ci=_interval(raw, "ttft_p99_ci", here),
        tpot_p99_ms=num("tpot_p99_ms"),
        tpot_p99_ci=_interval(raw, "tpot_p99_ci", here),
        slo_attainment=num("slo_attainment", maximum=1.0),
        token_source=str(source),
    )


def _parse_stream(d: Mapping[str, Any], where: str) -> StoredStream | None:
    if d.get("stream") is None:
        return None
    raw, here = _sub_mapping(d, "stream", where)
    _check_keys(raw, ("operating", "probe"), here)
    return StoredStream(
        operating=_parse_stream_point(raw, "operating", here),
        probe=_parse_stream_point(raw, "probe", here),
    )


def _positive(d: Mapping[str, Any], name: str, where: str) -> float:
    """A finite number > 0 at ``d[name]`` (a rate a gate divides by)."""
    v = _number(d, name, where)
    if not v:
        raise _Invalid(_join(where, name), f"expected a number > 0, got {_describe(d[name])}")
    return v


def _stored_p99(
    d: Mapping[str, Any], name: str, where: str, allowed: tuple[str, ...]
) -> StoredP99 | None:
    if d.get(name) is None:
        return None
    raw, here = _sub_mapping(d, name, where)
    _check_keys(raw, allowed, here)
    return StoredP99(
        p99_ms=_number(raw, "p99_ms", here),  # type: ignore[arg-type]
        p99_ci=_interval(raw, "p99_ci", here),
        users=_integer(raw, "users", here, minimum=1) if "users" in allowed else None,
        rate_rps=_positive(raw, "rate_rps", here) if "rate_rps" in allowed else None,
        p50_ms=_number(raw, "p50_ms", here, optional=True) if "p50_ms" in raw else None,
        rps=_number(raw, "rps", here, optional=True) if "rps" in raw else None,
        rps_ci=_interval(raw, "rps_ci", here),
    )


def _stored_spike(d: Mapping[str, Any], where: str) -> StoredSpike | None:
    if d.get("spike") is None:
        return None
    raw, here = _sub_mapping(d, "spike", where)
    _check_keys(raw, tuple(f.name for f in fields(StoredSpike)), here)
    return StoredSpike(
        target_rps=_positive(raw, "target_rps", here),
        p99_ms=_number(raw, "p99_ms", here, optional=True),
        p99_ci=_interval(raw, "p99_ci", here),
        error_ratio=_number(raw, "error_ratio", here, maximum=1.0),  # type: ignore[arg-type]
        recovery_s=_number(raw, "recovery_s", here, optional=True) if "recovery_s" in raw else None,
    )


def _sig4(value: float) -> float:
    """4 significant digits of a finite figure."""
    return float(f"{value:.4g}")


def _sig(value: float | None) -> float | None:
    """4 significant digits (None, NaN and inf become None)."""
    out = _round_floats(value)
    return None if out is None else float(out)


def _sig_pair(pair: tuple[float, float] | None) -> tuple[float, float] | None:
    """A latency interval as stored (rounded like its figure), or None."""
    return rounded_interval("p99_ci_ms", pair)


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineRun:
    """One recorded capacity run: an element of an entry's history.

    ``recorded_at`` is ISO-8601 UTC at seconds precision with a ``Z`` suffix. ``endpoints``
    maps a request name to ``capacity_rps, p50_ms, p95_ms, p99_ms, requests, failures,
    error_ratio``. ``extra`` holds the typed figures beyond those (:class:`RunExtras`).
    """

    recorded_at: str
    capacity_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    users: int
    error_ratio: float
    requests: int
    endpoints: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    extra: RunExtras = field(default_factory=RunExtras)
    capacity_ci_rps: tuple[float, float] | None = None  # the run's own 95 % intervals
    p99_ci_ms: tuple[float, float] | None = None

    @classmethod
    def from_result(
        cls,
        result: CapacityResult,
        *,
        now: datetime | None = None,
    ) -> BaselineRun:
        """The run to record for ``result``, figures rounded as they will be stored.

        Only converged results make baselines (an inconclusive search has no trustworthy
        operating point): anything else raises :class:`ValueError`. The run keeps
        :meth:`RunExtras.from_result`. ``now`` (aware) defaults to the current time.
        """
        if not result.converged:
            raise ValueError(
                f"{result.name}: an {result.status!r} result cannot be recorded as a baseline"
                + (f" ({result.reason})" if result.reason else "")
            )
        endpoints = {
            name: {
                "capacity_rps": _rounded("capacity_rps", ep.capacity_rps),
                "p50_ms": _rounded("p50_ms", ep.p50_ms),
                "p95_ms": _rounded("p95_ms", ep.p95_ms),
                "p99_ms": _rounded("p99_ms", ep.p99_ms),
                "requests": ep.requests,
                "failures": ep.failures,
                "error_ratio": _rounded("error_ratio", ep.error_ratio),
            }
            for name, ep in result.endpoints.items()
        }
        return cls(
            recorded_at=_utc_stamp(now),
            capacity_rps=_rounded("capacity_rps", result.capacity_rps),
            p50_ms=_rounded("p50_ms", result.p50_ms),
            p95_ms=_rounded("p95_ms", result.p95_ms),
            p99_ms=_rounded("p99_ms", result.p99_ms),
            users=result.users,
            error_ratio=_rounded("error_ratio", result.error_ratio),
            requests=result.requests,
            endpoints=endpoints,
            extra=RunExtras.from_result(result),
            capacity_ci_rps=rounded_interval("capacity_ci_rps", result.capacity_ci),
            p99_ci_ms=rounded_interval("p99_ci_ms", result.p99_ci),
        )

    @classmethod
    def from_dict(cls, d: Any, *, where: str = "run") -> BaselineRun:
        """Validate and build from stored data; :class:`ValueError` names the bad field."""
        try:
            return _run_from_dict(d, where)
        except _Invalid as exc:
            raise ValueError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain data as stored: figures rounded, validated (NaN/inf -> :class:`ValueError`).

        ``extra`` is left out when empty.
        """
        d: dict[str, Any] = {
            "recorded_at": self.recorded_at,
            "capacity_rps": _rounded("capacity_rps", self.capacity_rps),
            "p50_ms": _rounded("p50_ms", self.p50_ms),
            "p95_ms": _rounded("p95_ms", self.p95_ms),
            "p99_ms": _rounded("p99_ms", self.p99_ms),
            "users": self.users,
            "error_ratio": _rounded("error_ratio", self.error_ratio),
            "requests": self.requests,
            "endpoints": {
                str(name): {k: _rounded(k, v) for k, v in fields.items()}
                for name, fields in self.endpoints.items()
            },
        }
        for name in ("capacity_ci_rps", "p99_ci_ms"):
            pair = rounded_interval(name, getattr(self, name))
            if pair is not None:
                d[name] = list(pair)
        extra = self.extra.to_dict()
        if extra:
            d["extra"] = extra
        # Validate with the loader's own rules: whatever we write, we can read back.
        try:
            _run_from_dict(d, "run")
            stored: dict[str, Any] = _plain(d, "run")
            return stored
        except _Invalid as exc:
            raise ValueError(f"refusing to store {exc}") from None


def _run_from_dict(d: Any, where: str) -> BaselineRun:
    if not isinstance(d, Mapping):
        raise _Invalid(where, f"expected a mapping, got {_describe(d)}")
    _check_keys(d, _RUN_FIELDS, where)
    stamp = d.get("recorded_at")
    here = _join(where, "recorded_at")
    if not isinstance(stamp, str):
        raise _Invalid(
            here,
            "expected a quoted ISO-8601 UTC time like '2026-11-25T23:59:01Z', "
            f"got {_describe(stamp)}",
        )
    try:
        parsed = datetime.fromisoformat(stamp)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise _Invalid(here, f"{stamp!r} is not an ISO-8601 UTC time like '2026-11-25T23:59:01Z'")
    endpoints_raw = d.get("endpoints", {})
    if endpoints_raw is None:
        endpoints_raw = {}
    endpoints = _mapping(endpoints_raw, _join(where, "endpoints"))
    for name, figures in endpoints.items():
        ep_where = _join(_join(where, "endpoints"), name)
        if not isinstance(figures, dict):
            raise _Invalid(ep_where, f"expected a mapping of figures, got {_describe(figures)}")
        for k, v in figures.items():
            if v is not None and not (_is_number(v) and v >= 0):
                raise _Invalid(
                    _join(ep_where, k), f"expected a number >= 0 or null, got {_describe(v)}"
                )
    extra_raw = d.get("extra", {})
    extra = _mapping({} if extra_raw is None else extra_raw, _join(where, "extra"))
    return BaselineRun(
        recorded_at=stamp,
        capacity_rps=_number(d, "capacity_rps", where),  # type: ignore[arg-type]
        p50_ms=_number(d, "p50_ms", where, optional=True),
        p95_ms=_number(d, "p95_ms", where, optional=True),
        p99_ms=_number(d, "p99_ms", where, optional=True),
        users=_integer(d, "users", where, minimum=1),
        error_ratio=_number(d, "error_ratio", where, maximum=1.0),  # type: ignore[arg-type]
        requests=_integer(d, "requests", where, minimum=0),
        endpoints=endpoints,
        extra=RunExtras.parse(extra, _join(where, "extra")),
        capacity_ci_rps=_interval(d, "capacity_ci_rps", where),
        p99_ci_ms=_interval(d, "p99_ci_ms", where),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BaselineEntry:
    """Everything kept for one test id: settings, fingerprint and the last runs (newest last).

    Gates compare against the robust aggregates :attr:`capacity_rps` and :attr:`p99_ms`
    (medians over the kept runs) at :attr:`users` (the load most runs measured P99 at).
    """

    key: str
    settings: dict[str, Any]
    fingerprint: dict[str, Any]
    runs: tuple[BaselineRun, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"a baseline key must be a non-empty string, got {self.key!r}")
        if not isinstance(self.runs, tuple):
            object.__setattr__(self, "runs", tuple(self.runs))
        if not self.runs:
            raise ValueError(f"baseline entry {self.key!r} needs at least one run")

    def settings_differences(
        self, settings: RunSettings, mix: Mapping[str, float] | None = None
    ) -> list[str]:
        """What differs between the entry's settings and ``settings`` (with ``mix``), one
        ``"name: baseline X, now Y"`` each; empty when comparable. An entry recorded before
        mixes were compared (no ``mix`` key) is compared without it."""
        now = settings.comparable(mix)
        if "mix" not in self.settings:
            now.pop("mix", None)
        defaults = {k: getattr(RunSettings(), k) for k in RunSettings.COMPARABLE_IF_SET}
        for k in RunSettings.COMPARABLE_IF_SET:  # stored when set, so absent now = the default
            if k in self.settings and k not in now:
                now[k] = defaults[k]
        return [
            f"{k}: baseline {self.settings.get(k)!r}, now {v!r}"
            for k, v in now.items()
            if self.settings.get(k) != v
        ]

    @property
    def latest(self) -> BaselineRun:
        """The newest run."""
        return self.runs[-1]

    @property
    def capacity_rps(self) -> float:
        """Median capacity over the kept runs, in req/s (one noisy run cannot move it much)."""
        return float(statistics.median(r.capacity_rps for r in self.runs))

    @property
    def p99_ms(self) -> float | None:
        """Median P99 over the kept runs that measured one, in ms; None when none did."""
        values = [r.p99_ms for r in self.runs if r.p99_ms is not None]
        return float(statistics.median(values)) if values else None

    @property
    def users(self) -> int:
        """The entry's reference load: where runs recorded later probe P99 and throughput,
        where check mode holds, and where the P99 gate compares.

        A run recorded while the entry existed probes P99 at the reference load of that
        moment (``extra.probe``), so the newest run's probe load is the reference in force;
        it stays put as runs are added (the newest run's own operating point moves with that
        run's noise, which left the P99 gate one comparable run and a selection effect). An
        entry whose newest run has no probe (its first run, or runs recorded before probes)
        takes the user count at which it holds the most P99 figures, ties to the newest run.

        That keeps whatever load the first run picked, so a first search that stopped far
        from where the server operates (a stall at 3 users on a server the other runs put
        at 9-12) would fix every later probe and check there. So once at least
        :data:`MIN_DISPUTE_RUNS` runs are kept and more than half of them operated outside
        :data:`REFERENCE_SPAN` of the reference, it moves to the load the kept runs' median
        operating point agrees with: among the loads within that span of the median, the one
        with the most P99 figures (ties: nearest the median, then newest). The next run
        probes the new load, which makes it the reference in force.
        """
        loads: list[int] = []  # one entry per P99 figure, oldest first
        for run in self.runs:
            if run.p99_ms is not None:
                loads.append(run.users)
            probe = run.extra.probe
            if probe is not None and probe.users is not None and probe.users != run.users:
                loads.append(probe.users)
        if not loads:
            return self.latest.users
        # max() keeps the first of equal keys: scanning newest first gives ties to the newest
        newest_first = loads[::-1]
        ref = self._in_force() or max(newest_first, key=loads.count)
        if not self._disputes(ref):
            return ref
        mid = statistics.median_low(r.users for r in self.runs)
        near = [u for u in newest_first if _within_span(u, mid)]
        return max(near, key=lambda u: (loads.count(u), -abs(u - mid))) if near else mid

    def _in_force(self) -> int | None:
        """The load the newest run probed: the reference when it was recorded (None if it
        has no probe)."""
        probe = self.latest.extra.probe
        return probe.users if probe is not None else None

    def _far_from(self, users: int) -> list[int]:
        """The kept runs' operating loads outside :data:`REFERENCE_SPAN` of ``users``, sorted."""
        return sorted(r.users for r in self.runs if not _within_span(r.users, users))

    def _disputes(self, users: int) -> bool:
        """Whether more than half of at least :data:`MIN_DISPUTE_RUNS` kept runs operated
        outside :data:`REFERENCE_SPAN` of ``users``."""
        n = len(self.runs)
        return n >= MIN_DISPUTE_RUNS and 2 * len(self._far_from(users)) > n

    def load_notes(self) -> list[str]:
        """What a user recording this entry should know about its loads, one sentence each:
        the reference load moved with the newest run (:attr:`users`), or the newest run
        operated outside :data:`REFERENCE_SPAN` of the kept runs' median operating load (a
        search that stalled or met a noisy spell: its capacity may be an outlier)."""
        notes = []
        was, now = self._in_force(), self.users
        if was is not None and was != now and self._disputes(was):
            far = self._far_from(was)
            notes.append(
                f"reference load moved from {was} to {now} users: {len(far)} of "
                f"{len(self.runs)} kept runs operated at {_span_text(far)} users, not near "
                f"{was}; later runs probe there and check mode holds it"
            )
        ops = [r.users for r in self.runs]
        mid = statistics.median_low(ops)
        if len(ops) >= MIN_DISPUTE_RUNS and not _within_span(self.latest.users, mid):
            notes.append(
                f"the newest run operated at {self.latest.users} users, far from the kept runs' "
                f"median {mid} ({_span_text(ops)}): its search may have stalled or met a "
                "noisy spell (the gates read medians, which one such run moves little)"
            )
        return notes

    @property
    def capacity_spread_ratio(self) -> float:
        """How far the kept runs disagree: ``(max - min) / median`` of capacity.

        0.0 for a single run or identical runs; 0.25 means the runs span a quarter of the
        median. With a zero median and differing runs it is ``inf``. A gate can use it to
        tell a noisy baseline from a regression.
        """
        caps = [r.capacity_rps for r in self.runs]
        spread = max(caps) - min(caps)
        if spread == 0:
            return 0.0
        median = statistics.median(caps)
        return spread / median if median > 0 else math.inf

    @classmethod
    def from_result(
        cls,
        key: str,
        result: CapacityResult,
        settings: RunSettings | Mapping[str, Any],
        fingerprint: Mapping[str, Any] | None = None,
        *,
        now: datetime | None = None,
    ) -> BaselineEntry:
        """A one-run entry for ``result``; ``fingerprint`` defaults to this machine's.

        ``settings`` is a :class:`RunSettings` (its :meth:`~RunSettings.comparable` part is
        kept) or that mapping already. See :meth:`BaselineRun.from_result` for the rest.
        """
        run = BaselineRun.from_result(result, now=now)
        fp = environment_fingerprint() if fingerprint is None else fingerprint
        return cls(
            key=key,
            settings=_settings_dict(settings, result.mix),
            fingerprint=_fp_dict(fp),
            runs=(run,),
        )

    def with_run(
        self,
        run: BaselineRun,
        settings: RunSettings | Mapping[str, Any],
        fingerprint: Mapping[str, Any],
        history: int,
    ) -> BaselineEntry:
        """This entry with ``run`` appended, keeping the newest ``history`` runs.

        If ``settings`` differ from the stored ones the old runs are not comparable, so the
        history restarts with just ``run``. The fingerprint becomes ``fingerprint`` (the
        newest run's environment).
        """
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        new_settings = _settings_dict(settings)
        # an entry recorded before mixes were compared has no "mix": its runs stay
        same = {k: v for k, v in new_settings.items() if k != "mix" or "mix" in self.settings}
        kept = self.runs if same == self.settings else ()
        runs = (*kept, run)[-history:]
        return BaselineEntry(
            key=self.key, settings=new_settings, fingerprint=_fp_dict(fingerprint), runs=runs
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data as stored under the entry's key (the key itself is not included)."""
        try:
            return {
                "settings": _mapping(self.settings, "settings"),
                "fingerprint": _mapping(self.fingerprint, "fingerprint"),
                "runs": [run.to_dict() for run in self.runs],
            }
        except _Invalid as exc:
            raise ValueError(f"refusing to store entry {self.key!r}: {exc}") from None

    @classmethod
    def from_dict(cls, key: str, d: Any) -> BaselineEntry:
        """Validate and build from stored data; :class:`ValueError` names the bad field."""
        try:
            return _entry_from_dict(key, d)
        except _Invalid as exc:
            raise ValueError(f"entry {key!r}, {exc}") from None


def _within_span(users: int, reference: int) -> bool:
    return reference / REFERENCE_SPAN <= users <= reference * REFERENCE_SPAN


def _span_text(loads: Sequence[int]) -> str:
    """``"9-13"``, or ``"9"`` when every load is the same."""
    low, high = min(loads), max(loads)
    return f"{low}-{high}" if low != high else str(low)


def _round_floats(value: Any) -> Any:
    """Round floats to 4 significant digits so baseline extras diff cleanly."""
    if isinstance(value, float):
        return float(f"{value:.4g}") if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round_floats(v) for v in value]
    return value


def _fp_dict(fingerprint: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return _mapping(fingerprint, "fingerprint")
    except _Invalid as exc:
        raise ValueError(str(exc)) from None


def _entry_from_dict(key: str, d: Any) -> BaselineEntry:
    if not isinstance(d, Mapping):
        raise _Invalid(
            "", f"expected a mapping with settings, fingerprint and runs, got {_describe(d)}"
        )
    _check_keys(d, _ENTRY_FIELDS, "")
    if "settings" not in d:
        raise _Invalid("settings", "missing")
    settings = _mapping(d["settings"], "settings")
    fingerprint = _mapping(d.get("fingerprint") or {}, "fingerprint")
    runs_raw = d.get("runs")
    if not isinstance(runs_raw, list) or not runs_raw:
        raise _Invalid("runs", f"expected a non-empty list of runs, got {_describe(runs_raw)}")
    runs = tuple(_run_from_dict(r, _join("runs", i)) for i, r in enumerate(runs_raw))
    return BaselineEntry(key=key, settings=settings, fingerprint=fingerprint, runs=runs)


# --------------------------------------------------------------------------- environment


def _cpu_model(cpuinfo: str) -> str | None:
    """The first ``model name`` of a /proc/cpuinfo text, whitespace-normalised."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "model name" and value.strip():
            return " ".join(value.split())
    return None


def _total_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - non-POSIX
        try:
            import psutil

            return int(psutil.virtual_memory().total)
        except Exception:
            return None


def environment_fingerprint() -> dict[str, Any]:
    """What about this machine can move capacity figures, as plain data.

    Keys: ``python`` ("3.11"), ``implementation``, ``system``, ``machine``, ``cpu_count``,
    ``cpu_model`` (``model name`` from /proc/cpuinfo, else :func:`platform.processor`, else
    None) and ``memory_gib`` (total memory, whole GiB). Hostname and CPU MHz are left out on
    purpose: they differ between otherwise identical CI runners.
    """
    model: str | None = None
    with suppress(OSError, UnicodeDecodeError):
        model = _cpu_model(Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    if model is None:
        model = platform.processor() or None
    memory = _total_memory_bytes()
    return {
        "python": f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}",
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory / 2**30) if memory else None,
    }


def fingerprint_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Human-readable ``"cpu_count: 2 -> 8"`` lines for every key that differs, sorted.

    A key present on one side only shows ``(missing)`` on the other. Empty when equal.
    """

    def show(d: Mapping[str, Any], k: str) -> str:
        if k not in d:
            return "(missing)"
        return "null" if d[k] is None else str(d[k])

    return [
        f"{k}: {show(a, k)} -> {show(b, k)}"
        for k in sorted(set(a) | set(b))
        if a.get(k, _MISSING) != b.get(k, _MISSING)
    ]


_MISSING = object()


# --------------------------------------------------------------------------- keys


def baseline_key(test_path: Path, test_name: str, baseline_path: Path) -> str:
    """The stable id of a test inside a baseline file: ``<relative path>::<test name>``.

    The path is ``test_path`` relative to the baseline file's directory in POSIX form
    (``../`` when the file lives elsewhere); ``test_name`` is the node id part after the
    file, e.g. ``test_classify`` or ``TestX::test_y[param]``. Directories are resolved
    (symlinks, ``..``) so the key depends on neither the working directory nor pytest's
    rootdir; pass absolute paths, as pytest gives them.
    """
    if not test_name or not isinstance(test_name, str):
        raise ValueError(f"test_name must be a non-empty string, got {test_name!r}")
    test_abs = os.path.abspath(test_path)
    test_real = os.path.join(
        os.path.realpath(os.path.dirname(test_abs)), os.path.basename(test_abs)
    )
    base_dir = os.path.realpath(os.path.dirname(os.path.abspath(baseline_path)))
    rel = os.path.relpath(test_real, base_dir)
    return f"{PurePath(rel).as_posix()}::{test_name.removeprefix('::')}"


# --------------------------------------------------------------------------- YAML


# libyaml parses ~10x faster and yields the same data; the dumper stays pure Python (below) so
# the bytes written never depend on whether libyaml is installed.
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """``safe_load`` that rejects duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


class _Dumper(yaml.SafeDumper):
    """Pure-Python ``safe_dump`` without anchors/aliases (no ``&id001`` for shared objects)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_deep(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_deep(v) for v in value]
    return value


def _canonical_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Schema fields in schema order (headline figures first), free-form mappings sorted."""
    out = {f: _sorted_deep(entry[f]) for f in _ENTRY_FIELDS if f in entry and f != "runs"}
    out["runs"] = [
        {f: _sorted_deep(run[f]) for f in _RUN_FIELDS if f in run} for run in entry["runs"]
    ]
    return out


def _dumps(tests: Mapping[str, Any]) -> bytes:
    """The file's bytes: header, ``schema``, then ``tests`` sorted by key."""
    body = yaml.dump(
        {
            "schema": SCHEMA_VERSION,
            "tests": {k: _canonical_entry(tests[k]) for k in sorted(tests)},
        },
        Dumper=_Dumper,
        sort_keys=False,  # the order is made explicit above
        default_flow_style=False,
        allow_unicode=True,
        width=10_000,  # never fold long strings: a folded line diffs badly
        indent=2,
    )
    return (_HEADER + body).encode("utf-8")


def _parse(data: bytes, path: Path) -> tuple[dict[str, Any], dict[str, BaselineEntry]]:
    """Raw ``tests`` mapping and validated entries of a baseline file's bytes."""

    def fail(problem: str) -> BaselineError:
        return BaselineError(f"baseline file {path}: {problem}; {_WAY_OUT}", path=str(path))

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (byte {exc.start})") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise fail(f"{line}invalid YAML ({problem})") from None
    except yaml.YAMLError as exc:
        raise fail(f"invalid YAML ({exc})") from None
    if doc is None:  # empty or comments only
        return {}, {}
    if not isinstance(doc, dict):
        raise fail(f"expected a mapping with 'schema' and 'tests' at the top, got {_describe(doc)}")
    schema = doc.get("schema")
    if "schema" not in doc:
        raise fail(f"missing 'schema: {SCHEMA_VERSION}' at the top")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise fail(
            f"schema {schema!r} is not supported: this pytest-mlload reads schema {SCHEMA_VERSION}"
            " (upgrade pytest-mlload, or re-record the file)"
        )
    unknown = sorted(str(k) for k in doc if k not in ("schema", "tests"))
    if unknown:
        raise fail(f"unknown top-level field {unknown[0]!r} (expected only schema and tests)")
    tests = doc.get("tests")
    if tests is None:
        tests = {}
    if not isinstance(tests, dict):
        raise fail(f"'tests' must be a mapping of test key to entry, got {_describe(tests)}")
    entries: dict[str, BaselineEntry] = {}
    for key in sorted(tests, key=str):
        if not isinstance(key, str) or not key:
            raise fail(f"test key {key!r} is not a non-empty string")
        try:
            entries[key] = _entry_from_dict(key, tests[key])
        except _Invalid as exc:
            where = f"field {exc.where}: " if exc.where else ""
            raise fail(f"entry {key!r}, {where}{exc.problem}") from None
    return {k: _plain(v, k) for k, v in tests.items()}, entries


# --------------------------------------------------------------------------- store


class BaselineStore:
    """The baseline YAML file at ``path``, keeping the last ``history`` runs per test.

    Reads never modify the file. :meth:`update` and :meth:`record` change it under an
    exclusive lock on ``<name>.lock`` next to it (waiting up to ``lock_timeout_s``), so
    concurrent pytest processes (xdist workers) lose no entries. The lock file is left in
    place on purpose: removing it would race with a waiting process. ``flock`` locks die
    with their process, so a leftover lock file never blocks anyone.
    """

    def __init__(
        self, path: Path, *, history: int = DEFAULT_HISTORY, lock_timeout_s: float = 30.0
    ) -> None:
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        if not (_is_number(lock_timeout_s) and lock_timeout_s >= 0):
            raise ValueError(f"lock_timeout_s must be a number >= 0, got {lock_timeout_s!r}")
        self.path = Path(path)
        self.history = history
        self.lock_timeout_s = float(lock_timeout_s)
        self._cache: tuple[tuple[int, int, int], dict[str, BaselineEntry]] | None = None

    def __repr__(self) -> str:
        return f"BaselineStore({str(self.path)!r}, history={self.history})"

    @property
    def lock_path(self) -> Path:
        """The sibling lock file, ``<name>.lock`` (next to the real file if ``path`` is a link)."""
        real = self._real_path()
        return real.with_name(real.name + ".lock")

    def _real_path(self) -> Path:
        return Path(os.path.realpath(self.path))

    def _read(self) -> tuple[bytes | None, dict[str, Any], dict[str, BaselineEntry]]:
        try:
            data = self._real_path().read_bytes()
        except FileNotFoundError:
            return None, {}, {}
        except OSError as exc:
            raise BaselineError(
                f"cannot read baseline file {self.path}: {exc}", path=str(self.path)
            ) from None
        raw, entries = _parse(data, self.path)
        return data, raw, entries

    def load(self) -> dict[str, BaselineEntry]:
        """All entries by key (sorted); ``{}`` when the file does not exist.

        A malformed file raises :class:`BaselineError` naming the file, the entry and the
        field. The file is never modified. The parse is cached until the file changes
        (size, mtime or inode), so a test that asks for several entries reads it once.
        """
        try:
            st = self._real_path().stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return {}
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._read()[2])
        return dict(self._cache[1])

    def get(self, key: str) -> BaselineEntry | None:
        """The entry for ``key``, or None when there is none."""
        return self.load().get(key)

    def update(self, entries: Mapping[str, BaselineEntry]) -> None:
        """Write ``entries`` (replacing those keys), leaving every other entry as it was.

        Read-modify-write under the lock; atomic replace; file mode kept. If the existing
        file is malformed, :class:`BaselineError` is raised and the file is not touched.
        An entry that cannot be stored (NaN, non-plain data) raises :class:`ValueError`
        before anything is written.
        """
        prepared = self._prepare(entries)
        self._transaction(lambda _existing: prepared)

    def record(
        self,
        key: str,
        result: CapacityResult,
        settings: RunSettings | Mapping[str, Any],
        *,
        fingerprint: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> BaselineEntry:
        """Append ``result`` as a run to ``key``'s entry (creating it) and return the entry."""
        return self.record_many([(key, result, settings)], fingerprint=fingerprint, now=now)[key]

    def record_many(
        self,
        items: Sequence[tuple[str, CapacityResult, RunSettings | Mapping[str, Any]]],
        *,
        fingerprint: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> dict[str, BaselineEntry]:
        """Append each ``(key, result, settings)`` as a run to its entry, in one write.

        The entries are read under the same lock as the write and each run is merged into the
        entry as it is on disk then, so concurrent recorders (two sessions, xdist workers) of
        one key lose no runs. ``fingerprint`` defaults to this machine's; ``now`` (aware) to
        the current time. Nothing is written when any item cannot be stored.
        """
        fp = environment_fingerprint() if fingerprint is None else fingerprint
        fresh = [BaselineEntry.from_result(k, r, s, fp, now=now) for k, r, s in items]
        for entry in fresh:
            entry.to_dict()  # fail on unstorable data before taking the lock
        out: dict[str, BaselineEntry] = {}

        def merge(existing: Mapping[str, BaselineEntry]) -> dict[str, dict[str, Any]]:
            for new in fresh:
                old = out.get(new.key) or existing.get(new.key)
                out[new.key] = (
                    new
                    if old is None
                    else old.with_run(new.latest, new.settings, new.fingerprint, self.history)
                )
            return self._prepare(out)

        self._transaction(merge)
        return out

    @staticmethod
    def _prepare(entries: Mapping[str, BaselineEntry]) -> dict[str, dict[str, Any]]:
        prepared = {}
        for key, entry in entries.items():
            if not isinstance(entry, BaselineEntry):
                raise TypeError(
                    f"entry {key!r}: expected a BaselineEntry, got {type(entry).__name__}"
                )
            if key != entry.key:
                raise ValueError(f"entry stored under {key!r} has key {entry.key!r}")
            prepared[key] = entry.to_dict()
        return prepared

    def _transaction(
        self, change: Callable[[Mapping[str, BaselineEntry]], Mapping[str, dict[str, Any]]]
    ) -> None:
        target = self._real_path()
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            old_bytes, raw, entries = self._read()
            changes = change(entries)
            if not changes and old_bytes is None:
                return  # nothing to record: do not create an empty file
            raw.update(changes)
            new_bytes = _dumps(raw)
            if new_bytes != old_bytes:  # an identical rewrite would only churn mtimes
                atomic_write(target, new_bytes)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        lock = self.lock_path
        return timed_lock(
            lock,
            self.lock_timeout_s,
            lambda: BaselineError(
                f"could not lock {lock} within {self.lock_timeout_s:g} s: another process (a "
                f"pytest-xdist worker?) is updating the baseline file {self.path}; wait for it "
                "to finish and rerun",
                path=str(self.path),
            ),
        )
