"""Frozen run settings, validated once at the boundary.

Every field of :class:`RunSettings` is a ``capacity`` marker argument, a ``--mlload-<name>``
command-line option and an ``mlload_<name>`` ini key (dashes for underscores on the command
line). :func:`resolve_settings` applies the one precedence rule:
marker > command line > ini > default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_mlload.errors import ConfigError

__all__ = [
    "MODES",
    "RunSettings",
    "parse_bool",
    "resolve_settings",
    "setting_fields",
    "split_host_port",
]

MODES = ("individual", "production", "exploration", "spike")
# Not a traffic mode of its own: ``mode="check"`` means individual in check mode, and
# ``mode="check production"`` the production parts in check mode (see RunSettings.check).
CHECK_MODE = "check"
CLIENTS = ("fast", "http")
# Sanity limits: one load-generator process tops out at a few thousand users and some
# thousand req/s; far larger values are typos that would spawn or allocate without bound.
MAX_USERS_LIMIT = 10_000
MAX_SPIKE_RPS = 100_000.0
MAX_SPIKE_ARRIVALS = 1_000_000  # spike_target_rps x spike_duration_s (arrival schedule size)
MAX_WORKERS = 256
MAX_CHECK_WINDOWS = 5  # a regression confirmed by 3 of 5 windows at most: about a minute
# Recorded runs kept per baseline entry unless --mlload-history says otherwise. Ten, not five:
# a setup's run-to-run spread is estimated from these runs, and on noisy servers five decide
# too little (bench/README.md: on a heavy-tailed simulated service 49 of 50 slowdowns caught
# in both modes from 10 runs, 48 and 47 from 5; on MLServer, 5-run histories made false
# regressions in three of four series where 10-run histories made none). A baseline with
# fewer runs works as before: this only caps how many are kept.
DEFAULT_HISTORY = 10


def parse_bool(value: Any) -> bool:
    """Parse ``true/false/1/0/yes/no/on/off`` (any case) or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _opt(default: Any, help: str, parse: Callable[[Any], Any] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})


