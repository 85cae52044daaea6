"""The ``mlload`` fixture: a :class:`~pytest_mlload.flow.CapacityTest` for the current test.

Translation only: the test's settings are resolved once (marker > command line > config file >
ini > default) and handed to the core; the core's verdicts become this test's outcome, its
warnings pytest warnings, its figures JUnit properties and report rows.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_mlload.config import RunSettings
from pytest_mlload.errors import ConfigError, GateFailure, MlloadError, MlloadWarning
from pytest_mlload.results import CapacityResult, part_key, part_name

if TYPE_CHECKING:
    from pytest_mlload.baseline import BaselineEntry
    from pytest_mlload.flow import CapacityTest
    from pytest_mlload.gates.judgement import Judgement
    from pytest_mlload.plugin import MlloadState

__all__ = ["MlloadFixture"]


class MlloadFixture:
    """The ``mlload`` fixture: run capacity searches and gate them against the baseline.

    ``run()`` returns one :class:`~pytest_mlload.results.CapacityResult` in every mode: the
    headline figures, and ``result.parts`` / ``result["production"]`` for each part of a
    run of several (``individual <endpoint>``, ``production``, ``exploration ...``,
    ``spike``). Each part has its own baseline entry, keyed ``<test key>[<part>]``.
    """

    def __init__(self, request: pytest.FixtureRequest, host: str | None, state: MlloadState):
        from pytest_mlload.baseline import baseline_key
        from pytest_mlload.report.tables import TestRecord

        self._request = request
        self._item = request.node
        self._state = state
        self.host = host or state.file_host
        nodeid = self._item.nodeid
        name = nodeid.split("::", 1)[1] if "::" in nodeid else self._item.name
        self.key = baseline_key(Path(self._item.path), name, state.baseline_path)
        self.record = TestRecord(nodeid=nodeid, key=self.key)
        state.records.append(self.record)
        rel = os.path.relpath(self._item.path, request.config.invocation_params.dir)
        self.record_command = f"pytest --mlload-update-baseline '{rel}::{name}'"
        self._test = self._capacity_test({})

    @property
    def settings(self) -> RunSettings:
        """This test's settings (marker > command line > config file > ini > default)."""
        return self._test.settings

    @property
    def baseline(self) -> BaselineEntry | None:
        """This test's baseline entry (single-target runs), or None."""
        return self._state.store.get(self.key)

    def _capacity_test(self, overrides: dict[str, Any]) -> CapacityTest:
        from pytest_mlload.flow import CapacityTest

        where = f"{self._item.nodeid}: capacity marker" + (" / run()" if overrides else "")
        try:
            settings, hpa = self._state.settings_for(self._item, overrides, where=where)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        return CapacityTest(
            key=self.key,
            host=self.host or "",
            settings=settings,
            store=self._state.store,
            update=self._state.update,
            hpa=hpa,
            keda_dir=self._state.keda_dir,
            record_command=self.record_command,
            warn=lambda text: self._item.warn(MlloadWarning(text)),
            on_event=_Progress(self._request.config),
            on_part=self._remember,
        )

    def run(self, target: Any = None, *, mixes: list[Any] | None = None, **overrides: Any) -> Any:
        """Run the capacity search(es) of ``target`` against the host, in the test's modes.

        ``target``: a seed TaskSet, a Locust User, or weights (mapping / module / dotted
        name; default ``weights_module``). ``mixes``: extra mixes for exploration.
        ``overrides`` are marker arguments for this run only (e.g. ``mode="production"``).
        """
        if not self.host:
            pytest.skip(
                "no --mlload-host given (or mlload_host ini / fixture): capacity test skipped"
            )
        if overrides:
            self._test = self._capacity_test(dict(overrides))
        try:
            return self._test.run(target, mixes=mixes)
        finally:
            self._test.on_event.close()  # type: ignore[union-attr]

    def _remember(self, part: str, result: CapacityResult) -> None:
        """Keep a result for the reports and put its figures in the JUnit XML properties."""
        if any(result is known for known in self.record.results):
            return
        self.record.results.append(result)
        suffix = f"[{part}]" if part_name(self.key, part) else ""
        p99 = None if result.p99_ms is None else round(result.p99_ms, 3)
        self._item.user_properties.extend(
            [
                (f"mlload_capacity_rps{suffix}", round(result.capacity_rps, 3)),
                (f"mlload_p99_ms{suffix}", p99),
                (f"mlload_users{suffix}", result.users),
                (f"mlload_error_ratio{suffix}", result.error_ratio),
                (f"mlload_status{suffix}", result.status),
            ]
        )

    # -- gates ---------------------------------------------------------------------------
    def assert_no_regression(self, result: CapacityResult) -> None:
        """Fail this test when any part regressed past the threshold (or cannot be judged).

        With ``--mlload-update-baseline`` each conclusive part is recorded instead; an
        inconclusive part fails and nothing of this test is recorded. With
        ``--mlload-hpa-gate`` the HPA drift gate runs too.
        """
        for name, r in result:  # a result made outside run() (e.g. run_capacity) counts too
            self._remember(name, r)
        try:
            if self._state.update:
                self._record(result)
            else:
                checks = ("regression", "hpa") if self._state.hpa_gate else ("regression",)
                self._apply(self._test.judge(result, checks=checks))
        except MlloadError as exc:
            if not isinstance(exc, GateFailure):  # a baseline that cannot be read, ...
                self.record.outcome, self.record.message = "error", str(exc)
            raise
        finally:
            self._item.user_properties.append(("mlload_verdict", self.record.outcome))

    def assert_rate_limits_stable(self, result: CapacityResult) -> None:
        """Fail when a recommended rate limit fell past the threshold since the baseline."""
        if not self._state.update:  # recording: assert_no_regression stores the rate limits
            self._apply(self._test.judge(result, checks=("rate_limits",)), keep_outcome=True)

    def assert_hpa_stable(self, result: CapacityResult) -> None:
        """Fail when a recommended HPA/KEDA threshold drifted from the baseline (see hpa/)."""
        if not self._state.update:  # recording: assert_no_regression stores the HPA report
            self._apply(self._test.judge(result, checks=("hpa",)), keep_outcome=True)

    def _apply(self, judgement: Judgement, *, keep_outcome: bool = False) -> None:
        """Keep the verdicts for the reports; fail the test when the judgement fails."""
        self.record.verdicts += list(judgement.verdicts)
        exc = judgement.error()
        if exc is not None:
            self.record.outcome, self.record.message = exc.verdict, str(exc)
            raise exc
        if not keep_outcome or self.record.outcome == "not judged":
            self.record.outcome = judgement.outcome

    def _record(self, result: CapacityResult) -> None:
        self._state.store.load()  # a file that cannot be read fails this test, not the session
        try:
            parts = self._test.recordable(result)
        except GateFailure as exc:
            self.record.outcome, self.record.message = exc.verdict, str(exc)
            raise
        for key, r in parts.items():
            self._state.pending[key] = (r, self.settings)
        self.record.outcome = "recorded"

    def part_key(self, part: str) -> str:
        """The baseline key of one part of this test."""
        return part_key(self.key, part)


class _Progress:
    """One updating terminal line per run: phase, users, req/s, P99 vs target."""

    def __init__(self, config: pytest.Config) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")
        self.on = bool(self.tr) and config.get_verbosity() >= 0 and sys.stdout.isatty()
        self.width = 0

    def __call__(self, label: str, event: dict[str, Any]) -> None:
        if not self.on or event.get("event") != "window":
            return
        p99 = event.get("p99_ms")
        text = (
            f"[mlload {label}] {event['phase']:<8} users={event['users']:<4} "
            f"{event['rps']:8.1f} req/s  P99 {'-' if p99 is None else f'{p99:.1f}'}"
            f"/{event['target_p99_ms']:g} ms  t={event['elapsed_s']:.0f}s"
        )
        assert self.tr is not None
        self.tr.write("\r" + text.ljust(self.width))
        self.width = len(text)

    def close(self) -> None:
        if self.on and self.width and self.tr is not None:
            self.tr.write("\r" + " " * self.width + "\r")
            self.width = 0
