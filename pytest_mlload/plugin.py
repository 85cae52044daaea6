"""pytest layer: options, the ``capacity`` marker, the ``mlload`` fixture, reports.

Translation only: settings come from :func:`pytest_mlload.config.resolve_settings`, runs
from :func:`pytest_mlload.engine.run_capacity`, verdicts from :mod:`pytest_mlload.gates`,
baselines from :mod:`pytest_mlload.baseline`.

Importing Locust gevent-patches the importing process. A test module that imports a TaskSet
imports Locust at collection time, so this plugin sets ``LOCUST_SKIP_MONKEY_PATCH`` (and
``LOCUST_SKIP_URLLIB3_PATCH``) when pytest loads it, before any test module: the pytest
process keeps the stdlib ``socket`` and ``threading``. Load is generated in a child process
that imports Locust normally.
"""

from __future__ import annotations

import os

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
os.environ.setdefault("LOCUST_SKIP_URLLIB3_PATCH", "1")

import contextlib  # noqa: E402
import fcntl  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import (
    TYPE_CHECKING,  # noqa: E402
    Any,  # noqa: E402
)

import pytest  # noqa: E402

from .config import RunSettings, resolve_settings, setting_fields  # noqa: E402
from .errors import ConfigError, GateFailure, Inconclusive, MlloadError  # noqa: E402
from .results import CapacityResult  # noqa: E402

if TYPE_CHECKING:
    from .baseline import BaselineEntry, BaselineStore
    from .report import TestRecord

# numpy, scipy and yaml load only once a capacity test runs (imports inside functions), so
# installing the plugin does not slow down every pytest session.

PLUGIN_NAME = "mlload-state"
DEFAULT_BASELINE = "mlload-baseline.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlload", "pytest-mlload capacity gates")
    plain = [
        ("host", "URL of the service under test, e.g. http://127.0.0.1:8000", None),
        ("baseline", f"baseline YAML file (default: <rootdir>/{DEFAULT_BASELINE})", None),
        ("report", "write a JSON report of every result and verdict to PATH", None),
        ("history", "recorded runs kept per test in the baseline (default 5)", None),
    ]
    for name, help_text, default in plain:
        group.addoption(
            f"--mlload-{name}",
            dest=f"mlload_{name}",
            default=default,
            metavar=name.upper(),
            help=f"{help_text} [ini: mlload_{name}]".replace("%", "%%"),
        )
        parser.addini(f"mlload_{name}", help_text, default=None)
    group.addoption(
        "--mlload-update-baseline",
        dest="mlload_update_baseline",
        action="store_true",
        default=None,
        help="record the results of the tests that run as new baselines instead of "
        "comparing [ini: mlload_update_baseline]",
    )
    parser.addini(
        "mlload_update_baseline",
        "record baselines instead of comparing",
        type="bool",
        default=False,
    )
    for f in setting_fields():
        opt = f.name.replace("_", "-")
        group.addoption(
            f"--mlload-{opt}",
            dest=f"mlload_{f.name}",
            default=None,
            metavar="VALUE",
            help=f"{f.metadata['help']} (default {_show(f.default)}; marker "
            f"argument {f.name}) [ini: mlload_{f.name}]".replace("%", "%%"),
        )
        parser.addini(f"mlload_{f.name}", f.metadata["help"], default=None)


def _show(value: Any) -> str:
    return " ".join(value) if isinstance(value, tuple) else str(value)


def pytest_configure(config: pytest.Config) -> None:
    args = ", ".join(f"{f.name}={_show(f.default)}" for f in setting_fields())
    config.addinivalue_line(
        "markers",
        f"capacity({args}): adaptive capacity test; gets the mlload fixture (pytest-mlload)",
    )
    config.pluginmanager.register(MlloadState(config), PLUGIN_NAME)


def _state(config: pytest.Config) -> MlloadState:
    state = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(state, MlloadState)
    return state


def _option(config: pytest.Config, name: str) -> Any:
    """Command line value, else ini value, else None."""
    value = config.getoption(f"mlload_{name}", default=None)
    if value is None:
        value = config.getini(f"mlload_{name}")
    return value if value not in (None, "") else None


