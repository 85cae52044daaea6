"""Unit tests of settings resolution and target checking, without pytester or Locust."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest

from pytest_mlload.config import RunSettings, resolve_settings
from pytest_mlload.errors import ConfigError
from pytest_mlload.targets import is_seed_taskset, resolve_target, taskset_weights


def test_precedence_is_marker_then_cli_then_layers_then_ini() -> None:
    ini = {"target_p99_ms": "100", "max_users": "10", "threshold": "0.2", "min_users": "2"}
    layer = {"target_p99_ms": 200, "max_users": 20, "threshold": 0.3}
    cli = {"target_p99_ms": "300", "max_users": "30"}
    marker = {"target_p99_ms": 400}
    s = resolve_settings(marker, cli, ini, layers=[(layer, "conf file")])
    assert (s.target_p99_ms, s.max_users, s.threshold, s.min_users) == (400, 30, 0.3, 2)


def test_empty_and_none_values_mean_not_given() -> None:
    s = resolve_settings({"target_p99_ms": None}, {"target_p99_ms": ""}, {"target_p99_ms": "150"})
    assert s.target_p99_ms == 150


def test_unknown_marker_argument_is_named_with_the_accepted_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) target_p99.*accepted: .*"):
        resolve_settings({"target_p99": 100}, where="t.py::test_x: capacity marker")


def test_a_bad_value_names_its_source_and_field() -> None:
    with pytest.raises(ConfigError, match="command line --mlload-\\*: max_users='many'"):
        resolve_settings({}, {"max_users": "many"})


def test_settings_are_frozen_keyword_only_and_validated() -> None:
    s = RunSettings(target_p99_ms=120)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.target_p99_ms = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        RunSettings(120)  # type: ignore[misc]
    with pytest.raises(ConfigError):
        RunSettings(min_users=10, max_users=5)


def test_comparable_settings_change_with_what_changes_results() -> None:
    base = RunSettings(target_p99_ms=120)
    assert base.comparable() == RunSettings(target_p99_ms=120).comparable()
    assert base.comparable() != RunSettings(target_p99_ms=150).comparable()


class Seed:
    """A seed-style TaskSet as ml-loadtest writes them (no Locust needed to check it)."""

    endpoint = "/v1/classify"

    def test_endpoint(self) -> None:  # pragma: no cover - never sent here
        raise AssertionError


class Other(Seed):
    endpoint = "/v1/embed"


class NoEndpoint:
    def test_endpoint(self) -> None:  # pragma: no cover
        raise AssertionError


def test_seed_taskset_becomes_a_spec_another_process_can_import() -> None:
    assert is_seed_taskset(Seed)
    spec = resolve_target(Seed)
    assert spec.kind == "tasksets" and spec.label == "/v1/classify"
    d = spec.to_dict()
    assert d["tasksets"][0]["ref"]["qualname"] == "Seed"


def test_weights_are_checked_by_name_and_number() -> None:
    assert taskset_weights({Seed: 3, Other: 1}) == ((Seed, 3.0), (Other, 1.0))
    with pytest.raises(ConfigError, match="weight of Seed is 'x', not a number"):
        taskset_weights({Seed: "x"})
    with pytest.raises(ConfigError, match="all weights are zero"):
        taskset_weights({Seed: 0, Other: 0})
    with pytest.raises(ConfigError, match="share endpoint '/v1/classify'"):
        taskset_weights({Seed: 1, type("Twin", (Seed,), {}): 1})
    with pytest.raises(ConfigError, match="NoEndpoint lacks endpoint"):
        taskset_weights({NoEndpoint: 1})


def test_a_weights_module_without_production_weights_says_how_to_define_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "empty_weights", types.ModuleType("empty_weights"))
    with pytest.raises(ConfigError, match="has no production_weights; define"):
        resolve_target("empty_weights")
    with pytest.raises(ConfigError, match="cannot be imported"):
        resolve_target("no_such_weights_module_here")


def test_a_class_defined_in_a_function_is_refused_with_the_reason() -> None:
    class Local(Seed):
        endpoint = "/local"

    with pytest.raises(ConfigError, match="defined inside a function"):
        resolve_target(Local)


def test_something_unrunnable_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not runnable"):
        resolve_target(42)
