"""The public surface: ``__all__``, what importing the package pulls in, one result type."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_mlload
from pytest_mlload.config import RunSettings
from pytest_mlload.load.modes import combine, plan_parts
from pytest_mlload.results import CapacityResult


def test_all_is_sorted_complete_and_importable() -> None:
    names = pytest_mlload.__all__
    assert names == sorted(names)
    for name in names:
        assert getattr(pytest_mlload, name) is not None, name
    for needed in ("CapacityResult", "CapacityTest", "Judgement", "judge", "SpikeResult"):
        assert needed in names
    assert "ModeResults" not in names  # one result type for every mode
    assert callable(pytest_mlload.judge)  # the function, not a subpackage of that name


def test_importing_the_package_imports_neither_pytest_nor_locust() -> None:
    code = (
        "import sys, pytest_mlload; from pytest_mlload import judge, CapacityTest; "
        "print(sorted(m for m in ('pytest', 'locust', 'gevent') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _part(name: str, capacity_rps: float, p99_ms: float = 50.0) -> CapacityResult:
    return CapacityResult(
        name=name,
        host="http://127.0.0.1:1",
        status="converged",
        reason="",
        capacity_rps=capacity_rps,
        p50_ms=10.0,
        p95_ms=40.0,
        p99_ms=p99_ms,
        users=8,
        requests=1000,
        failures=0,
        error_ratio=0.0,
        measure_s=5.0,
        elapsed_s=20.0,
        target_p99_ms=100.0,
    )


WEIGHTS = "production_weights"


@pytest.fixture
def weights(monkeypatch: pytest.MonkeyPatch) -> str:
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "example_suite"))
    return WEIGHTS


def test_production_gives_the_mix_figures_directly(weights: str) -> None:
    settings = RunSettings(mode=("individual", "production"))
    plan = plan_parts(weights, settings)
    parts = {p.name: _part(p.name, 100.0 + i) for i, p in enumerate(plan)}
    result = combine(parts, plan, settings)
    assert result.capacity_rps == parts["production"].capacity_rps
    assert result.p99_ms == parts["production"].p99_ms
    assert result["production"] is parts["production"]
    assert set(result.parts) == set(parts) and [n for n, _ in result] == list(parts)
    assert result.rate_limits["production"] == round(0.7 * result.capacity_rps, 2)


def test_individual_gives_every_endpoint_as_a_full_result(weights: str) -> None:
    settings = RunSettings(mode=("individual",))
    plan = plan_parts(weights, settings)
    parts = {p.name: _part(p.name, 50.0 * (i + 1)) for i, p in enumerate(plan)}
    result = combine(parts, plan, settings)
    assert len(result.endpoints) == len(plan) >= 2
    for p in plan:
        ep = result.endpoints[p.name.removeprefix("individual ")]
        assert isinstance(ep, CapacityResult) and ep is parts[p.name]
    # the headline is the weakest endpoint, and says so
    assert result.capacity_rps == 50.0 and "weakest" in result.note
    assert CapacityResult.from_dict(result.to_dict()) == result


def test_a_missing_part_names_the_parts_there_are(weights: str) -> None:
    settings = RunSettings(mode=("production",))
    plan = plan_parts(weights, settings)
    result = combine({"production": _part("production", 10.0)}, plan, settings)
    with pytest.raises(KeyError, match="'spike'.*'production'"):
        result["spike"]
