"""Unit tests of the baseline model and YAML store (no pytest plugin, no sleeping)."""

from __future__ import annotations

import fcntl
import math
import multiprocessing
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from records import window

from pytest_mlload.baseline import (
    BaselineEntry,
    BaselineRun,
    BaselineStore,
    RunExtras,
    StoredP99,
    StoredSpike,
    _cpu_model,
    baseline_key,
    environment_fingerprint,
    fingerprint_differences,
)
from pytest_mlload.config import RunSettings
from pytest_mlload.errors import BaselineError
from pytest_mlload.results import (
    CapacityResult,
    EndpointResult,
    OpenLoopResult,
    ProbeResult,
    SpikeResult,
)

NOW = datetime(2026, 11, 25, 23, 59, 1, tzinfo=UTC)
FP = {
    "python": "3.11",
    "implementation": "CPython",
    "system": "Linux",
    "machine": "x86_64",
    "cpu_count": 8,
    "cpu_model": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
    "memory_gib": 31,
}
KEY = "test_capacity.py::test_classify"


def make_result(
    capacity_rps: float = 183.41,
    *,
    p99_ms: float | None = 97.3,
    users: int = 12,
    status: str = "converged",
    error_ratio: float = 0.0012,
) -> CapacityResult:
    endpoint = EndpointResult(
        name="/predict",
        capacity_rps=capacity_rps,
        p50_ms=40.1,
        p95_ms=80.2,
        p99_ms=p99_ms,
        requests=1000,
        failures=1,
        error_ratio=error_ratio,
    )
    return CapacityResult(
        name="test_classify",
        host="http://127.0.0.1:8000",
        status=status,
        reason="" if status == "converged" else "time cap reached",
        capacity_rps=capacity_rps,
        p50_ms=40.1,
        p95_ms=80.2,
        p99_ms=p99_ms,
        users=users,
        requests=1000,
        failures=1,
        error_ratio=error_ratio,
        measure_s=4.0,
        elapsed_s=30.0,
        target_p99_ms=120.0,
        endpoints={"/predict": endpoint},
    )


SETTINGS = RunSettings(target_p99_ms=120.0)


def store_at(tmp_path: Path, **kw: Any) -> BaselineStore:
    return BaselineStore(tmp_path / "baselines.yaml", **kw)


# ---------------------------------------------------------------- round trip and format


def test_runs_keep_their_own_intervals_rounded_and_older_files_without_them_load(
    tmp_path: Path,
) -> None:
    result = replace(
        make_result(), capacity_ci=(180.123456, 186.987654), p99_ci=(95.00001, 99.456789)
    )
    store = store_at(tmp_path)
    entry = store.record(KEY, result, SETTINGS, fingerprint=FP, now=NOW)
    assert entry.latest.capacity_ci_rps == (180.12, 186.99)
    assert entry.latest.p99_ci_ms == (95.0, 99.46)
    assert store.get(KEY) == entry
    assert "p99_ci_ms:\n      - 95.0\n      - 99.46" in store.path.read_text()
    # a file written before runs kept intervals: none, and nothing else changes
    doc = yaml.safe_load(store.path.read_text())
    for run in doc["tests"][KEY]["runs"]:
        del run["capacity_ci_rps"], run["p99_ci_ms"]
    store.path.write_text(yaml.safe_dump(doc))
    old = store.get(KEY)
    assert old is not None and old.latest.p99_ci_ms is None and old.latest.capacity_ci_rps is None
    assert old.latest.p99_ms == entry.latest.p99_ms


