"""HPA/KEDA trigger thresholds from Prometheus signals at the operating point, and a drift gate.

Pure logic: no network and no clock. The Prometheus client is injected (anything with
``instant(query, at_epoch) -> QueryOutcome``);
:class:`pytest_mlload.testing.fakes.FakePrometheus` answers from a dict.

Method (carried over from ml-loadtest 1.10, see seed-study §1.8):

* Four KEDA triggers are read over the operating-point window ``[start, end]``, all evaluated
  at ``time=end`` with a range of ``W = int(end - start)`` seconds (never reaching before the
  window's start; a window under 2 s gives no recommendation):
  API ``cpuUtilization`` and Triton ``cpuUtilization`` (millicpus), Triton ``gpuUtilization``
  (%) and Triton ``inferenceRequestDuration`` (ms, a per-model mean, max over models).
* A tier's thresholds are only meaningful from a run in which that tier is the bottleneck.
  Per component, the *binding* trigger is the one with the highest observed/current ratio;
  in ``auto`` the tier with the higher ratio is saturated if that ratio is >= 0.85.
  An explicitly declared tier is not checked (its ratio is recorded in the report).
* Only the saturated tier gets recommendations: ``round(observed * hpa_margin, 2)``, binding
  trigger ``primary``, the others ``secondary``. The other tier is reported observed-only
  with a note naming the run in which to tune it (API: 1 API : 1 Triton; Triton: 6 API : 1).

Metric types: both CPU triggers are ``AverageValue`` in millicpus (as ml-loadtest
standardised them): the KEDA query for them is rendered with ``sum(...)`` so that KEDA/HPA
dividing by the replica count compares a per-pod average with the threshold. GPU % and
inference duration are per-pod averages / latencies, which do not add up over replicas, so
they are ``Value`` (HPA: desired = ceil(replicas x value / threshold)).

The drift gate (:func:`check_drift`, :func:`assert_hpa_stable`) compares recommended
thresholds with the baseline runs' reports through the prediction model capacity and P99 use
(an interval that holds the run-to-run spread, read two-sided); the default 10 % is the HPA
controller's own tolerance, under which no scaling decision changes.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from pytest_mlload._redact import PROMETHEUS_TOKEN_ENV, redact_url, strip_credentials
from pytest_mlload.errors import (
    BaselineError,
    ConfigError,
    Inconclusive,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from pytest_mlload.hpa.prometheus import (
    NO_SERIES,
    InstantQuerier,
    QueryOutcome,
)
from pytest_mlload.stats import (
    SIGMA0,
    change_interval,
    decide,
    run_spread,
    signed_pct,
    undecidable_reason,
)

__all__ = [
    "DEFAULT_DRIFT_THRESHOLD",
    "KEDA_RANGE",
    "MIN_WINDOW_S",
    "SATURATION_RATIO",
    "TIERS",
    "DriftFinding",
    "HpaReport",
    "HpaSettings",
    "TriggerQuery",
    "TriggerResult",
    "assert_hpa_stable",
    "build_queries",
    "check_drift",
    "derive_app_selector",
    "recommend",
]

SATURATION_RATIO = 0.85
"""In ``auto``, a tier counts as saturated when a trigger reaches this share of its threshold."""
MIN_WINDOW_S = 2
"""Shortest operating-point window, in seconds, that gets a recommendation."""
DEFAULT_DRIFT_THRESHOLD = 0.10
"""The HPA controller's default tolerance: smaller moves change no scaling decision."""
KEDA_AUTH_REF = "mlload-prometheus-auth"
"""TriggerAuthentication the KEDA YAML refers to when the Prometheus URL had credentials."""
KEDA_RANGE = "2m"
"""Range used in the rendered KEDA queries (the test window is seconds; production scrapes
every 15-30 s, and ``rate()`` needs at least two samples in its range)."""
TIERS = ("api", "triton", "auto")
NO_DATA_NOTE = "no Prometheus data: verify the selector and that the component is scraped"
UPDATE_HINT = "rerun with --mlload-update-baseline if the new threshold is intended"
_RUN_FOR = {"api": "a 1 API : 1 Triton run", "triton": "a 6 API : 1 Triton run"}
_LABEL = {"api": "API", "triton": "Triton"}


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaSettings:
    """How HPA triggers are read and judged. Thresholds are the chart's *current* values and
    double as the saturation gauge; units: millicpu, %, ms; ratios are fractions."""

    prometheus_url: str | None = _opt(
        None, "Prometheus (or VictoriaMetrics) base URL; HPA tuning is off without it"
    )
    api_pod_selector: str = _opt(".*-api-.*", "regex of the API pod names")
    triton_pod_selector: str = _opt(
        ".*-triton-.*", "regex of the Triton pod names (the application label is derived from it)"
    )
    bottleneck_tier: str = _opt("auto", "tier this run saturates: api, triton or auto")
    hpa_margin: float = _opt(0.8, "recommended threshold = observed x margin, in (0, 1]")
    api_cpu_threshold: float = _opt(1000.0, "current API cpuUtilization threshold, millicpu")
    triton_cpu_threshold: float = _opt(1000.0, "current Triton cpuUtilization threshold, millicpu")
    triton_gpu_threshold: float = _opt(80.0, "current Triton gpuUtilization threshold, %")
    triton_infer_threshold: float = _opt(
        500.0, "current Triton inferenceRequestDuration threshold, ms"
    )
    api_replicas: int = _opt(
        1, "API replicas during the run (recorded; a baseline with others is not compared)"
    )
    drift_threshold: float = _opt(
        DEFAULT_DRIFT_THRESHOLD, "HPA drift gate threshold as a ratio (0.10 = 10 %)"
    )

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, want: str) -> ConfigError:
            flag = name.replace("_", "-")
            return ConfigError(
                f"HPA setting {name}={value!r} is invalid: {want} "
                f"(set it with --mlload-{flag} or ini mlload_{name})"
            )

        def number(v: Any) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

        url = self.prometheus_url
        if url is not None and (
            not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url)
        ):
            shown = redact_url(url) if isinstance(url, str) else url
            raise bad(
                "prometheus_url", shown, "expected an http(s) URL such as http://prometheus:9090"
            )
        for name in ("api_pod_selector", "triton_pod_selector"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v.strip():
                raise bad(name, v, "expected a non-empty pod-name regex")
            try:
                re.compile(v)
            except re.error as exc:
                raise bad(name, v, f"not a valid regex ({exc})") from None
        tier = self.bottleneck_tier
        if not isinstance(tier, str) or tier.lower() not in TIERS:
            raise bad("bottleneck_tier", tier, f"expected one of {', '.join(TIERS)}")
        object.__setattr__(self, "bottleneck_tier", tier.lower())
        if not (number(self.hpa_margin) and 0 < self.hpa_margin <= 1):
            raise bad("hpa_margin", self.hpa_margin, "expected a ratio in (0, 1], e.g. 0.8")
        for name in (
            "api_cpu_threshold",
            "triton_cpu_threshold",
            "triton_gpu_threshold",
            "triton_infer_threshold",
        ):
            v = getattr(self, name)
            if not (number(v) and v > 0):
                raise bad(name, v, "expected a positive number")
        if (
            not isinstance(self.api_replicas, int)
            or isinstance(self.api_replicas, bool)
            or self.api_replicas < 1
        ):
            raise bad("api_replicas", self.api_replicas, "expected an integer >= 1")
        if not (number(self.drift_threshold) and 0 < self.drift_threshold < 1):
            raise bad(
                "drift_threshold", self.drift_threshold, "expected a ratio in (0, 1), e.g. 0.10"
            )

    def to_dict(self) -> dict[str, Any]:
        """All settings as plain JSON/YAML values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# -- queries ----------------------------------------------------------------------------


def derive_app_selector(triton_pod_selector: str) -> str:
    """The ``application`` label regex for Triton metrics, as ml-loadtest derives it.

    One trailing ``.*`` or ``.+`` is removed (not an escaped ``\\.*``), then ``.*`` appended:
    ``ml-run-triton-modelverse.+`` -> ``ml-run-triton-modelverse.*``.
    """
    s = triton_pod_selector
    if s.endswith((".*", ".+")):
        backslashes = len(s[:-2]) - len(s[:-2].rstrip("\\"))
        if backslashes % 2 == 0:  # the dot is a real "any character"
            s = s[:-2]
    return s + ".*"


def _quote(regex: str) -> str:
    """A regex as the body of a PromQL double-quoted string (backslashes and quotes escaped)."""
    return regex.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True, slots=True)
class TriggerQuery:
    """One KEDA trigger to read: what it is, its current threshold and its PromQL.

    ``query`` observes the signal over the test window; ``keda_query`` is what the rendered
    ScaledObject trigger runs (a production range, and ``sum`` for AverageValue CPU);
    ``fallback_query`` reads the same signal under Triton's native metric names.
    """

    component: str
    name: str
    unit: str
    metric_type: str
    current_threshold: float
    query: str
    keda_query: str
    fallback_query: str | None = None
    fallback_keda_query: str | None = None

    @property
    def key(self) -> str:
        """``component.name``, e.g. ``api.cpuUtilization``."""
        return f"{self.component}.{self.name}"


def _cpu(agg: str, container: str, pod_re: str, rng: str) -> str:
    return (
        f'1000 * {agg}(rate(container_cpu_usage_seconds_total{{container="{container}", '
        f'pod=~"{_quote(pod_re)}"}}[{rng}]))'
    )


def _gpu(app: str, rng: str) -> str:
    return (
        f'avg(avg_over_time(nv_gpu_utilization_ratio{{application=~"{_quote(app)}"}}[{rng}])) * 100'
    )


def _infer(app: str, rng: str, duration: str, count: str) -> str:
    a = _quote(app)
    return (
        f'max(avg by (model) (rate({duration}{{application=~"{a}"}}[{rng}]) / '
        f'rate({count}{{application=~"{a}"}}[{rng}]))) / 1000'
    )


_CHART_NAMES = (
    "nv_inference_request_duration_us_microseconds_total",
    "nv_inference_count_requests_total",
)
_TRITON_NAMES = ("nv_inference_request_duration_us", "nv_inference_count")


def build_queries(
    settings: HpaSettings, window_s: int, *, keda_range: str = KEDA_RANGE
) -> list[TriggerQuery]:
    """The four triggers with ml-loadtest's exact PromQL over a ``window_s``-second range."""
    if not isinstance(window_s, int) or isinstance(window_s, bool) or window_s < 1:
        raise ConfigError(f"window_s={window_s!r} is invalid: expected whole seconds >= 1")
    rng = f"{window_s}s"
    api, triton = settings.api_pod_selector, settings.triton_pod_selector
    app = derive_app_selector(triton)
    return [
        TriggerQuery(
            "api",
            "cpuUtilization",
            "m",
            "AverageValue",
            float(settings.api_cpu_threshold),
            _cpu("avg", "api", api, rng),
            _cpu("sum", "api", api, keda_range),
        ),
        TriggerQuery(
            "triton",
            "cpuUtilization",
            "m",
            "AverageValue",
            float(settings.triton_cpu_threshold),
            _cpu("avg", "triton", triton, rng),
            _cpu("sum", "triton", triton, keda_range),
        ),
        TriggerQuery(
            "triton",
            "gpuUtilization",
            "%",
            "Value",
            float(settings.triton_gpu_threshold),
            _gpu(app, rng),
            _gpu(app, keda_range),
        ),
        TriggerQuery(
            "triton",
            "inferenceRequestDuration",
            "ms",
            "Value",
            float(settings.triton_infer_threshold),
            _infer(app, rng, *_CHART_NAMES),
            _infer(app, keda_range, *_CHART_NAMES),
            _infer(app, rng, *_TRITON_NAMES),
            _infer(app, keda_range, *_TRITON_NAMES),
        ),
    ]


# -- report -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerResult:
    """One trigger as observed at the operating point, with its recommendation (if any)."""

    component: str
    name: str
    unit: str
    metric_type: str
    current_threshold: float
    observed: float | None
    ratio: float | None
    recommended: float | None
    is_binding: bool
    priority: str | None
    query: str
    keda_query: str
    note: str
    warning: str | None

    @property
    def key(self) -> str:
        """``component.name``, e.g. ``triton.gpuUtilization``."""
        return f"{self.component}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TriggerResult:
        """Rebuild from :meth:`to_dict` output (missing keys become empty values)."""
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in dataclasses.fields(cls)}
        kw["is_binding"] = bool(kw["is_binding"])
        for k in ("component", "name", "unit", "metric_type", "query", "keda_query", "note"):
            kw[k] = str(kw[k] or "")
        kw["current_threshold"] = float(kw["current_threshold"] or 0.0)
        return cls(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class HpaReport:
    """What :func:`recommend` found: per-trigger observations and recommendations."""

    prometheus_url: str | None
    window_start_epoch: float | None
    window_end_epoch: float | None
    window_s: int | None
    api_replicas: int
    hpa_margin: float
    bottleneck_tier: str
    saturated_tier: str | None
    tier_ratios: Mapping[str, float]
    triggers: tuple[TriggerResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def recommended(self) -> list[TriggerResult]:
        """The triggers that got a recommended threshold, primary first."""
        rec = [t for t in self.triggers if t.recommended is not None]
        return sorted(rec, key=lambda t: t.priority != "primary")

    @property
    def warnings(self) -> list[str]:
        """Every per-trigger warning, in trigger order."""
        return [t.warning for t in self.triggers if t.warning]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values; :meth:`from_dict` reads it back (baselines)."""
        return {
            "prometheus_url": self.prometheus_url,
            "window_start_epoch": self.window_start_epoch,
            "window_end_epoch": self.window_end_epoch,
            "window_s": self.window_s,
            "api_replicas": self.api_replicas,
            "hpa_margin": self.hpa_margin,
            "bottleneck_tier": self.bottleneck_tier,
            "saturated_tier": self.saturated_tier,
            "tier_ratios": dict(self.tier_ratios),
            "triggers": [t.to_dict() for t in self.triggers],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HpaReport:
        """Rebuild a report from :meth:`to_dict` output; :class:`BaselineError` if malformed."""
        triggers = _baseline_triggers(d)
        try:
            return cls(
                prometheus_url=d.get("prometheus_url"),
                window_start_epoch=d.get("window_start_epoch"),
                window_end_epoch=d.get("window_end_epoch"),
                window_s=d.get("window_s"),
                api_replicas=int(d.get("api_replicas") or 1),
                hpa_margin=float(d.get("hpa_margin") or 0.0),
                bottleneck_tier=str(d.get("bottleneck_tier") or "auto"),
                saturated_tier=d.get("saturated_tier"),
                tier_ratios=dict(d.get("tier_ratios") or {}),
                triggers=tuple(TriggerResult.from_dict(t) for t in triggers),
                notes=tuple(str(n) for n in d.get("notes") or ()),
            )
        except (TypeError, ValueError) as exc:
            raise BaselineError(f"HPA baseline entry is malformed: {exc}") from None

    def keda_yaml(self, server_address: str | None = None) -> str:
        """Ready-to-paste KEDA ``ScaledObject`` ``triggers:`` YAML for the recommended triggers.

        ``server_address`` defaults to the Prometheus URL the report was read from.
        ``metricType`` sits at trigger level (KEDA >= 2.7); the threshold is a string.
        Credentials never reach the YAML: ``serverAddress`` is written without them, and a
        URL that carried some gets an ``authenticationRef`` to a TriggerAuthentication plus
        a comment saying how to create it.
        """
        raw = server_address or self.prometheus_url or "http://prometheus:9090"
        address = strip_credentials(raw)
        # basic auth came from the URL; a bearer token from the environment
        auth = (
            "basic"
            if address != raw
            else ("bearer" if os.environ.get(PROMETHEUS_TOKEN_ENV) else "")
        )
        rec = self.recommended
        if not rec:
            reason = next(iter(self.notes), "no tier saturated")
            return f"# no recommended HPA triggers: {reason}\ntriggers: []\n"
        components = sorted({t.component for t in rec})
        header = (
            f"# KEDA ScaledObject triggers for {' and '.join(_LABEL[c] for c in components)} "
            f"(hpa_margin {self.hpa_margin:g}, {self.api_replicas} API replica(s), "
            f"window {self.window_s} s ending at {self.window_end_epoch})\n"
        )
        if auth:
            header += (
                f"# Prometheus needs {auth} auth ({redact_url(raw)}); no credential is written "
                f"here: create a TriggerAuthentication named {KEDA_AUTH_REF} from a Secret "
                f"(KEDA prometheus scaler, authModes: {auth})\n"
            )
        triggers = [
            {
                "type": "prometheus",
                "name": f"{t.component}-{t.name}",
                "metricType": t.metric_type,
                "metadata": {
                    "serverAddress": address,
                    "query": t.keda_query,
                    "threshold": _threshold_text(t.recommended),
                    **({"authModes": auth} if auth else {}),
                },
                **({"authenticationRef": {"name": KEDA_AUTH_REF}} if auth else {}),
            }
            for t in rec
        ]
        body = yaml.safe_dump({"triggers": triggers}, sort_keys=False, width=1000)
        return header + body


def _threshold_text(value: float | None) -> str:
    """``800.0`` -> ``"800"``, ``1234.567`` -> ``"1234.57"`` (KEDA parses it as a float)."""
    assert value is not None
    return f"{round(value, 2):.2f}".rstrip("0").rstrip(".")


def _pct(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio * 100:.0f} %"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "none"
    return f"{value:g}m" if unit == "m" else f"{value:g} {unit}"


def recommend(
    client: InstantQuerier,
    settings: HpaSettings,
    window_start_epoch: float | None,
    window_end_epoch: float | None,
    *,
    keda_range: str = KEDA_RANGE,
) -> HpaReport:
    """Read the four triggers over the operating-point window and recommend thresholds.

    Never raises for Prometheus trouble: each trigger keeps the client's warning and gets no
    observation. A window under :data:`MIN_WINDOW_S` (or none) queries nothing and says so.
    """
    start, end = window_start_epoch, window_end_epoch
    duration = _window_duration(start, end)
    base: dict[str, Any] = {
        # the report goes to the JSON report and the baseline: never with credentials
        "prometheus_url": redact_url(settings.prometheus_url) if settings.prometheus_url else None,
        "window_start_epoch": start,
        "window_end_epoch": end,
        "api_replicas": settings.api_replicas,
        "hpa_margin": settings.hpa_margin,
        "bottleneck_tier": settings.bottleneck_tier,
    }
    if duration is None or duration < MIN_WINDOW_S:
        return _short_window_report(settings, base, duration, keda_range)

    assert start is not None and end is not None and duration is not None
    # int() floors, so end - W >= start: the range never reaches before the window.
    window_s = max(int(duration), MIN_WINDOW_S)
    queries = build_queries(settings, window_s, keda_range=keda_range)
    reads = {q.key: _read_trigger(client, q, end, window_s) for q in queries}
    ratios: dict[str, float | None] = {}
    for q in queries:
        value = reads[q.key].outcome.value
        ratios[q.key] = None if value is None else value / q.current_threshold
    binding, tier_ratio = _binding_triggers(queries, ratios)
    saturated, notes = _saturated_tier(settings.bottleneck_tier, tier_ratio)
    results = tuple(
        _trigger_result(
            q,
            reads[q.key],
            ratios[q.key],
            is_binding=binding[q.component] == q.key,
            saturated=saturated,
            settings=settings,
        )
        for q in queries
    )
    notes.extend(_tuning_notes(saturated))
    return HpaReport(
        **base,
        window_s=window_s,
        saturated_tier=saturated,
        tier_ratios={k: round(v, 4) for k, v in tier_ratio.items()},
        triggers=results,
        notes=tuple(notes),
    )


def _window_duration(start: float | None, end: float | None) -> float | None:
    """``end - start`` in seconds, or None when either end is missing or not finite."""
    if start is not None and end is not None and math.isfinite(start) and math.isfinite(end):
        return end - start
    return None


def _short_window_report(
    settings: HpaSettings, base: dict[str, Any], duration: float | None, keda_range: str
) -> HpaReport:
    """The report for a missing or too-short window: every trigger unread, one note saying why."""
    have = (
        "no operating-point window was recorded"
        if duration is None
        else f"the window is {duration:.2f} s"
    )
    note = (
        f"run too short to have an operating-point window ({have}; need >= {MIN_WINDOW_S} s): "
        "no HPA recommendation"
    )
    shapes = build_queries(settings, MIN_WINDOW_S, keda_range=keda_range)
    triggers = tuple(
        TriggerResult(
            component=q.component,
            name=q.name,
            unit=q.unit,
            metric_type=q.metric_type,
            current_threshold=q.current_threshold,
            observed=None,
            ratio=None,
            recommended=None,
            is_binding=False,
            priority=None,
            query="",
            keda_query=q.keda_query,
            note=note,
            warning=None,
        )
        for q in shapes
    )
    return HpaReport(
        **base,
        window_s=None,
        saturated_tier=None,
        tier_ratios={"api": 0.0, "triton": 0.0},
        triggers=triggers,
        notes=(note,),
    )


def _read_trigger(client: InstantQuerier, q: TriggerQuery, end: float, window_s: int) -> _Read:
    """Query one trigger at ``end``, falling back to Triton's native names when it has no series."""
    read = _Read(client.instant(q.query, end), q.query, q.keda_query)
    if read.outcome.value is None and q.fallback_query and _is_no_series(read.outcome):
        alt = client.instant(q.fallback_query, end)
        if alt.value is not None:
            read = _Read(
                alt,
                q.fallback_query,
                q.fallback_keda_query or q.keda_query,
                "read under Triton's native names (nv_inference_request_duration_us, "
                "nv_inference_count)",
            )
    if read.outcome.value is None and _is_no_series(read.outcome) and window_s < 60:
        read = dataclasses.replace(
            read,
            extra=f"the window is {window_s} s: rate() needs two scrapes inside it; "
            "check the scrape interval",
        )
    return read


def _binding_triggers(
    queries: Sequence[TriggerQuery], ratios: Mapping[str, float | None]
) -> tuple[dict[str, str | None], dict[str, float]]:
    """Per tier, the key of its binding (highest-ratio) trigger and that ratio (0.0 if none)."""
    binding: dict[str, str | None] = {}
    tier_ratio: dict[str, float] = {}
    for comp in ("api", "triton"):
        with_data = [q.key for q in queries if q.component == comp and ratios[q.key] is not None]
        # max() keeps the first of equal ratios: query order breaks ties deterministically
        best = max(with_data, key=lambda k: ratios[k] or 0.0, default=None)
        binding[comp] = best
        tier_ratio[comp] = (ratios[best] or 0.0) if best else 0.0
    return binding, tier_ratio


def _saturated_tier(declared: str, tier_ratio: Mapping[str, float]) -> tuple[str | None, list[str]]:
    """The tier to recommend for (declared, or auto-detected at :data:`SATURATION_RATIO`), and
    the notes explaining an unchecked declaration or the absence of a saturated tier."""
    notes: list[str] = []
    saturated: str | None
    if declared in ("api", "triton"):
        saturated = declared
        if tier_ratio[declared] < SATURATION_RATIO:
            notes.append(
                f"bottleneck tier declared as {declared} and not checked: its binding trigger is "
                f"at {_pct(tier_ratio[declared])} of its current threshold (auto would need "
                f"{SATURATION_RATIO * 100:.0f} %)"
            )
    else:
        candidate = "api" if tier_ratio["api"] >= tier_ratio["triton"] else "triton"
        saturated = candidate if tier_ratio[candidate] >= SATURATION_RATIO else None
        if saturated is None:
            notes.append(
                f"no tier reached {SATURATION_RATIO * 100:.0f} % of a current threshold (API "
                f"{_pct(tier_ratio['api'])}, Triton {_pct(tier_ratio['triton'])}): no "
                "recommendation; declare the bottleneck tier if you know it, or check the "
                "current thresholds"
            )
    return saturated, notes


def _trigger_result(
    q: TriggerQuery,
    read: _Read,
    ratio: float | None,
    *,
    is_binding: bool,
    saturated: str | None,
    settings: HpaSettings,
) -> TriggerResult:
    """One trigger's row: a recommendation if its tier is saturated, otherwise a note why not."""
    value = read.outcome.value
    recommended: float | None = None
    priority: str | None = None
    if value is None:
        note = NO_DATA_NOTE
    elif q.component == saturated:
        if value <= 0:
            note = "observed 0 at the operating point: no usable threshold"
        else:
            recommended = round(value * settings.hpa_margin, 2)
            priority = "primary" if is_binding else "secondary"
            role = "binding (first to fire)" if is_binding else "co-occurs at the operating point"
            note = (
                f"{role}: {_pct(ratio)} of the current threshold; "
                f"observed x {settings.hpa_margin:g}"
            )
    else:
        note = _not_bottleneck_note(q.component, ratio, saturated, settings.bottleneck_tier)
    if read.extra:
        note = f"{note}; {read.extra}"
    return TriggerResult(
        component=q.component,
        name=q.name,
        unit=q.unit,
        metric_type=q.metric_type,
        current_threshold=q.current_threshold,
        observed=value,
        ratio=None if ratio is None else round(ratio, 4),
        recommended=recommended,
        is_binding=is_binding,
        priority=priority,
        query=read.query,
        keda_query=read.keda_query,
        note=note,
        warning=read.outcome.warning,
    )


def _not_bottleneck_note(
    component: str, ratio: float | None, saturated: str | None, declared: str
) -> str:
    """Why a trigger of the tier that is not the bottleneck gets no recommendation."""
    other = "triton" if component == "api" else "api"
    why = (
        f"{_LABEL[other]} {'declared the bottleneck' if declared == other else 'saturated'}"
        if saturated
        else "no tier saturated"
    )
    return (
        f"{_LABEL[component]} not the bottleneck this run ({_pct(ratio)} of threshold; "
        f"{why}): measure it in {_RUN_FOR[component]}"
    )


def _tuning_notes(saturated: str | None) -> list[str]:
    """Where to tune each tier, given which one (if any) saturated in this run."""
    notes: list[str] = []
    if saturated == "triton":
        notes.append(
            "tune primarily on inferenceRequestDuration/gpuUtilization; Triton CPU is a safety net"
        )
        notes.append(
            "inferenceRequestDuration is a mean per model (max over models), not a percentile"
        )
    if saturated != "api":
        notes.append(f"take API thresholds from {_RUN_FOR['api']}")
    if saturated != "triton":
        notes.append(f"take Triton thresholds from {_RUN_FOR['triton']}")
    return notes


@dataclass(frozen=True, slots=True)
class _Read:
    """What one trigger's query gave, and which query (primary or fallback) gave it."""

    outcome: QueryOutcome
    query: str
    keda_query: str
    extra: str = ""


def _is_no_series(outcome: QueryOutcome) -> bool:
    return outcome.value is None and outcome.series == 0 and NO_SERIES in (outcome.warning or "")


# -- drift gate -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftFinding:
    """One trigger compared with its baseline runs: ``ok``, ``drift``, ``inconclusive`` or
    ``skipped`` (with a reason).

    ``baseline`` is the median recommendation of the baseline runs that have one (``runs`` of
    them), ``[low, high]`` the 95 % interval of the relative change, ``decidable`` the
    smallest threshold this setup can decide and ``spread`` the run-to-run sd (log scale)
    behind it (see :func:`check_drift`); all None where nothing was compared.
    """

    component: str
    name: str
    unit: str
    status: str
    baseline: float | None
    now: float | None
    change_ratio: float | None
    threshold_ratio: float
    reason: str = ""
    low: float | None = None
    high: float | None = None
    decidable: float | None = None
    spread: float | None = None
    runs: int = 0

    @property
    def key(self) -> str:
        """``component.name``."""
        return f"{self.component}.{self.name}"

    def describe(self) -> str:
        """One line for people: the measurement, its interval, the threshold, the verdict."""
        label = f"HPA trigger {_LABEL.get(self.component, self.component)} {self.name}"
        if self.status == "skipped":
            return f"{label} skipped: {self.reason}"
        change = (
            "from 0"
            if self.change_ratio is None or math.isinf(self.change_ratio)
            else signed_pct(self.change_ratio)
        )
        interval = (
            f", 95 % CI {signed_pct(self.low)}..{signed_pct(self.high)}"
            if self.low is not None and self.high is not None
            else ""
        )
        head = (
            f"{label} moved {change} (baseline {_fmt(self.baseline, self.unit)} -> now "
            f"{_fmt(self.now, self.unit)}{interval})"
        )
        t = f"{self.threshold_ratio * 100:g} %"
        if self.status == "drift":
            return f"{head}, past the {t} drift threshold"
        if self.status == "inconclusive":
            return f"{head}: {self.reason}"
        return f"{head}, within the {t} drift threshold"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _baseline_runs(
    baseline: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> list[Mapping[str, Any]]:
    """The baseline's HPA reports, oldest first (one report is a history of one run)."""
    runs = [baseline] if isinstance(baseline, Mapping) else list(baseline)
    if not runs:
        raise BaselineError("HPA baseline has no runs (rerun with --mlload-update-baseline)")
    for run in runs:
        _baseline_triggers(run)
    return runs


def _baseline_triggers(baseline: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if not isinstance(baseline, Mapping):
        raise BaselineError(f"HPA baseline entry is not a mapping: {type(baseline).__name__}")
    triggers = baseline.get("triggers")
    if not isinstance(triggers, list) or not all(
        isinstance(t, Mapping) and t.get("component") and t.get("name") for t in triggers
    ):
        raise BaselineError(
            "HPA baseline entry is malformed: 'triggers' must be a list of mappings with "
            "component and name (rerun with --mlload-update-baseline to rewrite it)"
        )
    return triggers


def _number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def check_drift(
    baseline: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    current: HpaReport,
    threshold: float = DEFAULT_DRIFT_THRESHOLD,
    *,
    prior_sd: float = SIGMA0,
) -> list[DriftFinding]:
    """Compare each trigger's recommended threshold with the baseline runs' (one HPA report,
    or the reports of the kept baseline runs, oldest first).

    Method: the same prediction model as capacity and P99 (:mod:`pytest_mlload.stats`): the
    baseline runs' recommendations give a centre (median) and a run-to-run spread on the log
    scale, pooled with the prior ``prior_sd`` (one run is not taken as exact), and the change
    interval holds that spread. A recommendation is ``observed x margin``, and the observed
    CPU of a server moves from run to run even when nothing changed (measured: -11.5 % on the
    demo between two runs of the same build), so a point comparison would fail unchanged
    builds. The reading is two-sided (a threshold that would scale earlier or later both
    count): ``drift`` when the interval lies wholly past +-``threshold``, ``ok`` inside it;
    when it straddles, the point decides if the setup can decide the threshold (its smallest
    decidable threshold is at or under it), else ``inconclusive``, naming the spread and the
    threshold it can decide. A trigger without a recommendation on either side is
    ``skipped`` with the reason (never a silent pass). A baseline of 0 has no relative
    change: any move from it is drift.
    """
    if not (_number(threshold) is not None and 0 < threshold < 1):
        raise ConfigError(
            f"HPA drift threshold={threshold!r} is invalid: expected a ratio in (0, 1)"
        )
    runs = _baseline_runs(baseline)
    history: dict[str, list[Mapping[str, Any]]] = {}
    for run in runs:
        for t in _baseline_triggers(run):
            history.setdefault(f"{t['component']}.{t['name']}", []).append(t)
    now_by_key = {t.key: t for t in current.triggers}
    keys = list(now_by_key) + [k for k in history if k not in now_by_key]
    findings: list[DriftFinding] = []
    for key in keys:
        seen, n = history.get(key, []), now_by_key.get(key)
        b = seen[-1] if seen else None  # the newest run's reading of this trigger
        component, name = key.split(".", 1)
        unit = n.unit if n is not None else str((b or {}).get("unit") or "")
        values = [v for v in (_number(t.get("recommended")) for t in seen) if v is not None]
        n_val = n.recommended if n is not None else None
        common: dict[str, Any] = {
            "component": component,
            "name": name,
            "unit": unit,
            "now": n_val,
            "threshold_ratio": float(threshold),
            "runs": len(values),
        }
        if not values or n_val is None:
            if b is None:
                why_b = "trigger absent from the baseline"
            else:
                why = b.get("warning") or b.get("note") or "none recorded"
                why_b = f"no recommendation in the baseline ({why})"
            if n is None:
                why_n = "trigger absent now"
            else:
                why_n = f"no recommendation now ({n.warning or n.note})"
            reasons = [r for r, missing in ((why_b, not values), (why_n, n_val is None)) if missing]
            findings.append(
                DriftFinding(
                    **common,
                    baseline=values[-1] if values else None,
                    status="skipped",
                    change_ratio=None,
                    reason="; ".join(reasons),
                )
            )
            continue
        findings.append(_drift(values, n_val, float(threshold), prior_sd, common))
    return findings


def _drift(
    values: list[float], now: float, threshold: float, prior_sd: float, common: dict[str, Any]
) -> DriftFinding:
    """One trigger's two-sided reading (see :func:`check_drift`)."""
    if min(values) <= 0 or now <= 0:  # no log scale: a point comparison with the newest
        b = values[-1]
        change = (0.0 if now == 0 else math.inf) if b == 0 else now / b - 1.0
        status = "drift" if abs(change) > threshold + 1e-12 else "ok"
        return DriftFinding(**common, baseline=b, status=status, change_ratio=change)
    base = run_spread(values, prior_sd=prior_sd)
    ci = change_interval(now, (now, now), base)
    d = decide(
        ci.change,
        ci.low,
        ci.high,
        threshold,
        higher_is_better=ci.change < 0,  # the side it moved to is the side judged
        decidable=ci.decidable,
        spread=base.spread,
        runs=base.runs,
    )
    status = {"regression": "drift", "inconclusive": "inconclusive"}.get(d.verdict, "ok")
    reason = (
        undecidable_reason(threshold, ci.decidable, base.spread, base.runs)
        if status == "inconclusive"
        else ""
    )
    return DriftFinding(
        **common,
        baseline=base.center,
        status=status,
        change_ratio=ci.change,
        reason=reason,
        low=ci.low,
        high=ci.high,
        decidable=ci.decidable,
        spread=base.spread,
    )


def assert_hpa_stable(
    baseline: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    current: HpaReport,
    threshold: float | None = None,
    *,
    prior_sd: float = SIGMA0,
) -> list[DriftFinding]:
    """Fail when a recommended HPA threshold drifted from the baseline by more than ``threshold``.

    ``baseline`` is one HPA report or the kept baseline runs' reports, oldest first (see
    :func:`check_drift`). Raises :class:`PerformanceRegression` (one clause per drifting
    trigger, with the numbers and the way out); :class:`Inconclusive` when a trigger's
    interval straddles the threshold and this setup cannot decide it, or every trigger was
    skipped; :class:`MissingBaseline` without a baseline and :class:`SettingsMismatch` when
    the newest baseline run was measured with other API replicas or another margin (older
    runs measured so are left out). Returns the findings otherwise.
    """
    threshold = DEFAULT_DRIFT_THRESHOLD if threshold is None else threshold
    if not baseline:
        raise MissingBaseline(
            "no HPA baseline for this test; record one with --mlload-update-baseline"
        )
    runs = _baseline_runs(baseline)
    mismatched = _setup_differences(runs[-1], current)
    if mismatched:
        raise SettingsMismatch(
            "HPA baseline was measured with other settings ("
            + "; ".join(mismatched)
            + "): not compared; rerun with --mlload-update-baseline if the new set-up is intended"
        )
    same = [r for r in runs if not _setup_differences(r, current)]
    findings = check_drift(same, current, threshold, prior_sd=prior_sd)
    drifted = [f for f in findings if f.status == "drift"]
    if drifted:
        worst = max(drifted, key=lambda f: abs(f.change_ratio or 0.0))
        message = "; ".join(f.describe() for f in drifted) + f"; {UPDATE_HINT}"
        raise PerformanceRegression(
            message,
            metric=f"hpa.{worst.key}",
            baseline=worst.baseline,
            observed=worst.now,
            change_ratio=worst.change_ratio,
            threshold_ratio=threshold,
        )
    undecided = [f for f in findings if f.status == "inconclusive"]
    if undecided:
        raise Inconclusive(
            "HPA drift gate inconclusive: " + "; ".join(f.describe() for f in undecided),
            reason="; ".join(f.key for f in undecided),
        )
    if findings and all(f.status == "skipped" for f in findings):
        reasons = "; ".join(f"{f.key}: {f.reason}" for f in findings)
        raise Inconclusive(
            "HPA drift gate inconclusive: no trigger had a recommendation on both sides "
            f"({reasons})",
            reason=reasons,
        )
    if not findings:
        raise Inconclusive(
            "HPA drift gate inconclusive: no triggers to compare", reason="no triggers"
        )
    return findings


def _setup_differences(run: Mapping[str, Any], current: HpaReport) -> list[str]:
    """How a baseline run's API replicas and margin differ from the current ones (none: the
    same set-up, or the run did not record them)."""
    differences = []
    for name in ("api_replicas", "hpa_margin"):
        was, now = _number(run.get(name)), getattr(current, name)
        if was is not None and was != float(now):
            differences.append(f"{name} {run[name]} in the baseline, {now} now")
    return differences
