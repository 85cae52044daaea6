"""pytest layer: options, the ``capacity`` marker, the ``mlload`` fixture, reports.

Translation only: settings come from :func:`pytest_mlload.config.resolve_settings`, runs
from :func:`pytest_mlload.engine.run_capacity`, verdicts from :mod:`pytest_mlload.judge.gates`,
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

import sys  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import (
    TYPE_CHECKING,  # noqa: E402
    Any,  # noqa: E402
)

import pytest  # noqa: E402

from pytest_mlload.config import RunSettings, resolve_settings, setting_fields  # noqa: E402
from pytest_mlload.errors import ConfigError, GateFailure, Inconclusive, MlloadError, MlloadWarning  # noqa: E402
from pytest_mlload.results import CapacityResult  # noqa: E402

if TYPE_CHECKING:
    from pytest_mlload.baseline import BaselineEntry, BaselineStore
    from pytest_mlload.hpa.recommend import HpaReport
    from pytest_mlload.report.tables import TestRecord

# numpy, scipy and yaml load only once a capacity test runs (imports inside functions), so
# installing the plugin does not slow down every pytest session.

PLUGIN_NAME = "mlload-state"
DEFAULT_BASELINE = "mlload-baseline.yaml"

# Session-wide options (not marker arguments): name, help, metavar.
_PLAIN = [
    ("host", "URL of the service under test, e.g. http://127.0.0.1:8000", "URL"),
    ("baseline", f"baseline YAML file (default: <rootdir>/{DEFAULT_BASELINE})", "PATH"),
    ("report", "write a JSON report of every result and verdict to PATH", "PATH"),
    (
        "markdown",
        "write the summary table as Markdown to PATH (also to $GITHUB_STEP_SUMMARY)",
        "PATH",
    ),
    ("plots", "write a PNG per capacity test (users, req/s, P99 over time) into DIR", "DIR"),
    (
        "keda_dir",
        "write KEDA trigger YAML per test into DIR (default <rootdir>/.mlload/keda)",
        "DIR",
    ),
    ("history", "recorded runs kept per test in the baseline (default 5)", "N"),
    ("config", "an ml-loadtest / Locust locust.conf to take settings from", "PATH"),
]
_FLAGS = [
    (
        "update_baseline",
        "record the results of the tests that run as new baselines instead of comparing",
    ),
    ("hpa_gate", "apply the HPA drift gate (assert_hpa_stable) to every capacity test"),
]


def _hpa_fields() -> list[Any]:
    from pytest_mlload.hpa.recommend import HpaSettings

    return setting_fields(HpaSettings)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlload", "pytest-mlload capacity gates")
    for name, help_text, metavar in _PLAIN:
        group.addoption(
            f"--mlload-{name.replace('_', '-')}",
            dest=f"mlload_{name}",
            default=None,
            metavar=metavar,
            help=f"{help_text} [ini: mlload_{name}]".replace("%", "%%"),
        )
        parser.addini(f"mlload_{name}", help_text, default=None)
    for name, help_text in _FLAGS:
        group.addoption(
            f"--mlload-{name.replace('_', '-')}",
            dest=f"mlload_{name}",
            action="store_true",
            default=None,
            help=f"{help_text} [ini: mlload_{name}]".replace("%", "%%"),
        )
        parser.addini(f"mlload_{name}", help_text, type="bool", default=False)
    for f in [*setting_fields(), *_hpa_fields()]:
        # A flag setting (check) takes no value on the command line: `--mlload-check VALUE`
        # would swallow the next argument (a test path) as its value.
        value_kw: dict[str, Any] = (
            {"action": "store_const", "const": True}
            if f.metadata.get("flag")
            else {"metavar": "VALUE"}
        )
        group.addoption(
            f"--mlload-{f.name.replace('_', '-')}",
            dest=f"mlload_{f.name}",
            default=None,
            help=f"{f.metadata['help']} (default {_show(f.default)}; marker argument "
            f"{f.name}) [ini: mlload_{f.name}]".replace("%", "%%"),
            **value_kw,
        )
        parser.addini(f"mlload_{f.name}", f.metadata["help"], default=None)


def _show(value: Any) -> str:
    return " ".join(value) if isinstance(value, tuple) else str(value)


def pytest_configure(config: pytest.Config) -> None:
    args = ", ".join(f"{f.name}={_show(f.default)}" for f in setting_fields())
    config.addinivalue_line(
        "markers",
        f"capacity({args}, and the HPA settings listed under --mlload-* in --help): adaptive "
        f"capacity test; gets the mlload fixture (pytest-mlload)",
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


def _flag(config: pytest.Config, name: str) -> bool:
    value = config.getoption(f"mlload_{name}", default=None)
    return bool(value) if value is not None else bool(config.getini(f"mlload_{name}"))


class MlloadState:
    """Per-session plugin state: settings layers, records, pending baseline updates."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: list[TestRecord] = []
        self.pending: dict[str, BaselineEntry] = {}
        self.interrupted = False
        here = Path(config.invocation_params.dir)
        names = [f.name for f in [*setting_fields(), *_hpa_fields()]]
        self.cli = {n: config.getoption(f"mlload_{n}", default=None) for n in names}
        self.ini = {n: config.getini(f"mlload_{n}") for n in names}
        self.file_layer: dict[str, Any] = {}
        self.file_host: str | None = None
        conf_path = _option(config, "config")
        try:
            if conf_path:
                from pytest_mlload.locustconf import load_locust_conf

                conf = load_locust_conf(here / conf_path)
                self.file_layer, self.file_host = dict(conf.settings), conf.host
                if conf.warning():
                    config.issue_config_time_warning(MlloadWarning(conf.warning()), stacklevel=2)
            self.resolve({}, where="options")  # fail fast on a bad option or ini value
            self.hpa({}, where="options")
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
        self.update = _flag(config, "update_baseline")
        self.hpa_gate = _flag(config, "hpa_gate")
        path = _option(config, "baseline")
        base = Path(path) if path else Path(config.rootpath) / DEFAULT_BASELINE
        self.baseline_path = (here / base).resolve()
        self._store: BaselineStore | None = None

        def out(name: str, default: Path | None = None) -> Path | None:
            value = _option(config, name)
            return (here / value).resolve() if value else default

        self.report_path = out("report")
        self.markdown_path = out("markdown")
        self.plots_dir = out("plots")
        self.keda_dir = out("keda_dir", Path(config.rootpath) / ".mlload" / "keda")

    @property
    def store(self) -> BaselineStore:
        """The baseline store (created on first use)."""
        if self._store is None:
            from pytest_mlload.baseline import BaselineStore

            self._store = BaselineStore(self.baseline_path, history=self.history)
        return self._store

    def resolve(self, marker: dict[str, Any], *, where: str) -> RunSettings:
        """Run settings: marker > command line > --mlload-config file > ini > default."""
        hpa = {f.name for f in _hpa_fields()}
        return resolve_settings(
            marker,
            self.cli,
            self.ini,
            where=where,
            also_known=hpa,
            layers=[(self.file_layer, "--mlload-config file")],
        )

    def hpa(self, marker: dict[str, Any], *, where: str) -> Any:
        """HPA settings, same precedence."""
        from pytest_mlload.hpa.recommend import HpaSettings

        return resolve_settings(
            marker,
            self.cli,
            self.ini,
            where=where,
            cls=HpaSettings,
            also_known={f.name for f in setting_fields()},
        )

    def marker_kwargs(
        self, item: pytest.Item, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        marker = item.get_closest_marker("capacity")
        kwargs = dict(marker.kwargs) if marker else {}
        kwargs.update(overrides or {})
        return kwargs

    def settings_for(
        self, item: pytest.Item, overrides: dict[str, Any] | None = None
    ) -> RunSettings:
        return self.resolve(
            self.marker_kwargs(item, overrides), where=f"{item.nodeid}: capacity marker"
        )

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
                self.hpa(self.marker_kwargs(item), where=f"{item.nodeid}: capacity marker")
            except ConfigError as exc:
                raise pytest.UsageError(str(exc)) from None

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.pending and not self.interrupted and exitstatus != pytest.ExitCode.INTERRUPTED:
            self.store.update(self.pending)
        if not self.records:
            return
        from pytest_mlload.report.tables import json_report, markdown_table, write_json

        if self.report_path is not None:
            meta = {"baseline": str(self.baseline_path), "update_baseline": self.update}
            write_json(self.report_path, json_report(self.records, meta=meta))
        table = markdown_table(self.records)
        if self.markdown_path is not None:
            self.markdown_path.parent.mkdir(parents=True, exist_ok=True)
            self.markdown_path.write_text("## pytest-mlload capacity summary\n\n" + table)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a") as fh:
                fh.write("## pytest-mlload capacity summary\n\n" + table + "\n")
        if self.plots_dir is not None:
            self._plot()

    def _plot(self) -> None:
        from pytest_mlload.report.plots import plot_path_for, plot_result

        assert self.plots_dir is not None
        for rec in self.records:
            for r in rec.results:
                key = rec.key if r.name in ("", rec.key) else f"{rec.key}[{r.name}]"
                entry = self.store.get(key) if not self.update else None
                outcome = next(
                    (
                        v.verdict
                        for v in rec.verdicts
                        if v.part in ("", r.name) and v.verdict != "pass"
                    ),
                    rec.outcome,
                )
                plot_result(
                    r,
                    plot_path_for(self.plots_dir, key),
                    baseline_capacity_rps=entry.capacity_rps if entry else None,
                    verdict=outcome,
                    title=key,
                )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.records:
            return
        from pytest_mlload.report.tables import summary_notes, summary_rows, text_table

        tr = terminalreporter
        tr.section("mlload capacity summary")
        for line in text_table(summary_rows(self.records)):
            tr.write_line(line)
        for note in summary_notes(self.records):
            tr.write_line(note)
        if self.pending:
            verb = "not written (interrupted)" if self.interrupted else "recorded in"
            tr.write_line(
                f"baselines {verb} {self.baseline_path}: {', '.join(sorted(self.pending))}"
            )
        for path, what in (
            (self.report_path, "JSON report"),
            (self.markdown_path, "Markdown"),
            (self.plots_dir, "plots"),
        ):
            if path is not None:
                tr.write_line(f"{what}: {path}")


class MlloadFixture:
    """The ``mlload`` fixture: run capacity searches and gate them against the baseline.

    ``run()`` returns a :class:`~pytest_mlload.results.CapacityResult` for one target in
    individual mode, else a :class:`~pytest_mlload.modes.ModeResults` with one result per
    part (``individual <endpoint>``, ``production``, ``exploration ...``, ``spike``). Each
    part has its own baseline entry, keyed ``<test key>[<part>]``.
    """

    def __init__(self, request: pytest.FixtureRequest, host: str | None) -> None:
        from pytest_mlload.baseline import baseline_key
        from pytest_mlload.report.tables import TestRecord

        self._request = request
        self._item = request.node
        self._state = _state(request.config)
        self.host = host or self._state.file_host
        nodeid = self._item.nodeid
        name = nodeid.split("::", 1)[1] if "::" in nodeid else self._item.name
        self.key = baseline_key(Path(self._item.path), name, self._state.baseline_path)
        self.record = TestRecord(nodeid=nodeid, key=self.key)
        self._state.records.append(self.record)
        rel = os.path.relpath(self._item.path, self._request.config.invocation_params.dir)
        self.record_command = f"pytest --mlload-update-baseline '{rel}::{name}'"
        self._overrides: dict[str, Any] = {}

    @property
    def settings(self) -> RunSettings:
        """This test's settings (marker > command line > config file > ini > default)."""
        return self._state.settings_for(self._item, self._overrides)

    @property
    def baseline(self) -> BaselineEntry | None:
        """This test's baseline entry (single-target runs), or None."""
        return self._state.store.get(self.key)

    def _part_key(self, part: str) -> str:
        return self.key if part == "" else f"{self.key}[{part}]"

    def run(self, target: Any = None, *, mixes: list[Any] | None = None, **overrides: Any) -> Any:
        """Run the capacity search(es) of ``target`` against the host, in the test's modes.

        ``target``: a seed TaskSet, a Locust User, or weights (mapping / module / dotted
        name; default ``weights_module``). ``mixes``: extra mixes for exploration.
        ``overrides`` are marker arguments for this run only (e.g. ``mode="production"``).
        """
        from pytest_mlload.load.modes import Part, run_modes
        from pytest_mlload.targets import is_locust_user, is_seed_taskset

        if not self.host:
            pytest.skip(
                "no --mlload-host given (or mlload_host ini / fixture): capacity test skipped"
            )
        try:
            self._overrides = dict(overrides)
            settings = self.settings
            hpa = self._state.hpa(
                self._state.marker_kwargs(self._item, overrides),
                where=f"{self._item.nodeid}: run()",
            )
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        single = (is_seed_taskset(target) or is_locust_user(target)) and settings.mode == (
            "individual",
        )
        if single:
            return self._run_part(Part("", "individual", target), settings, hpa)
        return run_modes(target, settings, lambda p: self._run_part(p, settings, hpa), mixes=mixes)

    def _run_part(self, part: Any, settings: RunSettings, hpa: Any) -> CapacityResult:
        from pytest_mlload.load.engine import run_capacity

        assert self.host is not None  # run() skipped the test otherwise
        from pytest_mlload.judge.gates import open_loop_of

        key = self._part_key(part.name)
        stored = self._state.store.get(key)
        # A comparable entry gives the common user count: P99 is probed there, when gating
        # and when recording (so every recorded run has P99 at one user count).
        entry = stored if stored and stored.settings == settings.comparable() else None
        search = part.kind == "search"
        probe = entry.users if entry is not None and search else None
        hold = probe if settings.check and not self._state.update else None
        ol = None
        if entry is not None and not self._state.update:
            base_ol = open_loop_of(entry.latest.extra)
            ol = base_ol["rate_rps"] if base_ol else None
        note = ""
        if settings.check and search and hold is None:
            why = (
                "--mlload-update-baseline"
                if self._state.update
                else "no baseline"
                if stored is None
                else "baseline measured with other settings"
            )
            note = f"check mode: {why}: full search"
            self._item.warn(MlloadWarning(f"{key}: {note}"))
        label = part.name or self.key
        progress = _Progress(self._request.config, f"{label} ({note})" if note else label)
        try:
            result = run_capacity(
                part.target,
                host=self.host,
                settings=settings,
                name=part.name or self.key,
                probe_users=probe,
                hold_users=hold,
                open_loop_rps=ol,
                kind=part.kind,
                on_event=progress,
            )
        finally:
            progress.close()
        extra = dict(result.extra)
        if result.converged and search:
            extra["rate_limit_rps"] = round(result.capacity_rps * settings.safety_factor, 2)
        if hpa.prometheus_url and search:
            extra["hpa"] = self._hpa_report(result, hpa, key)
        result = replace(result, extra=extra)
        self._warn_bound(result, key)
        self._remember(result, part.name)
        return result

    def _warn_bound(self, result: CapacityResult, key: str) -> None:
        """Warn when the capacity is only the max_users bound (P99 still under the target)."""
        if getattr(result, "bound", "") != "max_users":
            return
        p99 = "-" if result.p99_ms is None else f"{result.p99_ms:.1f}"
        self._item.warn(
            MlloadWarning(
                f"{key}: the search stopped at max_users={result.users} with P99 {p99} ms, "
                f"still under the {result.target_p99_ms:g} ms target: {result.capacity_rps:.1f} "
                f"req/s is a lower bound of the capacity, not the capacity; raise max_users "
                f"to find it"
            )
        )

    def _remember(self, result: CapacityResult, part: str) -> None:
        """Keep a result for the reports and put its figures in the JUnit XML properties."""
        self.record.results.append(result)
        suffix = f"[{part}]" if part else ""
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

    def _hpa_report(self, result: CapacityResult, hpa: Any, key: str) -> dict[str, Any]:
        from pytest_mlload.hpa.prometheus import PrometheusClient
        from pytest_mlload.hpa.recommend import recommend
        from pytest_mlload.report.plots import plot_path_for

        report = recommend(
            PrometheusClient(hpa.prometheus_url),
            hpa,
            result.window_start_epoch,
            result.window_end_epoch,
        )
        for warning in report.warnings:
            self._item.warn(MlloadWarning(f"{key}: HPA {warning}"))
        if report.recommended and self._state.keda_dir is not None:
            path = plot_path_for(self._state.keda_dir, key).with_suffix(".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.keda_yaml(hpa.prometheus_url))
        return report.to_dict()

    # -- gates ---------------------------------------------------------------------------
    def _parts(self, result: Any) -> list[tuple[str, CapacityResult]]:
        from pytest_mlload.load.modes import ModeResults

        if isinstance(result, ModeResults):
            return list(result.parts.items())
        return [("" if result.name in ("", self.key) else result.name, result)]

    def _judge(self, fn: Any) -> None:
        """Run a gate function, keeping the record's outcome and message in step."""
        try:
            fn()
        except GateFailure as exc:
            self.record.outcome = exc.verdict
            self.record.message = str(exc)
            raise
        except MlloadError as exc:
            self.record.outcome = "error"
            self.record.message = str(exc)
            raise

    def assert_no_regression(self, result: Any) -> None:
        """Fail this test when any part regressed past the threshold (or cannot be judged).

        With ``--mlload-update-baseline`` each conclusive part is recorded instead; an
        inconclusive part fails and nothing of this test is recorded.
        """
        try:
            self._judge(lambda: self._assert_no_regression(result))
        finally:
            self._item.user_properties.append(("mlload_verdict", self.record.outcome))

    def _assert_no_regression(self, result: Any) -> None:
        from pytest_mlload.baseline import environment_fingerprint
        from pytest_mlload.judge import gates

        settings = self.settings
        parts = self._parts(result)
        for part, r in parts:  # a result made outside run() (e.g. run_capacity) counts too
            if not any(r is known for known in self.record.results):
                self._remember(r, part)
        if self._state.update:
            self._record(parts, settings)
            return
        fp = environment_fingerprint()
        verdicts: list[gates.Verdict] = []
        failures: list[str] = []
        kinds: list[str] = []
        for part, r in parts:
            key = self._part_key(part)
            judge = gates.evaluate_spike if part == "spike" else gates.evaluate
            try:
                vs = judge(
                    r,
                    self._state.store.get(key),
                    settings,
                    key=key,
                    baseline_path=str(self._state.baseline_path),
                    record_command=self.record_command,
                    fingerprint=fp,
                    part=part,
                )
            except GateFailure as exc:
                failures.append(str(exc))
                kinds.append(exc.verdict)
                continue
            verdicts += vs
            try:
                gates.check_no_regression(vs)
            except GateFailure as exc:
                failures.append(str(exc))
                kinds.append(exc.verdict)
        self.record.verdicts = verdicts
        if self._state.hpa_gate:
            try:
                self._assert_hpa_stable(result)
            except GateFailure as exc:
                failures.append(str(exc))
                kinds.append(exc.verdict)
        if failures:
            raise _combined(kinds, failures)
        self.record.outcome = (
            "improvement" if any(v.verdict == "improvement" for v in verdicts) else "pass"
        )

    def _record(self, parts: list[tuple[str, CapacityResult]], settings: RunSettings) -> None:
        from pytest_mlload.baseline import (
            BaselineEntry,
            BaselineRun,
            baseline_extra,
            environment_fingerprint,
        )

        bad = [f"{self._part_key(p)}: {r.reason}" for p, r in parts if not r.converged]
        if bad:
            raise Inconclusive("not recorded, inconclusive: " + "; ".join(bad), reason="record")
        fp = environment_fingerprint()
        for part, r in parts:
            key = self._part_key(part)
            extra = baseline_extra(r)
            old = self._state.store.get(key)
            run = BaselineRun.from_result(r, extra=extra)
            self._state.pending[key] = (
                old.with_run(run, settings, fp, self._state.history)
                if old
                else BaselineEntry.from_result(key, r, settings, fp, extra=extra)
            )
        self.record.outcome = "recorded"

    def assert_rate_limits_stable(self, result: Any) -> None:
        """Fail when a recommended rate limit moved past the threshold since the baseline."""
        from pytest_mlload.judge import gates

        def check() -> None:
            if self._state.update:
                return  # recording: assert_no_regression stores the rate limits
            parts = {p: r for p, r in self._parts(result) if "rate_limit_rps" in r.extra}
            current = {self._part_key(p): r for p, r in parts.items()}
            entries = {k: self._state.store.get(k) for k in current}
            vs = gates.rate_limit_verdicts(current, entries, self.settings)
            part_of = {self._part_key(p): p for p in parts}
            vs = [replace(v, part=part_of[v.part]) for v in vs]  # report rows are by part
            self.record.verdicts += vs
            gates.check_no_regression(vs)

        self._judge(check)

    def assert_hpa_stable(self, result: Any) -> None:
        """Fail when a recommended HPA/KEDA threshold drifted from the baseline (see hpa.py)."""
        if not self._state.update:  # recording: assert_no_regression stores the HPA report
            self._judge(lambda: self._assert_hpa_stable(result))

    def _assert_hpa_stable(self, result: Any) -> None:
        from pytest_mlload.hpa.recommend import assert_hpa_stable
        from pytest_mlload.judge.gates import Verdict

        hpa = self._state.hpa(
            self._state.marker_kwargs(self._item, self._overrides), where=self._item.nodeid
        )
        for part, r in self._parts(result):
            if part == "spike":
                continue
            key = self._part_key(part)
            failure: GateFailure | None = None
            try:
                current = _hpa_current(key, r)
                assert_hpa_stable(self._hpa_reference(key), current, hpa.drift_threshold)
            except GateFailure as exc:
                failure = exc
            self.record.verdicts.append(
                Verdict(
                    metric="hpa",
                    verdict=failure.verdict if failure else "pass",
                    baseline=getattr(failure, "baseline", None),
                    observed=getattr(failure, "observed", None),
                    change=getattr(failure, "change_ratio", None),
                    low=None,
                    high=None,
                    threshold=hpa.drift_threshold,
                    unit="",
                    message=str(failure)
                    if failure
                    else f"{key}: HPA thresholds within {hpa.drift_threshold:.0%}",
                    part=part,
                )
            )
            if failure is not None:
                raise failure

    def _hpa_reference(self, key: str) -> dict[str, Any] | None:
        """The newest recorded run's HPA report that has recommendations (a run recorded while
        Prometheus was away keeps none, and must not erase the reference)."""
        entry = self._state.store.get(key)
        runs = reversed(entry.runs) if entry else ()
        return next((run.extra["hpa"] for run in runs if run.extra.get("hpa")), None)


def _hpa_current(key: str, r: CapacityResult) -> HpaReport:
    """This run's HPA report; :class:`Inconclusive` when it has nothing to compare."""
    from pytest_mlload.hpa.recommend import HpaReport

    if "hpa" not in r.extra:
        raise Inconclusive(
            f"{key}: HPA gate skipped: no HPA report (give --mlload-prometheus-url)",
            reason="no prometheus",
        )
    current = HpaReport.from_dict(r.extra["hpa"])
    if not current.recommended:
        raise Inconclusive(
            f"{key}: HPA gate skipped: this run has no recommendation ("
            + ("; ".join(current.warnings) or "no saturated tier")
            + ")",
            reason="no hpa data",
        )
    return current


def _combined(kinds: list[str], messages: list[str]) -> GateFailure:
    """One failure for several parts: a regression if any part regressed."""
    from pytest_mlload.errors import MissingBaseline, PerformanceRegression, SettingsMismatch

    text = "\n".join(messages)
    if "regression" in kinds:
        return PerformanceRegression(text)
    if "inconclusive" in kinds:
        return Inconclusive(text, reason="see message")
    if "settings-mismatch" in kinds:
        return SettingsMismatch(text)
    return MissingBaseline(text) if "no-baseline" in kinds else GateFailure(text)


class _Progress:
    """One updating terminal line per run: phase, users, req/s, P99 vs target."""

    def __init__(self, config: pytest.Config, label: str) -> None:
        self.label = label
        self.tr = config.pluginmanager.get_plugin("terminalreporter")
        self.on = bool(self.tr) and config.get_verbosity() >= 0 and sys.stdout.isatty()
        self.width = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if not self.on or event.get("event") != "window":
            return
        p99 = event.get("p99_ms")
        text = (
            f"[mlload {self.label}] {event['phase']:<8} users={event['users']:<4} "
            f"{event['rps']:8.1f} req/s  P99 {'-' if p99 is None else f'{p99:.1f}'}"
            f"/{event['target_p99_ms']:g} ms  t={event['elapsed_s']:.0f}s"
        )
        assert self.tr is not None
        self.tr.write("\r" + text.ljust(self.width))
        self.width = len(text)

    def close(self) -> None:
        if self.on and self.width and self.tr is not None:
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