def with_extras(result: CapacityResult) -> CapacityResult:
    """``result`` with every typed figure a baseline run keeps beyond the core ones."""
    return replace(
        result,
        rate_limit_rps=146.728,
        probe=ProbeResult(
            users=10,
            p50_ms=35.0,
            p99_ms=88.123456,
            requests=400,
            failures=0,
            duration_s=3.0,
            p99_ci=(80.0, 95.55555),
            rps_ci=(128.2222, 138.7777),
        ),
        open_loop=OpenLoopResult(
            rate_rps=155.9, window=window(155.9, 71.23456, p99_ci=(65.0, 80.0)), peak_workers=9
        ),
        spike=SpikeResult(
            target_rps=400.0,
            base_rps=40.0,
            duration_s=5.0,
            pre=window(40.0, 30.0),
            spike=window(400.0, 300.0),
            recovery_s=1.23456,
            recovery_limit_s=10.0,
            peak_workers=50,
            ok_requests=1900,
        ),
        bound="max_users",
        knee_users=14,
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    entry = store.record(KEY, with_extras(make_result()), SETTINGS, fingerprint=FP, now=NOW)

    loaded = store.load()
    assert list(loaded) == [KEY]
    assert loaded[KEY] == entry
    assert store.get(KEY) == entry
    assert store.get("nope.py::test_x") is None
    run = entry.latest
    assert run.recorded_at == "2026-11-25T23:59:01Z"
    assert (run.capacity_rps, run.p99_ms, run.users, run.error_ratio) == (183.41, 97.3, 12, 0.0012)
    assert run.endpoints["/predict"]["failures"] == 1
    # the typed extras, rounded to 4 significant digits (intervals like their figure)
    assert run.extra == RunExtras(
        rate_limit_rps=146.7,
        probe=StoredP99(
            users=10, p99_ms=88.12, p99_ci=(80.0, 95.56), rps=133.3, rps_ci=(128.22, 138.78)
        ),
        open_loop=StoredP99(rate_rps=155.9, p50_ms=35.62, p99_ms=71.23, p99_ci=(65.0, 80.0)),
        spike=StoredSpike(
            target_rps=400.0, p99_ms=97.3, p99_ci=None, error_ratio=0.0012, recovery_s=1.235
        ),
        bound="max_users",
        knee_users=14,
    )
    assert loaded[KEY].latest.extra == run.extra
    stored = yaml.safe_load(store.path.read_text())["tests"][KEY]["runs"][0]["extra"]
    # the probe's throughput (400 successes in 3 s), with its interval: check mode compares
    # at that load
    assert stored["probe"] == {
        "users": 10,
        "p99_ms": 88.12,
        "p99_ci": [80.0, 95.56],
        "rps": 133.3,
        "rps_ci": [128.22, 138.78],
    }
    assert stored["rate_limit_rps"] == 146.7
    assert entry.settings == SETTINGS.comparable()
    assert entry.fingerprint == FP


def test_file_is_plain_sorted_schema_versioned_yaml(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.record("b.py::test_b", make_result(), SETTINGS, fingerprint=FP, now=NOW)
    store.record("a.py::test_ä[µ]", make_result(), SETTINGS, fingerprint=FP, now=NOW)
    text = store.path.read_text(encoding="utf-8")

    assert text.startswith("# pytest-mlload baselines:")
    assert "--mlload-update-baseline" in text.splitlines()[1]
    assert "!!" not in text and "&id" not in text  # no Python tags, no anchors
    assert "test_ä[µ]" in text  # unicode written as is
    doc = yaml.safe_load(text)
    assert doc["schema"] == 1
    assert list(doc["tests"]) == ["a.py::test_ä[µ]", "b.py::test_b"]
    assert text.index("a.py::") < text.index("b.py::")
    assert "recorded_at: '2026-11-25T23:59:01Z'" in text


def test_same_data_dumps_to_same_bytes(tmp_path: Path) -> None:
    a = store_at(tmp_path / "a")
    b = store_at(tmp_path / "b")
    for store in (a, b):
        store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    first = a.path.read_bytes()
    assert first == b.path.read_bytes()

    a.update(a.load())  # rewrite what was read
    assert a.path.read_bytes() == first


def test_float_noise_in_an_identical_figure_produces_no_diff(tmp_path: Path) -> None:
    a = store_at(tmp_path / "a")
    b = store_at(tmp_path / "b")
    a.record(
        KEY, make_result(183.41000000001, error_ratio=0.00120001), SETTINGS, fingerprint=FP, now=NOW
    )
    b.record(
        KEY, make_result(183.40999999, error_ratio=0.00119999), SETTINGS, fingerprint=FP, now=NOW
    )
    assert a.path.read_bytes() == b.path.read_bytes()
    assert "capacity_rps: 183.41\n" in a.path.read_text()


def test_rerecording_the_same_numbers_only_changes_recorded_at(tmp_path: Path) -> None:
    store = store_at(tmp_path, history=1)
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    before = store.path.read_text().splitlines()
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW + timedelta(days=1))
    after = store.path.read_text().splitlines()

    changed = [(x, y) for x, y in zip(before, after, strict=True) if x != y]
    assert changed == [
        ("    - recorded_at: '2026-11-25T23:59:01Z'", "    - recorded_at: '2026-11-26T23:59:01Z'")
    ]


def test_recorded_at_is_utc_seconds_with_z() -> None:
    plus2 = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone(timedelta(hours=2)))
    run = BaselineRun.from_result(make_result(), now=plus2)
    assert run.recorded_at == "2026-01-02T01:04:05Z"
    with pytest.raises(ValueError, match="naive"):
        BaselineRun.from_result(make_result(), now=datetime(2026, 1, 2))
    assert BaselineRun.from_result(make_result()).recorded_at.endswith("Z")


