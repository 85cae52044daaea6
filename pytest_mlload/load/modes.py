"""Traffic modes: individual endpoints, the production mix, exploration, spike.

Each mode is one or more runs of :func:`pytest_mlload.load.engine.run_capacity`; a run of
several parts returns one :class:`~pytest_mlload.results.CapacityResult` whose ``parts`` hold
every part, each gated and reported on its own (:func:`combine` picks the headline figures).
Part names are prefixed by their mode (``individual /v1/embed``,
``production``, ``exploration 2x /v1/embed``, ``spike``), so an endpoint can never collide
with a configuration name (ml-loadtest broke on an endpoint called ``baseline``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_mlload.config import RunSettings
from pytest_mlload.errors import ConfigError
from pytest_mlload.results import CapacityResult
from pytest_mlload.targets import is_locust_user, is_seed_taskset, taskset_weights

__all__ = [
    "Part",
    "combine",
    "exploration_summary",
    "plan_parts",
    "rate_limit_rps",
    "rate_limits",
    "run_modes",
]


@dataclass(frozen=True, slots=True)
class Part:
    """One run of a mode: what to run and how."""

    name: str
    mode: str
    target: Any
    kind: str = "search"
    weights: dict[str, float] = field(default_factory=dict)


def _mix_label(pairs: tuple[tuple[Any, float], ...]) -> dict[str, float]:
    return {c.endpoint: w for c, w in pairs}


def plan_parts(
    target: Any, settings: RunSettings, *, mixes: list[Mapping[Any, Any]] | None = None
) -> list[Part]:
    """The runs the settings' modes ask for, in a fixed order.

    ``target``: a seed TaskSet or Locust User (individual mode only), or weights (a mapping,
    a module holding ``production_weights``, its dotted name). ``None`` uses
    ``settings.weights_module``. ``mixes`` adds user-given mixes to exploration.
    """
    if target is None:
        if not settings.weights_module:
            raise ConfigError(
                "mlload.run() needs a target: a TaskSet, a User class, weights, or set "
                "weights_module on the marker / --mlload-weights-module"
            )
        target = settings.weights_module
    modes = settings.mode
    if is_seed_taskset(target) or is_locust_user(target):
        return _single_target_parts(target, modes)
    pairs = taskset_weights(target)
    weights = dict(pairs)
    parts: list[Part] = []
    if "individual" in modes:
        parts += [Part(f"individual {c.endpoint}", "individual", c) for c, _ in pairs]
    if "production" in modes or "exploration" in modes:
        parts.append(Part("production", "production", weights, weights=_mix_label(pairs)))
    if "exploration" in modes:
        for cls, w in pairs:
            doubled = {**weights, cls: 2 * w}
            if w > 0:
                parts.append(
                    Part(
                        f"exploration 2x {cls.endpoint}",
                        "exploration",
                        doubled,
                        weights={c.endpoint: v for c, v in doubled.items()},
                    )
                )
        for i, mix in enumerate(mixes or []):
            checked = taskset_weights(mix, f"exploration mix {i + 1}")
            parts.append(
                Part(
                    f"exploration mix {i + 1}",
                    "exploration",
                    dict(checked),
                    weights=_mix_label(checked),
                )
            )
    if "spike" in modes:
        parts.append(Part("spike", "spike", weights, kind="spike", weights=_mix_label(pairs)))
    return parts


def _single_target_parts(target: Any, modes: tuple[str, ...]) -> list[Part]:
    """A single TaskSet or User runs individual and/or spike, never a mix mode."""
    if set(modes) - {"individual", "spike"}:
        raise ConfigError(
            f"mode {'/'.join(modes)} needs a weights mix ({{TaskSet: weight}}, a module with "
            f"production_weights or weights_module); a single "
            f"{'User' if is_locust_user(target) else 'TaskSet'} only runs individual or spike"
        )
    solo = [Part("individual", "individual", target)] if "individual" in modes else []
    if "spike" in modes:
        solo.append(Part("spike", "spike", target, kind="spike"))
    return solo


def rate_limit_rps(result: CapacityResult, safety_factor: float) -> float | None:
    """The recommended rate limit of a converged search: capacity x safety factor."""
    if not result.converged or result.spike is not None:
        return None
    return round(result.capacity_rps * safety_factor, 2)


def rate_limits(parts: Mapping[str, CapacityResult], safety_factor: float) -> dict[str, float]:
    """Recommended rate limit per solo endpoint and for the mix (not exploration mixes)."""
    out: dict[str, float] = {}
    for name, r in parts.items():
        limit = rate_limit_rps(r, safety_factor)
        if limit is not None and not name.startswith(("spike", "exploration")):
            out[name] = limit
    return out


def exploration_summary(
    parts: Mapping[str, CapacityResult], plan: list[Part]
) -> dict[str, Any] | None:
    """Capacity per mix, the best mix, and each endpoint's sensitivity.

    Sensitivity of endpoint e = relative capacity change when e's weight doubles, divided by
    the change of e's traffic share: -0.5 means every +10 % of share costs 5 % of capacity.
    """
    base = parts.get("production")
    explored = [p for p in plan if p.mode == "exploration" and p.name in parts]
    if base is None or not explored:
        return None
    base_w = next(p.weights for p in plan if p.name == "production")
    total = sum(base_w.values())
    table = [{"mix": "production", "weights": base_w, "capacity_rps": base.capacity_rps}]
    sensitivity: dict[str, float | None] = {}
    for p in explored:
        r = parts[p.name]
        table.append({"mix": p.name, "weights": p.weights, "capacity_rps": r.capacity_rps})
        if p.name.startswith("exploration 2x "):
            ep = p.name[len("exploration 2x ") :]
            share0 = base_w[ep] / total
            share1 = p.weights[ep] / sum(p.weights.values())
            cap_change = (
                (r.capacity_rps - base.capacity_rps) / base.capacity_rps
                if (base.capacity_rps > 0 and r.converged and base.converged)
                else math.nan
            )
            share_change = (share1 - share0) / share0 if share0 > 0 else math.nan
            value = cap_change / share_change if share_change else math.nan
            sensitivity[ep] = None if math.isnan(value) else round(value, 4)
    best = max(table, key=lambda row: float(row["capacity_rps"]))  # type: ignore[arg-type]
    return {"mixes": table, "best_mix": best["mix"], "sensitivity": sensitivity}


def run_modes(
    target: Any,
    settings: RunSettings,
    run: Callable[[Part], CapacityResult],
    *,
    mixes: list[Mapping[Any, Any]] | None = None,
) -> CapacityResult:
    """Plan the parts, run each with ``run(part)``, and combine them (see :func:`combine`)."""
    plan = plan_parts(target, settings, mixes=mixes)
    return combine({p.name: run(p) for p in plan}, plan, settings)


def combine(
    parts: dict[str, CapacityResult], plan: list[Part], settings: RunSettings
) -> CapacityResult:
    """One result for a run of several parts: the headline part's figures, every part in
    ``parts``, the exploration summary and the rate limits.

    The headline is ``production`` when the mix ran, else the only individual part; with
    several individual endpoints it is the weakest endpoint's figures (lowest capacity),
    named ``individual``, with ``endpoints`` mapping each endpoint to its full result.
    """
    solo = {p.name: parts[p.name] for p in plan if p.mode == "individual"}
    head: CapacityResult
    if "production" in parts:
        head = parts["production"]
    elif len(solo) == 1 or not solo:
        head = next(iter(solo.values())) if solo else next(iter(parts.values()))
    else:
        endpoints = {name.removeprefix("individual "): r for name, r in solo.items()}
        weakest = min(endpoints, key=lambda n: endpoints[n].capacity_rps)
        head = replace(
            endpoints[weakest],
            name="individual",
            endpoints=endpoints,
            note=f"headline figures are the weakest endpoint's ({weakest}); every endpoint "
            f"in .endpoints",
        )
    return replace(
        head,
        parts=parts,
        exploration=exploration_summary(parts, plan),
        rate_limits=rate_limits(parts, settings.safety_factor),
    )