class MlloadState:
    """Per-session plugin state: settings layers, records, pending baseline updates."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[TestRecord] = []
        self.pending: dict[str, BaselineEntry] = {}
        self.interrupted = False
        cli = {f.name: config.getoption(f"mlload_{f.name}", default=None) for f in setting_fields()}
        ini = {f.name: config.getini(f"mlload_{f.name}") for f in setting_fields()}
        try:
            self.cli, self.ini = cli, ini
            resolve_settings({}, cli, ini)  # fail fast on a bad option or ini value
            history = _option(config, "history")
            self.history = int(history) if history is not None else 5
            if self.history < 1:
                raise ValueError
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        except ValueError:
            raise pytest.UsageError(
                f"--mlload-history={history!r} is invalid: expected an integer >= 1"
            ) from None
        update = config.getoption("mlload_update_baseline", default=None)
        self.update = (
            bool(update) if update is not None else bool(config.getini("mlload_update_baseline"))
        )
        path = _option(config, "baseline")
        base = Path(path) if path else Path(config.rootpath) / DEFAULT_BASELINE
        self.baseline_path = (
            (Path(config.invocation_params.dir) / base).resolve()
            if not base.is_absolute()
            else base
        )
        self._store: BaselineStore | None = None
        report = _option(config, "report")
        self.report_path = (
            (Path(config.invocation_params.dir) / report).resolve() if report else None
        )

    @property
    def store(self) -> BaselineStore:
        """The baseline store (created on first use)."""
        if self._store is None:
            from .baseline import BaselineStore

            self._store = BaselineStore(self.baseline_path, history=self.history)
        return self._store

    def settings_for(
        self, item: pytest.Item, overrides: dict[str, Any] | None = None
    ) -> RunSettings:
        marker = item.get_closest_marker("capacity")
        kwargs = dict(marker.kwargs) if marker else {}
        kwargs.update(overrides or {})
        return resolve_settings(kwargs, self.cli, self.ini, where=f"{item.nodeid}: capacity marker")

    # -- hooks ---------------------------------------------------------------------------
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker("capacity")
            if marker is None:
                continue
            if marker.args:
                raise pytest.UsageError(
                    f"{item.nodeid}: the capacity marker takes keyword arguments only, got "
                    f"{marker.args!r}; write e.g. @pytest.mark.capacity(target_p99_ms=120)"
                )
            try:
                self.settings_for(item)
            except ConfigError as exc:
                raise pytest.UsageError(str(exc)) from None

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.pending and not self.interrupted and exitstatus != pytest.ExitCode.INTERRUPTED:
            self.store.update(self.pending)
        if self.report_path is not None:
            from .report import json_report, write_json

            meta = {"baseline": str(self.baseline_path), "update_baseline": self.update}
            write_json(self.report_path, json_report(self.records, meta=meta))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        from .report import summary_rows, text_table

        tr = terminalreporter
        tr.section("mlload capacity summary")
        for line in text_table(summary_rows(self.records)):
            tr.write_line(line)
        if self.pending:
            verb = "not written (interrupted)" if self.interrupted else "recorded in"
            tr.write_line(
                f"baselines {verb} {self.baseline_path}: {', '.join(sorted(self.pending))}"
            )
        if self.report_path is not None:
            tr.write_line(f"JSON report: {self.report_path}")


@contextlib.contextmanager
def _exclusive_load() -> Iterator[None]:
    """One capacity run at a time per machine user: parallel load tests measure each other
    (pytest-xdist workers queue here instead of competing for the CPU)."""
    path = Path(tempfile.gettempdir()) / f"pytest-mlload-{os.getuid()}.lock"
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class MlloadFixture:
    """The ``mlload`` fixture: run capacity searches and gate them against the baseline."""

    def __init__(self, request: pytest.FixtureRequest, host: str | None) -> None:
        from .baseline import baseline_key
        from .report import TestRecord

        self._request = request
        self._item = request.node
        self._state = _state(request.config)
        self.host = host
        nodeid = self._item.nodeid
        name = nodeid.split("::", 1)[1] if "::" in nodeid else self._item.name
        self.key = baseline_key(Path(self._item.path), name, self._state.baseline_path)
        self.record = TestRecord(nodeid=nodeid, key=self.key)
        self._state.records.append(self.record)
        rel = os.path.relpath(self._item.path, self._request.config.invocation_params.dir)
        self.record_command = f"pytest --mlload-update-baseline '{rel}::{name}'"

    @property
    def settings(self) -> RunSettings:
        """This test's settings (marker > command line > ini > default)."""
        return self._state.settings_for(self._item)

    @property
    def baseline(self) -> BaselineEntry | None:
        """This test's baseline entry, or None."""
        return self._state.store.get(self.key)

    def run(self, target: Any, **overrides: Any) -> CapacityResult:
        """Run the adaptive capacity search of ``target`` against the host.

        ``overrides`` are marker arguments for this run only.
        """
        if not self.host:
            pytest.skip(
                "no --mlload-host given (or mlload_host ini / fixture): capacity test skipped"
            )
        try:
            settings = self._state.settings_for(self._item, overrides)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        entry = None if self._state.update else self.baseline
        probe = (
            entry.users if entry is not None and entry.settings == settings.comparable() else None
        )
        progress = _Progress(self._request.config)
        from .engine import run_capacity

        with _exclusive_load():
            try:
                result = run_capacity(
                    target,
                    host=self.host,
                    settings=settings,
                    name=self.key,
                    probe_users=probe,
                    on_event=progress,
                )
            finally:
                progress.close()
        self.record.results.append(result)
        props = self._item.user_properties
        props += [
            ("mlload_capacity_rps", round(result.capacity_rps, 3)),
            ("mlload_p99_ms", None if result.p99_ms is None else round(result.p99_ms, 3)),
            ("mlload_users", result.users),
            ("mlload_error_ratio", result.error_ratio),
            ("mlload_status", result.status),
        ]
        return result

    def assert_no_regression(self, result: CapacityResult) -> None:
        """Fail this test when ``result`` regressed past the threshold (or cannot be judged).

        With ``--mlload-update-baseline`` the result is recorded instead (when conclusive).
        """
        from . import gates
        from .baseline import BaselineEntry, BaselineRun, environment_fingerprint

        settings = self._state.settings_for(self._item)
        try:
            if self._state.update:
                if not result.converged:
                    raise Inconclusive(
                        f"{self.key}: not recorded, the run is inconclusive: {result.reason}",
                        reason=result.reason,
                    )
                old = self._state.store.get(self.key)
                fp = environment_fingerprint()
                new = (
                    old.with_run(BaselineRun.from_result(result), settings, fp, self._state.history)
                    if old
                    else BaselineEntry.from_result(self.key, result, settings, fp)
                )
                self._state.pending[self.key] = new
                self.record.outcome = "recorded"
                return
            verdicts = gates.evaluate(
                result,
                self.baseline,
                settings,
                key=self.key,
                baseline_path=str(self._state.baseline_path),
                record_command=self.record_command,
                fingerprint=environment_fingerprint(),
            )
            self.record.verdicts = verdicts
            gates.check_no_regression(verdicts)
            kinds = {v.verdict for v in verdicts}
            self.record.outcome = "improvement" if "improvement" in kinds else "pass"
        except GateFailure as exc:
            self.record.outcome = exc.verdict
            self.record.message = str(exc)
            raise
        except MlloadError as exc:
            self.record.outcome = "error"
            self.record.message = str(exc)
            raise