def test_inconclusive_result_is_not_a_baseline() -> None:
    with pytest.raises(ValueError, match="'inconclusive'.*time cap reached"):
        BaselineEntry.from_result(KEY, make_result(status="inconclusive"), SETTINGS, FP, now=NOW)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_never_written(tmp_path: Path, bad: float) -> None:
    store = store_at(tmp_path)
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    before = store.path.read_bytes()

    with pytest.raises(ValueError, match="capacity_rps"):
        store.record("x.py::test_x", make_result(bad), SETTINGS, fingerprint=FP, now=NOW)
    no_probe_p99 = replace(
        make_result(),
        probe=ProbeResult(
            users=10, p50_ms=30.0, p99_ms=bad, requests=100, failures=0, duration_s=2.0
        ),
    )
    with pytest.raises(ValueError, match=r"extra\.probe\.p99_ms"):
        store.record("x.py::test_x", no_probe_p99, SETTINGS, fingerprint=FP, now=NOW)
    # a rate limit that is not a number is not kept at all (never written as nan/inf)
    assert BaselineRun.from_result(replace(make_result(), rate_limit_rps=bad)).extra == RunExtras()
    entry = BaselineEntry.from_result(KEY, make_result(), SETTINGS, FP, now=NOW)
    broken = replace(entry, runs=(replace(entry.latest, p99_ms=bad),))
    with pytest.raises(ValueError, match="p99_ms"):
        store.update({KEY: broken})
    assert store.path.read_bytes() == before


def test_non_plain_extra_is_refused(tmp_path: Path) -> None:
    entry = BaselineEntry.from_result(KEY, make_result(), SETTINGS, FP, now=NOW)
    odd = replace(entry.latest, extra=RunExtras(hpa={"when": NOW}))  # the free-form part
    with pytest.raises(ValueError, match=r"extra\.hpa\.when"):
        replace(entry, runs=(odd,)).to_dict()
    store = store_at(tmp_path)
    with pytest.raises(ValueError, match=r"extra\.hpa\.when"):
        store.update({KEY: replace(entry, runs=(odd,))})
    assert not store.path.exists()


# ---------------------------------------------------------------- history and aggregates


def test_history_keeps_last_n_and_aggregates_are_medians(tmp_path: Path) -> None:
    store = store_at(tmp_path, history=5)
    figures = [
        (100, 50.0),
        (200, 60.0),
        (300, None),
        (400, 80.0),
        (500, 90.0),
        (10, 10.0),
        (1000, 99.0),
    ]
    for i, (cap, p99) in enumerate(figures):
        entry = store.record(
            KEY,
            make_result(cap, p99_ms=p99, users=i + 1),
            SETTINGS,
            fingerprint=FP,
            now=NOW + timedelta(hours=i),
        )

    assert [r.capacity_rps for r in entry.runs] == [300, 400, 500, 10, 1000]  # newest last
    assert entry.capacity_rps == 400  # median of the kept runs
    assert entry.p99_ms == (80.0 + 90.0) / 2  # median over runs with a P99: 80, 90, 10, 99
    assert entry.users == 7  # the newest run's operating load
    assert entry.capacity_spread_ratio == pytest.approx((1000 - 10) / 400)
    assert entry.latest.recorded_at == "2026-11-26T05:59:01Z"
    assert store.load()[KEY] == entry


def test_by_default_the_newest_ten_runs_are_kept(tmp_path: Path) -> None:
    """Ten, so that a nightly --mlload-update-baseline builds the history the gate's
    "record more baseline runs" asks for without a --mlload-history of its own."""
    store = store_at(tmp_path)
    for i in range(12):
        entry = store.record(
            KEY, make_result(100.0 + i), SETTINGS, fingerprint=FP, now=NOW + timedelta(hours=i)
        )
    assert [r.capacity_rps for r in entry.runs] == [100.0 + i for i in range(2, 12)]
    assert store.load()[KEY].runs == entry.runs


