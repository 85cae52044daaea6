"""Check mode's confirmation windows (``flow.confirm_check``): fakes for the windows, the
judge and the pause; the figures decide, no load."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from records import converged

from pytest_mlload import BaselineStore, CapacityTest, RunSettings
from pytest_mlload.errors import LoadError
from pytest_mlload.flow import confirm_check
from pytest_mlload.results import CapacityResult

SLOW_P99 = 150.0  # the fake judge: a window whose P99 is over this read a regression


def held(p99: float, cap: float = 200.0) -> CapacityResult:
    """A check window at 8 users that took 12 s."""
    return replace(converged(cap=cap, p99=p99, users=8), check=True, elapsed_s=12.0)


def regressions(r: CapacityResult) -> list[str]:
    return [f"P99 {r.p99_ms} ms over {SLOW_P99}"] if (r.p99_ms or 0) > SLOW_P99 else []


class Windows:
    """The next windows' P99 values, in order; records every pause."""

    def __init__(self, *p99s: float | Exception) -> None:
        self._next: Iterator[float | Exception] = iter(p99s)
        self.pauses: list[float] = []
        self.runs = 0

    def again(self) -> CapacityResult:
        self.runs += 1
        value = next(self._next)
        if isinstance(value, Exception):
            raise value
        return held(value)

    def confirm(self, first: float, settings: RunSettings | None = None) -> CapacityResult:
        return confirm_check(
            held(first),
            self.again,
            regressions,
            settings or RunSettings(),
            pause=self.pauses.append,
        )


def test_a_first_window_without_regression_is_the_verdict() -> None:
    w = Windows()
    out = w.confirm(90.0)
    assert (out.p99_ms, out.confirm, out.elapsed_s) == (90.0, "", 12.0)
    assert (w.runs, w.pauses) == (0, [])


def test_a_slow_spell_in_window_1_is_dismissed_by_the_next_two() -> None:
    w = Windows(95.0, 92.0)
    out = w.confirm(161.6)
    assert out.p99_ms == 92.0 and out.converged  # judged on the deciding window
    assert regressions(out) == []
    assert w.pauses == [10.0, 10.0] and w.runs == 2
    assert out.elapsed_s == pytest.approx(12 * 3 + 10 * 2)
    assert out.confirm.startswith("window 1's regression did not hold in 2 of 3 check windows")
    assert "window 1: 200.0 req/s, P99 161.6 ms at 8 users, regression" in out.confirm
    assert "window 3: 200.0 req/s, P99 92.0 ms at 8 users, no regression" in out.confirm


def test_a_real_regression_stands_after_two_windows() -> None:
    w = Windows(170.0, 80.0)  # the third value is never used
    out = w.confirm(165.0)
    assert out.p99_ms == 170.0 and w.runs == 1 and w.pauses == [10.0]
    assert out.confirm.startswith("the regression held in 2 of 2 check windows")
    assert regressions(out)


def test_two_of_three_windows_decide_a_regression() -> None:
    out = Windows(95.0, 180.0).confirm(165.0)
    assert out.p99_ms == 180.0
    assert out.confirm.startswith("the regression held in 2 of 3 check windows")


def test_no_window_starts_past_the_time_cap() -> None:
    """12 s spent + 10 s pause + a 12 s window > 30 s: window 1 decides, and says why."""
    w = Windows(90.0)
    out = w.confirm(165.0, RunSettings(max_duration_s=30))
    assert w.runs == 0 and out.p99_ms == 165.0
    assert out.confirm.startswith("the regression held in 1 of 1 check windows")
    assert "no time for window 2: 12 s spent" in out.confirm and "max_duration_s=30" in out.confirm


def test_a_failed_confirmation_window_leaves_the_split_inconclusive() -> None:
    w = Windows(90.0, LoadError("the load driver overran its time cap"))
    out = w.confirm(165.0)
    assert w.runs == 2 and not out.converged
    assert out.reason.startswith("check windows split 1 to 1 on a regression: window 3 failed")
    assert "overran" in out.reason


def test_an_even_number_of_windows_can_split_and_that_is_not_a_pass() -> None:
    out = Windows(90.0).confirm(165.0, RunSettings(check_windows=2))
    assert not out.converged
    assert "check_windows=2 leaves no window to decide" in out.reason


def test_one_window_is_the_old_single_window_verdict() -> None:
    w = Windows(90.0)
    out = w.confirm(165.0, RunSettings(check_windows=1))
    assert (out.p99_ms, out.confirm, w.runs) == (165.0, "", 0)


def test_five_windows_need_three_agreeing() -> None:
    w = Windows(95.0, 170.0, 90.0, 91.0)
    out = w.confirm(165.0, RunSettings(check_windows=5, check_gap_s=2, max_duration_s=120))
    assert w.runs == 4 and w.pauses == [2.0] * 4 and out.p99_ms == 91.0
    assert out.confirm.startswith("window 1's regression did not hold in 3 of 5")


@pytest.mark.parametrize("bad", [{"check_windows": 0}, {"check_windows": 6}, {"check_gap_s": -1}])
def test_bad_window_settings_are_refused_by_name(bad: dict[str, float]) -> None:
    from pytest_mlload.errors import ConfigError

    with pytest.raises(ConfigError, match=next(iter(bad))):
        RunSettings(**bad)


def test_the_tests_own_judge_reads_regressions_and_the_verdict_carries_the_windows(
    tmp_path: Path,
) -> None:
    """CapacityTest.regressions is the gate itself: ten baseline runs probing 8 users at 300
    req/s and P99 100 ms; a held window at 225 req/s and P99 160 ms reads both regressions,
    one at the baseline's figures none; a confirmed result's verdict messages name the
    windows."""
    settings = RunSettings(target_p99_ms=120)
    store = BaselineStore(tmp_path / "b.yaml")
    for cap in (294.0, 297.0, 300.0, 303.0, 306.0) * 2:
        store.record("svc::t", converged(cap=cap, p99=100.0, users=8), settings)
    test = CapacityTest(key="svc::t", host="http://127.0.0.1:9", settings=settings, store=store)
    slow = held(160.0, cap=225.0)
    found = test.regressions(slow)
    assert len(found) == 2 and "fell" in found[0] and "rose" in found[1], found
    assert test.regressions(held(100.0, cap=300.0)) == []
    out = confirm_check(slow, lambda: slow, test.regressions, settings, pause=lambda _: None)
    judged = test.judge(out)
    assert judged.outcome == "regression"
    assert all("[the regression held in 2 of 2 check windows" in v.message for v in judged.failing)