class _Progress:
    """One updating terminal line per run: phase, users, req/s, P99 vs target."""

    def __init__(self, config: pytest.Config) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")
        self.on = bool(self.tr) and config.get_verbosity() >= 0 and sys.stdout.isatty()
        self.width = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.on or event.get("event") != "window":
            return
        p99 = event.get("p99_ms")
        text = (
            f"[mlload] {event['phase']:<7} users={event['users']:<4} "
            f"{event['rps']:8.1f} req/s  P99 {'-' if p99 is None else f'{p99:.1f}'}"
            f"/{event['target_p99_ms']:g} ms  t={event['elapsed_s']:.0f}s"
        )
        self.tr.write("\r" + text.ljust(self.width))
        self.width = len(text)

    def close(self) -> None:
        if self.on and self.width:
            self.tr.write("\r" + " " * self.width + "\r")


@pytest.fixture(scope="session")
def mlload_host(pytestconfig: pytest.Config) -> str | None:
    """The service URL: ``--mlload-host`` / ini ``mlload_host``. Override it in a conftest
    to start a server of your own (the example suite starts the demo server)."""
    return _option(pytestconfig, "host")


@pytest.fixture
def mlload(request: pytest.FixtureRequest, mlload_host: str | None) -> MlloadFixture:
    """Run capacity searches for this test and gate them (see :class:`MlloadFixture`)."""
    return MlloadFixture(request, mlload_host)


__all__ = ["MlloadFixture", "mlload", "mlload_host"]