def test_aggregates_of_a_single_run_and_of_no_p99() -> None:
    entry = BaselineEntry.from_result(KEY, make_result(250.0, p99_ms=None), SETTINGS, FP, now=NOW)
    assert entry.capacity_rps == 250.0
    assert entry.p99_ms is None
    assert entry.capacity_spread_ratio == 0.0
    zero = BaselineEntry.from_result(KEY, make_result(0.0), SETTINGS, FP, now=NOW)
    assert zero.capacity_spread_ratio == 0.0
    mixed = zero.with_run(
        BaselineRun.from_result(make_result(5.0), now=NOW), SETTINGS, FP, history=3
    ).with_run(BaselineRun.from_result(make_result(0.0), now=NOW), SETTINGS, FP, history=3)
    assert mixed.capacity_spread_ratio == math.inf


def test_settings_change_restarts_history(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for cap in (100, 110, 120):
        store.record(KEY, make_result(cap), SETTINGS, fingerprint=FP, now=NOW)
    other = RunSettings(target_p99_ms=200.0)
    entry = store.record(KEY, make_result(300), other, fingerprint=FP, now=NOW)

    assert [r.capacity_rps for r in entry.runs] == [300]
    assert entry.settings["target_p99_ms"] == 200.0
    assert store.get(KEY) == entry
    # Settings outside the comparable set do not restart it.
    entry = store.record(
        KEY, make_result(310), replace(other, min_samples=50), fingerprint=FP, now=NOW
    )
    assert [r.capacity_rps for r in entry.runs] == [300, 310]


def test_with_run_takes_the_newest_fingerprint_and_validates_history() -> None:
    entry = BaselineEntry.from_result(KEY, make_result(), SETTINGS, FP, now=NOW)
    newer = {**FP, "cpu_count": 16}
    grown = entry.with_run(entry.latest, SETTINGS, newer, history=5)
    assert grown.fingerprint == newer
    assert len(grown.runs) == 2
    with pytest.raises(ValueError, match="history"):
        entry.with_run(entry.latest, SETTINGS, FP, history=0)
    with pytest.raises(ValueError, match="at least one run"):
        BaselineEntry(key=KEY, settings={}, fingerprint={}, runs=())


# ---------------------------------------------------------------- update semantics


HAND_WRITTEN = """\
schema: 1
tests:
  other.py::test_keep:
    settings: {client: http, max_users: 8, min_users: 1, mode: [spike],
               target_p99_ms: 50, wait_time_s: 0.5}
    fingerprint: {cpu_count: 2}
    runs:
    - {recorded_at: '2025-01-01T00:00:00Z', capacity_rps: 12, p50_ms: null, p95_ms: null,
       p99_ms: 40.123456, users: 3, error_ratio: 0, requests: 99, endpoints: {},
       extra: {knee_users: 4, probe: {users: 2, p99_ms: 31.987654}, rate_limit_rps: 9}}
"""


def test_update_leaves_other_entries_untouched(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.path.write_text(HAND_WRITTEN)
    kept_before = yaml.safe_load(HAND_WRITTEN)["tests"]["other.py::test_keep"]

    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    doc = yaml.safe_load(store.path.read_text())
    assert doc["tests"]["other.py::test_keep"] == kept_before  # same data, not re-rounded
    assert isinstance(doc["tests"]["other.py::test_keep"]["runs"][0]["capacity_rps"], int)

    first = store.path.read_bytes()
    store.record(KEY, make_result(200), SETTINGS, fingerprint=FP, now=NOW)
    doc = yaml.safe_load(store.path.read_text())
    assert doc["tests"]["other.py::test_keep"] == kept_before

    def keep_block(data: bytes) -> bytes:
        return data[data.index(b"  other.py::test_keep:") : data.index(b"  test_capacity.py::")]

    assert keep_block(store.path.read_bytes()) == keep_block(first)  # byte-for-byte


def test_update_writes_several_entries_and_checks_keys(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    a = BaselineEntry.from_result("a.py::t", make_result(1), SETTINGS, FP, now=NOW)
    b = BaselineEntry.from_result("b.py::t", make_result(2), SETTINGS, FP, now=NOW)
    store.update({a.key: a, b.key: b})
    assert store.load() == {a.key: a, b.key: b}
    with pytest.raises(ValueError, match="has key"):
        store.update({"c.py::t": a})


def test_reads_do_not_create_files_and_writes_leave_no_temp_files(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "sub" / "dir" / "baselines.yaml")
    assert store.load() == {}
    assert not (tmp_path / "sub").exists()

    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    assert sorted(p.name for p in store.path.parent.iterdir()) == [
        "baselines.yaml",
        "baselines.yaml.lock",
    ]
    assert store.lock_path == store.path.with_name("baselines.yaml.lock")


def test_empty_file_is_an_empty_store(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.path.write_text("# nothing recorded yet\n")
    assert store.load() == {}
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    assert list(store.load()) == [KEY]


def test_file_mode_is_preserved(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    os.chmod(store.path, 0o640)
    store.record(KEY, make_result(150), SETTINGS, fingerprint=FP, now=NOW)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o640


def test_symlinked_file_is_updated_through_the_link(tmp_path: Path) -> None:
    real = store_at(tmp_path / "real")
    real.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    link = tmp_path / "link.yaml"
    link.symlink_to(real.path)
    BaselineStore(link).record("b.py::t", make_result(), SETTINGS, fingerprint=FP, now=NOW)
    assert link.is_symlink()
    assert sorted(real.load()) == ["b.py::t", KEY]


def test_lock_held_elsewhere_times_out_naming_the_lock(tmp_path: Path) -> None:
    store = store_at(tmp_path, lock_timeout_s=0)
    store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW)
    before = store.path.read_bytes()
    # flock locks belong to the open file description: a second open() conflicts in-process.
    fd = os.open(store.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BaselineError, match=r"could not lock .*baselines\.yaml\.lock"):
            store.record(KEY, make_result(1), SETTINGS, fingerprint=FP, now=NOW)
    finally:
        os.close(fd)
    assert store.path.read_bytes() == before
    store.record(KEY, make_result(1), SETTINGS, fingerprint=FP, now=NOW)  # released: works again


# ---------------------------------------------------------------- malformed files


def _valid_doc() -> dict[str, Any]:
    entry = BaselineEntry.from_result(KEY, make_result(), SETTINGS, FP, now=NOW)
    return {"schema": 1, "tests": {KEY: entry.to_dict()}}


def _with(path: tuple[Any, ...], value: Any) -> str:
    doc = _valid_doc()
    node = doc
    for part in path[:-1]:
        node = node[part]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return yaml.safe_dump(doc)


_DELETE = object()
RUN0 = ("tests", KEY, "runs", 0)

MALFORMED: dict[str, tuple[str | bytes, list[str]]] = {
    "bad yaml": ("schema: 1\ntests:\n  a.py::t: [unclosed\n", ["line 4", "invalid YAML"]),
    "merge conflict": (
        "schema: 1\ntests:\n<<<<<<< HEAD\n  a: 1\n=======\n",
        ["line", "invalid YAML"],
    ),
    "wrong schema": (_with(("schema",), 2), ["schema 2", "reads schema 1"]),
    "no schema": (_with(("schema",), _DELETE), ["missing 'schema: 1'"]),
    "top is a list": ("- 1\n- 2\n", ["expected a mapping"]),
    "tests not a mapping": ("schema: 1\ntests: [1]\n", ["'tests' must be a mapping"]),
    "negative capacity": (
        _with((*RUN0, "capacity_rps"), -3.0),
        [KEY, "runs[0].capacity_rps", ">= 0"],
    ),
    "string capacity": (
        _with((*RUN0, "capacity_rps"), "fast"),
        [KEY, "runs[0].capacity_rps", "'fast'"],
    ),
    "string p99": (_with((*RUN0, "p99_ms"), "97 ms"), [KEY, "runs[0].p99_ms", "number"]),
    "missing runs": (_with(("tests", KEY, "runs"), _DELETE), [KEY, "runs", "non-empty list"]),
    "empty runs": (_with(("tests", KEY, "runs"), []), [KEY, "runs", "non-empty list"]),
    "missing capacity": (
        _with((*RUN0, "capacity_rps"), _DELETE),
        [KEY, "runs[0].capacity_rps", "missing"],
    ),
    "zero users": (_with((*RUN0, "users"), 0), [KEY, "runs[0].users", "integer >= 1"]),
    "error ratio as percent": (
        _with((*RUN0, "error_ratio"), 12),
        [KEY, "runs[0].error_ratio", "<= 1"],
    ),
    "nan": (_with((*RUN0, "p50_ms"), math.nan), [KEY, "runs[0].p50_ms"]),
    "settings not a mapping": (
        _with(("tests", KEY, "settings"), "fast"),
        [KEY, "settings", "mapping"],
    ),
    "unquoted timestamp": (
        _with((*RUN0, "recorded_at"), NOW),
        [KEY, "runs[0].recorded_at", "quoted ISO-8601"],
    ),
    "typo field": (_with((*RUN0, "p99ms"), 3.0), [KEY, "runs[0].p99ms", "unknown field"]),
    "reversed interval": (
        _with((*RUN0, "p99_ci_ms"), [99.0, 95.0]),
        [KEY, "runs[0].p99_ci_ms", "0 <= low <= high"],
    ),
    "interval of one": (
        _with((*RUN0, "capacity_ci_rps"), [180.0]),
        [KEY, "runs[0].capacity_ci_rps", "[low, high]"],
    ),
    "endpoint figure": (
        _with((*RUN0, "endpoints", "/predict", "p99_ms"), "slow"),
        [KEY, "runs[0].endpoints./predict.p99_ms"],
    ),
    "entry not a mapping": (_with(("tests", KEY), [1, 2]), [KEY, "expected a mapping"]),
    "duplicate key": (
        "schema: 1\ntests:\n  a.py::t: {}\n  a.py::t: {}\n",
        ["line 4", "duplicate key 'a.py::t'"],
    ),
    "python tag": ("schema: 1\ntests: !!python/object:os.system {}\n", ["line 2", "invalid YAML"]),
    "not utf-8": (b"schema: 1\ntests: {}\n# \xff\n", ["not UTF-8"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_raises_naming_file_and_field_and_is_left_alone(
    tmp_path: Path, case: str
) -> None:
    content, fragments = MALFORMED[case]
    store = store_at(tmp_path)
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    store.path.write_bytes(data)

    for attempt in (
        store.load,
        lambda: store.get(KEY),
        lambda: store.record(KEY, make_result(), SETTINGS, fingerprint=FP, now=NOW),
        lambda: store.update({}),
    ):
        with pytest.raises(BaselineError) as info:
            attempt()
        message = str(info.value)
        assert str(store.path) in message
        assert info.value.path == str(store.path)
        for fragment in fragments:
            assert fragment in message
        assert "fix or delete the entry, or rerun with --mlload-update-baseline" in message
        assert store.path.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) in (
        ["baselines.yaml"],
        ["baselines.yaml", "baselines.yaml.lock"],
    )


def test_valid_doc_helper_is_valid(tmp_path: Path) -> None:
    # Guards the malformed cases above: each breaks exactly one thing in a valid file.
    store = store_at(tmp_path)
    store.path.write_text(yaml.safe_dump(_valid_doc()))
    assert list(store.load()) == [KEY]


# ---------------------------------------------------------------- concurrency


def _record_many(path: str, worker: int, start: Any) -> None:
    start.wait(30)
    store = BaselineStore(Path(path), history=100)
    for i in range(20):
        store.record(
            f"w{worker}.py::test_{i:02d}", make_result(100 + i), SETTINGS, fingerprint=FP, now=NOW
        )
        store.record("shared.py::test_both", make_result(worker), SETTINGS, fingerprint=FP, now=NOW)


def test_concurrent_updates_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    path = tmp_path / "baselines.yaml"
    procs = [ctx.Process(target=_record_many, args=(str(path), w, start)) for w in (1, 2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]

    entries = BaselineStore(path).load()
    expected = {f"w{w}.py::test_{i:02d}" for w in (1, 2) for i in range(20)}
    assert set(entries) == expected | {"shared.py::test_both"}
    assert len(entries["shared.py::test_both"].runs) == 40  # no run lost either
    assert yaml.safe_load(path.read_text())["schema"] == 1


# ---------------------------------------------------------------- keys


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "repo" / "tests" / "perf").mkdir(parents=True)
    (tmp_path / "repo" / "baselines").mkdir()
    (tmp_path / "elsewhere").mkdir()
    return {
        "root": tmp_path,
        "test": tmp_path / "repo" / "tests" / "perf" / "test_capacity.py",
        "inside": tmp_path / "repo" / "tests" / "baselines.yaml",
        "outside": tmp_path / "repo" / "baselines" / "mlload.yaml",
    }


@pytest.mark.parametrize(
    ("baseline", "expected"),
    [
        ("inside", "perf/test_capacity.py::TestX::test_y[bert-8]"),
        ("outside", "../tests/perf/test_capacity.py::TestX::test_y[bert-8]"),
    ],
)
def test_baseline_key_does_not_depend_on_cwd(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch, baseline: str, expected: str
) -> None:
    keys = set()
    for cwd in (
        tree["root"],
        tree["test"].parent,
        tree["root"] / "elsewhere",
        tree["outside"].parent,
    ):
        monkeypatch.chdir(cwd)
        keys.add(baseline_key(tree["test"], "TestX::test_y[bert-8]", tree[baseline]))
    assert keys == {expected}


def test_baseline_key_ignores_how_the_directories_are_spelled(tree: dict[str, Path]) -> None:
    link = tree["root"] / "link"
    link.symlink_to(tree["root"] / "repo")
    spelled = tree["root"] / "repo" / "tests" / ".." / "tests" / "perf" / "test_capacity.py"
    via_link = link / "tests" / "perf" / "test_capacity.py"
    keys = {
        baseline_key(t, "test_classify", tree["inside"]) for t in (tree["test"], spelled, via_link)
    }
    assert keys == {"perf/test_capacity.py::test_classify"}
    with pytest.raises(ValueError, match="test_name"):
        baseline_key(tree["test"], "", tree["inside"])


# ---------------------------------------------------------------- fingerprint


def test_environment_fingerprint_is_stable_plain_data() -> None:
    fp = environment_fingerprint()
    assert set(fp) == {
        "python",
        "implementation",
        "system",
        "machine",
        "cpu_count",
        "cpu_model",
        "memory_gib",
    }
    assert fp["python"] == "3.11"
    assert isinstance(fp["cpu_count"], int)
    assert fp == environment_fingerprint()
    text = repr(fp).lower()
    assert os.uname().nodename.lower() not in text
    assert "mhz" not in text


def test_cpu_model_comes_from_model_name_not_mhz() -> None:
    cpuinfo = "processor\t: 0\ncpu MHz\t\t: 2494.140\nmodel name\t: Intel(R)  Xeon(R) CPU\n"
    assert _cpu_model(cpuinfo) == "Intel(R) Xeon(R) CPU"
    assert _cpu_model("processor : 0\nHardware : BCM2835\n") is None


def test_fingerprint_differences() -> None:
    assert fingerprint_differences(FP, dict(FP)) == []
    other = {**FP, "cpu_count": 2, "memory_gib": None}
    del other["machine"]
    other["new"] = "x"
    assert fingerprint_differences(FP, other) == [
        "cpu_count: 8 -> 2",
        "machine: x86_64 -> (missing)",
        "memory_gib: 31 -> null",
        "new: (missing) -> x",
    ]


def test_reference_load_is_where_most_runs_measured_p99(tmp_path: Path) -> None:
    """Runs recorded while the entry exists probe the reference load: it stays put."""
    store = store_at(tmp_path, history=5)
    loads = [(20, None), (22, 20), (19, 20), (23, 20)]  # (operating users, probed users)
    for i, (users, probed) in enumerate(loads):
        probe = (
            ProbeResult(
                users=probed, p50_ms=20.0, p99_ms=50.0 + i, requests=300, failures=0, duration_s=3
            )
            if probed
            else None
        )
        run = BaselineRun.from_result(
            replace(make_result(200.0, users=users), probe=probe), now=NOW
        )
        assert (run.extra.probe is not None) == bool(probed)
        old = store.load().get(KEY)
        entry = (
            old.with_run(run, SETTINGS, FP, 5)
            if old
            else BaselineEntry.from_result(KEY, make_result(200.0, users=users), SETTINGS, FP)
        )
        store.update({KEY: entry})
    entry = store.load()[KEY]
    assert [r.users for r in entry.runs] == [20, 22, 19, 23]
    assert entry.latest.users == 23
    assert entry.users == 20  # four P99 figures at 20 users, one at each other load


def test_reference_load_ties_go_to_the_newest_run() -> None:
    runs = tuple(
        BaselineRun.from_result(make_result(200.0, users=u), now=NOW + timedelta(hours=i))
        for i, u in enumerate((10, 11, 12))
    )
    entry = BaselineEntry(key=KEY, settings={}, fingerprint={}, runs=runs)
    assert entry.users == 12


def record_as_plugin(
    store: BaselineStore, ops: list[int], history: int = 10
) -> list[tuple[int, int, list[str]]]:
    """Record one run per operating load in ``ops`` as the plugin does: each run recorded
    while the entry exists carries a probe at the entry's reference load of that moment.
    Returns, per run, (probed load or 0, reference load after it, the entry's load notes)."""
    seen = []
    for i, users in enumerate(ops):
        old = store.load().get(KEY)
        probed = old.users if old else 0
        probe = (
            ProbeResult(
                users=probed, p50_ms=20.0, p99_ms=60.0, requests=300, failures=0, duration_s=3
            )
            if old
            else None
        )
        result = replace(make_result(200.0 + i, users=users), probe=probe)
        run = BaselineRun.from_result(result, now=NOW + timedelta(hours=i))
        entry = (
            old.with_run(run, SETTINGS, FP, history)
            if old
            else BaselineEntry.from_result(KEY, result, SETTINGS, FP, now=NOW)
        )
        store.update({KEY: entry})
        stored = store.load()[KEY]
        seen.append((probed, stored.users, stored.load_notes()))
    return seen


def test_reference_load_picked_by_an_outlying_first_run_moves_to_where_runs_operate(
    tmp_path: Path,
) -> None:
    """The MLServer case: the first search stalled at 3 users, the rest operated at 9-12.
    Two runs cannot outvote it; from the third kept run on, the reference moves to the load
    the median run agrees with, later runs probe there, and it stays there."""
    seen = record_as_plugin(store_at(tmp_path, history=10), [3, 10, 12, 9, 11, 10, 12, 9, 11])
    probed = [p for p, _, _ in seen]
    refs = [r for _, r, _ in seen]
    assert refs[:2] == [3, 3]  # one or two runs: the first load stands
    assert refs[2:] == [10] * 7  # median_low(3, 10, 12) = 10, nearest the median among 10, 12
    assert probed == [0, 3, 3] + [10] * 6
    notes = [n for _, _, n in seen]
    assert notes[2] == [
        "reference load moved from 3 to 10 users: 2 of 3 kept runs operated at 10-12 users, "
        "not near 3; later runs probe there and check mode holds it"
    ]
    assert all(n == [] for i, n in enumerate(notes) if i != 2)


def test_reference_load_stays_put_while_runs_scatter_within_the_span(tmp_path: Path) -> None:
    """Operating points that wander within 1.5x of the reference never move it, whatever
    the newest run's load."""
    seen = record_as_plugin(store_at(tmp_path, history=5), [16, 22, 12, 21, 11, 23, 17])
    assert [r for _, r, _ in seen] == [16] * 7
    assert all(n == [] for _, _, n in seen)


def test_half_the_runs_far_away_do_not_move_the_reference(tmp_path: Path) -> None:
    seen = record_as_plugin(store_at(tmp_path), [8, 8, 20, 20])
    assert [r for _, r, _ in seen] == [8, 8, 8, 8]  # 2 of 4 far is not more than half
    assert [p for p, _, _ in seen] == [0, 8, 8, 8]


def test_a_first_run_above_its_peers_moves_the_reference_down(tmp_path: Path) -> None:
    """MLServer's logistic regression, another series: the first search operated at 15
    users, the next six at 9-13; four at 9 outvote it after the seventh run."""
    seen = record_as_plugin(store_at(tmp_path), [15, 9, 13, 11, 9, 9, 9, 12])
    assert [r for _, r, _ in seen] == [15] * 6 + [9, 9]
    assert [p for p, _, _ in seen] == [0] + [15] * 6 + [9]
    assert seen[6][2] == [
        "reference load moved from 15 to 9 users: 4 of 7 kept runs operated at 9 users, not "
        "near 15; later runs probe there and check mode holds it"
    ]


def test_a_newest_run_far_below_its_peers_is_named(tmp_path: Path) -> None:
    seen = record_as_plugin(store_at(tmp_path), [10, 12, 9, 3])
    assert [r for _, r, _ in seen] == [10, 10, 10, 10]
    assert seen[3][2] == [
        "the newest run operated at 3 users, far from the kept runs' median 9 (3-12): its "
        "search may have stalled or met a noisy spell (the gates read medians, which one such "
        "run moves little)"
    ]
    assert all(notes == [] for _, _, notes in seen[:3])


def test_the_reference_changes_only_by_a_noted_move_and_never_flips_back(tmp_path: Path) -> None:
    """Seeded histories of operating loads, some with outlying searches: every change of
    the reference comes with its "moved" note, and a moved reference is not disputed by
    the runs that moved it (no flip back the next run)."""
    rng = np.random.default_rng(9)
    moves = 0
    for i in range(60):
        ops = [int(u) for u in rng.integers(8, 14, size=10)]
        for j in rng.choice(10, size=int(rng.integers(0, 3)), replace=False):
            ops[j] = int(rng.choice([3, 4, 25, 30]))  # a stalled or lucky search
        store = store_at(tmp_path / str(i), history=int(rng.integers(4, 11)))
        seen = record_as_plugin(store, ops, history=store.history)
        refs = [r for _, r, _ in seen]
        for k in range(1, len(seen)):
            moved = any(n.startswith("reference load moved") for n in seen[k][2])
            assert (refs[k] != refs[k - 1]) == moved, (ops, refs, k)
            if moved:
                moves += 1
                assert k + 1 == len(seen) or refs[k + 1] == refs[k], (ops, refs, k)
    assert moves >= 5  # the histories exercise the move
