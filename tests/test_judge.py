"""Unit tests of the judge (``pytest_mlload.judge``): results and a real baseline file in,
a :class:`Judgement` out. No pytester, no load: results are synthetic, baselines are recorded
through :class:`BaselineStore` exactly as a session records them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from records import converged as result

from pytest_mlload import Judgement, judge
from pytest_mlload.baseline import BaselineStore
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import (
    BaselineError,
    MissingBaseline,
    PerformanceRegression,
    SettingsMismatch,
)
from pytest_mlload.load.modes import Part, combine, rate_limit_rps
from pytest_mlload.results import CapacityResult, part_key

KEY = "test_svc.py::test_classify"
FP = {"cpu_count": 2, "machine": "x86_64"}
SETTINGS = RunSettings(target_p99_ms=120)
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def limited(cap: float) -> CapacityResult:
    """A result carrying its recommended rate limit, as ``CapacityTest.run_part`` adds it."""
    r = result(cap)
    return dataclasses.replace(r, rate_limit_rps=rate_limit_rps(r, SETTINGS.safety_factor))


def record_runs(
    store: BaselineStore,
    key: str,
    runs: list[CapacityResult],
    settings: RunSettings = SETTINGS,
) -> None:
    """Record ``runs`` one session after another (no probe: a first recording has none)."""
    for i, r in enumerate(runs):
        store.record(
            key,
            dataclasses.replace(r, probe=None),
            settings,
            fingerprint=FP,
            now=NOW + timedelta(hours=i),
        )


def three_runs(store: BaselineStore, key: str = KEY, cap: float = 200.0) -> None:
    record_runs(store, key, [result(cap), result(cap * 1.01, 101.0), result(cap * 0.99, 99.0)])


def judged(r: CapacityResult, store: BaselineStore, **kw: Any) -> Judgement:
    kw.setdefault("settings", SETTINGS)
    return judge(r, store, key=KEY, fingerprint=FP, baseline_path=str(store.path), **kw)


@pytest.fixture
def store(tmp_path: Path) -> BaselineStore:
    return BaselineStore(tmp_path / "mlload-baseline.yaml")


# --------------------------------------------------------------------------- single part


def test_an_unchanged_result_passes_against_three_runs(store: BaselineStore) -> None:
    three_runs(store)
    j = judged(result(200.0, 100.0), store)
    assert {v.metric: v.verdict for v in j.verdicts} == {
        "capacity": "pass",
        "p99": "pass",
        "error_ratio": "pass",
    }
    assert j.outcome == "pass" and j.passed and j.failing == () and j.error() is None
    cap = next(v for v in j.verdicts if v.metric == "capacity")
    assert (cap.baseline, cap.observed) == (200.0, 200.0)  # the median of 198, 200, 202
    assert "over 3 baseline runs" in cap.message
    assert j.to_dict()["outcome"] == "pass" and j.key == KEY


def test_a_30_percent_capacity_drop_is_a_regression_with_its_figures(
    store: BaselineStore,
) -> None:
    three_runs(store)
    j = judged(result(140.0, 100.0), store)
    assert j.outcome == "regression" and not j.passed
    assert [v.metric for v in j.failing] == ["capacity"]
    err = j.error()
    assert isinstance(err, PerformanceRegression) and isinstance(err, AssertionError)
    assert (err.metric, err.baseline, err.observed) == ("capacity", 200.0, 140.0)
    assert err.change_ratio == pytest.approx(-0.30)
    assert err.threshold_ratio == SETTINGS.threshold
    assert err.verdicts == j.failing
    assert f"capacity of {KEY} fell 30.0 % (200.0 -> 140.0 req/s" in str(err)
    assert "--mlload-update-baseline" in str(err)


def test_no_baseline_names_the_record_command(store: BaselineStore) -> None:
    command = f"pytest --mlload-update-baseline '{KEY}'"
    j = judged(result(), store, record_command=command)
    assert j.outcome == "no-baseline" and not j.passed
    err = j.error()
    assert isinstance(err, MissingBaseline)
    assert f"no baseline entry in {store.path}" in str(err)
    assert f"Record it with: {command}" in str(err)
    assert not store.path.exists()  # judging never writes


def test_a_baseline_with_other_settings_is_a_settings_mismatch(store: BaselineStore) -> None:
    record_runs(store, KEY, [result(), result()], settings=RunSettings(target_p99_ms=150))
    j = judged(result(), store)
    assert j.outcome == "settings-mismatch" and not j.passed
    err = j.error()
    assert isinstance(err, SettingsMismatch)
    assert "target_p99_ms: baseline 150.0, now 120.0" in str(err)
    # the same baseline under the settings it was measured with is compared (and passes)
    assert judged(result(), store, settings=RunSettings(target_p99_ms=150)).passed


# --------------------------------------------------------------------------- parts


def test_each_part_of_a_combined_result_is_judged_against_its_own_key(
    store: BaselineStore,
) -> None:
    plan = [Part("individual /a", "individual", None), Part("individual /b", "individual", None)]
    for i in range(3):
        store.record_many(
            [
                (part_key(KEY, "individual /a"), result(200.0 + i, name="individual /a"), SETTINGS),
                (part_key(KEY, "individual /b"), result(100.0 - i, name="individual /b"), SETTINGS),
            ],
            fingerprint=FP,
            now=NOW + timedelta(hours=i),
        )
    record_runs(store, KEY, [result(1000.0)])  # the bare key is not any part's baseline
    assert sorted(store.load()) == [KEY, f"{KEY}[individual /a]", f"{KEY}[individual /b]"]

    now = combine(
        {"individual /a": result(201.0, name="individual /a"), "individual /b": result(70.0)},
        plan,
        SETTINGS,
    )
    assert now.capacity_rps == 70.0 and set(now.parts) == {"individual /a", "individual /b"}
    j = judged(now, store)
    by_part = {(v.part, v.metric): v.verdict for v in j.verdicts}
    assert by_part == {
        ("individual /a", "capacity"): "pass",
        ("individual /a", "p99"): "pass",
        ("individual /a", "error_ratio"): "pass",
        ("individual /b", "capacity"): "regression",
        ("individual /b", "p99"): "pass",
        ("individual /b", "error_ratio"): "pass",
    }
    err = j.error()
    assert isinstance(err, PerformanceRegression) and (err.baseline, err.observed) == (99.0, 70.0)
    assert f"capacity of {KEY}[individual /b] fell" in str(err)
    # a part without its own entry is no-baseline, even though the bare key has one
    plan_c = [*plan, Part("individual /c", "individual", None)]
    parts = {**now.parts, "individual /c": result(1000.0, name="individual /c")}
    missing = judged(combine(parts, plan_c, SETTINGS), store)
    kinds = {v.part: v.verdict for v in missing.verdicts if v.part == "individual /c"}
    assert kinds == {"individual /c": "no-baseline"}


# --------------------------------------------------------------------------- rate limits


def test_a_fallen_rate_limit_is_a_regression_and_a_higher_one_passes(
    store: BaselineStore,
) -> None:
    record_runs(store, KEY, [limited(200.0), limited(202.0), limited(198.0)])
    assert [r.extra.rate_limit_rps for r in store.get(KEY).runs] == [140.0, 141.4, 138.6]  # type: ignore[union-attr]

    fallen = judged(limited(140.0), store, checks=("rate_limits",))
    assert [(v.metric, v.verdict, v.part) for v in fallen.verdicts] == [
        ("rate_limit", "regression", "")
    ]
    err = fallen.error()
    assert isinstance(err, PerformanceRegression) and err.metric == "rate_limit"
    assert (err.baseline, err.observed) == (140.0, 98.0)

    higher = judged(limited(300.0), store, checks=("rate_limits",))
    assert [v.verdict for v in higher.verdicts] == ["pass"] and higher.passed
    assert "one-sided" in higher.verdicts[0].message
    # the regression gates see the same higher capacity as an improvement, not a failure
    both = judged(limited(300.0), store, checks=("regression", "rate_limits"))
    assert both.outcome == "improvement" and both.passed


# --------------------------------------------------------------------------- the store


@pytest.mark.parametrize(
    ("edit", "field", "problem"),
    [
        ({"rate_limit_rps": 0}, "runs[0].extra.rate_limit_rps", "expected a number > 0"),
        (
            {"probe": {"users": 3, "p99_ms": "fast"}},
            "runs[0].extra.probe.p99_ms",
            "expected a number >= 0, got str 'fast'",
        ),
        ({"probe": {"users": 3}}, "runs[0].extra.probe.p99_ms", "missing"),
    ],
    ids=["zero-rate-limit", "p99-not-a-number", "missing-p99"],
)
def test_a_malformed_baseline_extra_names_file_key_and_field_and_is_left_alone(
    store: BaselineStore, edit: dict[str, Any], field: str, problem: str
) -> None:
    record_runs(store, KEY, [limited(200.0)])
    doc = yaml.safe_load(store.path.read_text())
    doc["tests"][KEY]["runs"][0].setdefault("extra", {}).update(edit)
    store.path.write_text(yaml.safe_dump(doc))
    before = store.path.read_bytes()

    fresh = BaselineStore(store.path)
    with pytest.raises(BaselineError) as info:
        judged(limited(200.0), fresh)
    message = str(info.value)
    assert str(store.path) in message and repr(KEY) in message
    assert f"field {field}: {problem}" in message
    assert info.value.path == str(store.path)
    # recording over it refuses too, and nothing is rewritten
    with pytest.raises(BaselineError, match=r"extra\."):
        fresh.record(KEY, limited(200.0), SETTINGS, fingerprint=FP, now=NOW)
    assert store.path.read_bytes() == before


def test_two_sessions_recording_the_same_key_keep_both_runs(store: BaselineStore) -> None:
    record_runs(store, KEY, [result(200.0)])
    first, second = BaselineStore(store.path), BaselineStore(store.path)
    # both sessions read the baseline (to plan and judge) before either records
    assert len(first.get(KEY).runs) == 1 and len(second.get(KEY).runs) == 1  # type: ignore[union-attr]
    first.record_many([(KEY, result(201.0), SETTINGS)], fingerprint=FP, now=NOW)
    second.record_many([(KEY, result(202.0), SETTINGS)], fingerprint=FP, now=NOW)

    caps = [r.capacity_rps for r in BaselineStore(store.path).get(KEY).runs]  # type: ignore[union-attr]
    assert caps == [200.0, 201.0, 202.0]
    # each session's cached read follows the file the other one wrote
    assert [r.capacity_rps for r in first.get(KEY).runs] == caps  # type: ignore[union-attr]
    assert [r.capacity_rps for r in second.get(KEY).runs] == caps  # type: ignore[union-attr]


def test_an_edited_mix_is_a_settings_mismatch_not_a_regression(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "b.yaml")
    mix = {"/v1/classify": 50.0, "/v1/embed": 50.0}
    record_runs(store, KEY, [dataclasses.replace(r, mix=mix) for r in (result(200.0),) * 3])
    # the same shares written as other numbers are the same mix
    same = judge(
        dataclasses.replace(result(200.0), mix={k: 1.0 for k in mix}), store, SETTINGS, key=KEY
    )
    assert same.outcome != "settings-mismatch", [v.message for v in same.verdicts]
    edited = dataclasses.replace(result(120.0), mix={"/v1/classify": 70.0, "/v1/embed": 30.0})
    j = judge(edited, store, SETTINGS, key=KEY)
    assert j.outcome == "settings-mismatch"
    assert "mix: baseline {'/v1/classify': 0.5, '/v1/embed': 0.5}" in j.verdicts[0].message
    assert isinstance(j.error(), SettingsMismatch)


def test_a_baseline_recorded_before_mixes_were_compared_stays_comparable(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "b.yaml")
    three_runs(store)  # no mix on the results: no "mix" key in the entry's settings
    assert "mix" not in store.get(KEY).settings  # type: ignore[union-attr]
    now = dataclasses.replace(result(200.0), mix={"/v1/classify": 1.0, "/v1/embed": 1.0})
    assert judge(now, store, SETTINGS, key=KEY).outcome != "settings-mismatch"


def test_recording_onto_an_entry_from_before_mixes_keeps_its_runs(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "b.yaml")
    three_runs(store)  # recorded without a mix
    mix = {"/v1/classify": 1.0, "/v1/embed": 1.0}
    entry = store.record(KEY, dataclasses.replace(result(200.0), mix=mix), SETTINGS, fingerprint=FP)
    assert len(entry.runs) == 4 and entry.settings["mix"] == {"/v1/classify": 0.5, "/v1/embed": 0.5}