def _parse_modes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    else:
        items = [str(v) for v in value]
    return tuple(v.lower() for v in items)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSettings:
    """Everything that decides how one capacity test runs and is judged.

    Units are suffixes: ``_ms``, ``_s``, ``_ratio``; ratios are fractions (0.10 = 10 %).
    """

    target_p99_ms: float = _opt(
        1000.0, "P99 latency target in ms; the operating point is the highest load at or under it"
    )
    min_users: int = _opt(1, "concurrent users to start the search from")
    max_users: int = _opt(64, "upper bound on concurrent users")
    threshold: float = _opt(0.10, "regression threshold as a ratio (0.10 = 10 %)")
    max_duration_s: float = _opt(60.0, "hard cap on one capacity search, in seconds")
    tolerance: float = _opt(0.10, "the search stops once P99 is within this ratio under the target")
    max_error_ratio: float = _opt(0.01, "error ratio above which a run is never a pass")
    mode: tuple[str, ...] = _opt(
        ("individual",), "traffic modes: individual, production, exploration, spike", _parse_modes
    )
    client: str = _opt("fast", "Locust client: fast (FastHttpUser) or http (HttpUser)")
    request_timeout_s: float = _opt(10.0, "per-request timeout in seconds")
    wait_time_s: float = _opt(0.0, "think time between a user's requests, in seconds")
    settle_s: float = _opt(0.3, "minimum settle time after every user-count change, in seconds")
    min_samples: int = _opt(300, "requests per search window before a decision")
    measure_s: float = _opt(
        4.0, "length of the window that measures the operating point, in seconds"
    )
    probe_s: float = _opt(
        2.5,
        "the window at the baseline's user count (P99 probe, check mode) lasts measure_s and "
        "may grow to 3 x this or 10 s in all, whichever is longer; also the shortest "
        "open-loop confirmation, in seconds",
    )

    weights_module: str = _opt(
        "", "dotted module holding production_weights (the mix for production/exploration/spike)"
    )
    spike_target_rps: float = _opt(100.0, "spike mode: request rate of the spike, req/s")
    spike_duration_s: float = _opt(10.0, "spike mode: how long the spike lasts, in seconds")
    spike_base_ratio: float = _opt(
        0.2, "spike mode: rate before and after the spike, as a ratio of spike_target_rps"
    )
    open_loop: bool = _opt(
        False, "gate P99 on the open-loop confirmation (fixed arrival rate) instead of closed loop"
    )
    open_loop_ratio: float = _opt(
        0.9, "open-loop confirmation rate as a ratio of the measured capacity"
    )
    safety_factor: float = _opt(0.7, "recommended rate limit = capacity x safety_factor")
    run_spread_prior: float = _opt(
        0.03,
        "assumed run-to-run sd of capacity, P99 and HPA recommendations as a ratio, pooled "
        "with the baseline's own scatter (weighs as two runs); set it to the spread you "
        "measured on your runner",
    )
    check: bool = field(
        default=False,
        metadata={
            "help": "check mode (pull requests): hold the baseline's operating load and judge "
            "there instead of searching; a full search when there is no baseline",
            "flag": True,
        },
    )
    check_windows: int = _opt(
        3,
        "check mode: a window that reads a regression is measured again, check_gap_s later, "
        "up to this many windows in all; the regression stands when two of them read one "
        "(1 = judge the first window alone)",
    )
    check_gap_s: float = _opt(
        10.0,
        "check mode: pause before each confirmation window, in seconds, so a slow spell of "
        "the server or the runner can pass",
    )
    spike_max_p99_ms: float = _opt(
        0.0, "spike mode: absolute bound on P99 during the spike, in ms (0 = off)"
    )
    spike_max_error_ratio: float = _opt(
        0.0, "spike mode: absolute bound on the error ratio during the spike (0 = off)"
    )
    ttft_p99_ms: float = _opt(
        0.0,
        "streaming (LLM) endpoints: time-to-first-token limit per request, in ms (0 = off); "
        "any SLO set makes capacity the goodput and target_p99_ms unused for the search",
    )
    tpot_p99_ms: float = _opt(
        0.0, "streaming endpoints: time-per-output-token limit per request, in ms (0 = off)"
    )
    e2e_p99_ms: float = _opt(
        0.0, "streaming endpoints: end-to-end latency limit per request, in ms (0 = off)"
    )
    slo_attainment: float = _opt(
        0.99, "streaming endpoints: share of requests that must meet every SLO, in (0, 1)"
    )
    workers: int = _opt(
        0, "local Locust worker processes generating the load (0 = one process, no master)"
    )
    master_bind: str = _opt(
        "", "HOST:PORT the Locust master listens on for workers; empty: 127.0.0.1, a free port"
    )
    expect_workers: int = _opt(
        0,
        "workers on other machines the master waits for; each joins with "
        "python -m pytest_mlload.worker --master HOST:PORT",
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # 120 and 120.0 must store and print alike
            v = getattr(self, f.name)
            if isinstance(f.default, float) and isinstance(v, int) and not isinstance(v, bool):
                object.__setattr__(self, f.name, float(v))

        def bad(name: str, value: Any, want: str) -> ConfigError:
            return ConfigError(
                f"capacity setting {name}={value!r} is invalid: {want} "
                f"(set it on the marker, with --mlload-{name.replace('_', '-')} "
                f"or ini mlload_{name})"
            )

        self._check_numbers(bad)
        if CHECK_MODE in self.mode:  # mode="check [modes]": those modes, in check mode
            rest = tuple(m for m in self.mode if m != CHECK_MODE)
            object.__setattr__(self, "mode", rest or ("individual",))
            object.__setattr__(self, "check", True)
        self._check_limits(bad)
        if self.min_users > self.max_users:
            raise bad("min_users", self.min_users, f"must not exceed max_users={self.max_users}")
        if not (
            isinstance(self.spike_max_error_ratio, int | float)
            and 0 <= self.spike_max_error_ratio <= 1
        ):
            raise bad(
                "spike_max_error_ratio",
                self.spike_max_error_ratio,
                "expected a ratio in [0, 1], 0 for no bound",
            )
        for name in ("threshold", "tolerance", "max_error_ratio", "run_spread_prior"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 <= v < 1):
                raise bad(name, v, "expected a ratio in [0, 1), e.g. 0.10 for 10 %")
        if not self.mode or any(m not in MODES for m in self.mode):
            raise bad(
                "mode", self.mode, f"expected one or more of {', '.join(MODES)} (or {CHECK_MODE})"
            )
        self._check_workers(bad)
        if self.client not in CLIENTS:
            raise bad("client", self.client, f"expected one of {', '.join(CLIENTS)}")
        self._check_slo(bad)

    def _check_numbers(self, bad: Callable[[str, Any, str], ConfigError]) -> None:
        """Positive durations and rates, ratios in (0, 1], counts >= 1, times >= 0."""
        positive = ("target_p99_ms", "max_duration_s", "request_timeout_s", "measure_s")
        for name in (*positive, "probe_s", "spike_target_rps", "spike_duration_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise bad(name, v, "expected a positive number")
        for name in ("spike_base_ratio", "open_loop_ratio", "safety_factor"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v <= 1):
                raise bad(name, v, "expected a ratio in (0, 1]")
        for name in ("wait_time_s", "settle_s", "spike_max_p99_ms", "check_gap_s"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise bad(name, v, "expected a number >= 0")
        for name in ("min_users", "max_users", "min_samples", "check_windows"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, v, "expected an integer >= 1")
        if self.check_windows > MAX_CHECK_WINDOWS:
            raise bad("check_windows", self.check_windows, f"expected 1 to {MAX_CHECK_WINDOWS}")

    def _check_limits(self, bad: Callable[[str, Any, str], ConfigError]) -> None:
        """Refuse values no single load-generator process can honour (see MAX_*)."""
        if self.max_users > MAX_USERS_LIMIT:
            raise bad("max_users", self.max_users, f"over the limit of {MAX_USERS_LIMIT} users")
        if self.spike_target_rps > MAX_SPIKE_RPS:
            raise bad(
                "spike_target_rps",
                self.spike_target_rps,
                f"over the limit of {MAX_SPIKE_RPS:g} req/s",
            )
        arrivals = self.spike_target_rps * self.spike_duration_s
        if arrivals > MAX_SPIKE_ARRIVALS:
            raise bad(
                "spike_target_rps",
                self.spike_target_rps,
                f"spike_target_rps x spike_duration_s = {arrivals:.3g} arrivals, over the "
                f"limit of {MAX_SPIKE_ARRIVALS} (lower the rate or spike_duration_s="
                f"{self.spike_duration_s:g})",
            )

    def _check_workers(self, bad: Callable[[str, Any, str], ConfigError]) -> None:
        for name in ("workers", "expect_workers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_WORKERS:
                raise bad(name, v, f"expected an integer from 0 to {MAX_WORKERS}")
        if self.master_bind:
            split_host_port(self.master_bind, "master_bind")
        elif self.expect_workers:
            raise bad(
                "expect_workers",
                self.expect_workers,
                "remote workers need an address to join: also give master_bind HOST:PORT "
                "(e.g. 0.0.0.0:5557)",
            )

    @property
    def distributed(self) -> bool:
        """True when the load comes from Locust workers behind a master."""
        return self.workers > 0 or self.expect_workers > 0

    # The settings a baseline was measured with; a baseline with other values is not comparable.
    COMPARABLE = ("target_p99_ms", "min_users", "max_users", "mode", "client", "wait_time_s")
    SPIKE_COMPARABLE = ("spike_target_rps", "spike_duration_s", "spike_base_ratio")
    # Compared too, but stored only when not at their default, so baselines recorded before
    # they were compared (at the default) stay comparable.
    COMPARABLE_IF_SET = (
        "request_timeout_s",
        "ttft_p99_ms",
        "tpot_p99_ms",
        "e2e_p99_ms",
        "slo_attainment",
    )
    SLO_LIMITS = ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms")

    @property
    def slo_mode(self) -> bool:
        """True when any streaming SLO is set: capacity is then the goodput (requests/s that
        meet every SLO) at the highest load whose attainment is >= ``slo_attainment``."""
        return any(getattr(self, name) > 0 for name in self.SLO_LIMITS)

    def _check_slo(self, bad: Callable[[str, Any, str], ConfigError]) -> None:
        """The SLO limits are ms >= 0 (0 = off); the attainment a ratio in (0, 1)."""
        for name in self.SLO_LIMITS:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise bad(name, v, "expected a number of ms >= 0 (0 = off)")
        a = self.slo_attainment
        if not (isinstance(a, int | float) and 0 < a < 1):
            raise bad(
                "slo_attainment",
                a,
                "expected a ratio in (0, 1) (0.95 = 95 % of requests meet every SLO; a finite "
                "sample cannot show 100 %)",
            )

    def comparable(self, mix: Mapping[str, float] | None = None) -> dict[str, Any]:
        """The settings that must match for a baseline comparison to mean anything.

        ``mix`` (endpoint -> weight of a mix part) is compared as traffic shares, so an
        edited ``production_weights`` is a settings mismatch, not a regression.
        """
        out: dict[str, Any] = {}
        names = self.COMPARABLE + (self.SPIKE_COMPARABLE if "spike" in self.mode else ())
        for name in names:
            v = getattr(self, name)
            out[name] = list(v) if isinstance(v, tuple) else v
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name in self.COMPARABLE_IF_SET:
            if getattr(self, name) != defaults[name]:
                out[name] = getattr(self, name)
        if mix and len(mix) > 1:
            total = sum(mix.values()) or 1.0
            out["mix"] = {k: round(mix[k] / total, 4) for k in sorted(mix)}
        return out

    def to_dict(self) -> dict[str, Any]:
        """All settings as plain JSON/YAML-friendly values."""
        return {
            f.name: (
                list(getattr(self, f.name))
                if isinstance(getattr(self, f.name), tuple)
                else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
        }


def split_host_port(text: str, name: str = "master") -> tuple[str, int]:
    """``HOST:PORT`` -> ``(host, port)``; :class:`ConfigError` naming ``name`` and the form."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(
            f"{name}={text!r} is not HOST:PORT (e.g. 127.0.0.1:5557, 0.0.0.0:5557; port 0 "
            f"picks a free one)"
        )
    return host.strip("[]"), int(port)


def setting_fields(cls: type = RunSettings) -> list[dataclasses.Field[Any]]:
    """The fields of a settings class that are marker arguments, options and ini keys."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")]


def _coerce(f: dataclasses.Field[Any], value: Any, source: str) -> Any:
    parse = f.metadata.get("parse")
    default = f.default
    try:
        if parse is not None:
            return parse(value)
        if isinstance(default, bool):
            return parse_bool(value)
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, bool):
                raise ValueError("a bool is not an integer")
            return int(value) if isinstance(value, str) else value
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError("a bool is not a number")
            return float(value)
        return str(value) if not isinstance(value, str) else value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {f.name}={value!r} is not valid: {exc}") from None


def resolve_settings(
    marker: Mapping[str, Any] | None = None,
    cli: Mapping[str, Any] | None = None,
    ini: Mapping[str, Any] | None = None,
    *,
    where: str = "capacity marker",
    cls: type = RunSettings,
    also_known: Collection[str] = (),
    layers: Sequence[tuple[Mapping[str, Any], str]] = (),
) -> Any:
    """Build ``cls`` (default :class:`RunSettings`): marker > cli > ``layers`` > ini > default.

    ``None`` or empty values mean "not given". Marker arguments that are neither fields of
    ``cls`` nor in ``also_known`` raise :class:`ConfigError` naming the argument and the
    accepted ones; keys of other settings classes in the layers are ignored. ``layers`` are
    extra sources between the command line and ini (e.g. a ``--mlload-config`` file),
    highest first.
    """
    known = {f.name: f for f in setting_fields(cls)}
    marker = dict(marker or {})
    unknown = sorted(set(marker) - set(known) - set(also_known))
    if unknown:
        accepted = sorted(set(known) | set(also_known))
        raise ConfigError(
            f"{where}: unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    ordered = [
        (ini or {}, "ini mlload_*"),
        *reversed(list(layers)),
        (cli or {}, "command line --mlload-*"),
        (marker, where),
    ]
    values: dict[str, Any] = {}
    for layer, source in ordered:
        for name, value in layer.items():
            if name in known and value is not None and value != "":
                values[name] = _coerce(known[name], value, source)
    return cls(**values)
