"""pytest layer: options, the ``capacity`` marker, the ``mlload`` fixture, reports.

Translation only: settings come from :func:`pytest_mlload.config.resolve_settings`, a test's
run, verdicts and recording from :class:`pytest_mlload.flow.CapacityTest` (which calls the
judge, :func:`pytest_mlload.judge`), reports from :mod:`pytest_mlload.report`. Under
pytest-xdist each worker sends its records to the controller (``workeroutput``), which
writes the one summary table, JSON report and Markdown summary.

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

from pathlib import Path  # noqa: E402
from typing import (
    TYPE_CHECKING,  # noqa: E402
    Any,  # noqa: E402
)

import pytest  # noqa: E402

from pytest_mlload.config import (  # noqa: E402
    DEFAULT_HISTORY,
    RunSettings,
    resolve_settings,
    setting_fields,
)
from pytest_mlload.errors import ConfigError, MlloadWarning  # noqa: E402
from pytest_mlload.plugin.fixture import MlloadFixture  # noqa: E402
from pytest_mlload.results import CapacityResult  # noqa: E402

if TYPE_CHECKING:
    from pytest_mlload.baseline import BaselineEntry, BaselineStore
    from pytest_mlload.hpa.recommend import HpaSettings
    from pytest_mlload.report.tables import TestRecord

# numpy, scipy and yaml load only once a capacity test runs (imports inside functions), so
# installing the plugin does not slow down every pytest session.

PLUGIN_NAME = "mlload-state"
READINESS_HEAD = "smallest threshold each recorded baseline can decide (99 % half-width)"
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
    ("history", f"recorded runs kept per test in the baseline (default {DEFAULT_HISTORY})", "N"),
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
    from pytest_mlload.notion.hooks import add_options as add_notion_options

    add_notion_options(group)


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
        self.pending: dict[str, tuple[CapacityResult, RunSettings]] = {}
        self.interrupted = False
        self.is_worker = hasattr(config, "workerinput")  # a pytest-xdist worker
        self._resolved: dict[tuple[str, str], tuple[RunSettings, HpaSettings]] = {}
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
            self.history = int(history) if history is not None else DEFAULT_HISTORY
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
        self.recorded_elsewhere: set[str] = set()  # keys xdist workers recorded
        # per recorded key: what its kept runs can decide (HistoryReadiness dicts)
        self.readiness: dict[str, list[dict[str, Any]]] = {}
        self.load_notes: dict[str, list[str]] = {}  # BaselineEntry.load_notes of recorded keys

        def out(name: str, default: Path | None = None) -> Path | None:
            value = _option(config, name)
            return (here / value).resolve() if value else default

        self.report_path = out("report")
        self.markdown_path = out("markdown")
        self.plots_dir = out("plots")
        if self.plots_dir is not None:
            _require_matplotlib()
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
        settings: RunSettings = resolve_settings(
            marker,
            self.cli,
            self.ini,
            where=where,
            also_known=hpa,
            layers=[(self.file_layer, "--mlload-config file")],
        )
        return settings

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

    def marker_kwargs(self, item: pytest.Item) -> dict[str, Any]:
        marker = item.get_closest_marker("capacity")
        return dict(marker.kwargs) if marker else {}

    def settings_for(
        self, item: pytest.Item, overrides: dict[str, Any] | None = None, *, where: str = ""
    ) -> tuple[RunSettings, HpaSettings]:
        """Run and HPA settings of ``item`` (with ``run()`` overrides), resolved once."""
        kwargs = {**self.marker_kwargs(item), **(overrides or {})}
        cache_key = (item.nodeid, repr(sorted(kwargs.items(), key=lambda kv: kv[0])))
        if cache_key not in self._resolved:
            where = where or f"{item.nodeid}: capacity marker"
            self._resolved[cache_key] = (
                self.resolve(kwargs, where=where),
                self.hpa(kwargs, where=where),
            )
        return self._resolved[cache_key]

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
            # merged into each entry as it is on disk now, under the lock: a concurrent
            # session (or xdist worker) recording the same key loses no run
            entries = self.store.record_many([(k, r, s) for k, (r, s) in self.pending.items()])
            self._note_readiness(entries)
        if self.is_worker:
            out = self.config.workeroutput  # type: ignore[attr-defined]
            out["mlload_records"] = [r.to_dict() for r in self.records]
            out["mlload_pending"] = sorted(self.pending)
            out["mlload_readiness"] = self.readiness
            out["mlload_load_notes"] = self.load_notes
            return
        if not self.records:
            return
        from pytest_mlload.report.tables import json_report, markdown_table, write_json

        self.records.sort(key=lambda r: r.nodeid)
        meta: dict[str, Any] = {"baseline": str(self.baseline_path), "update_baseline": self.update}
        if self.readiness:
            meta["baseline_readiness"] = dict(sorted(self.readiness.items()))
        if self.load_notes:
            meta["baseline_load_notes"] = dict(sorted(self.load_notes.items()))
        report = json_report(self.records, meta=meta)
        if self.report_path is not None:
            write_json(self.report_path, report)
        table = markdown_table(self.records)
        if self.readiness:
            listed = "".join(f"- {line}\n" for line in self._readiness_lines())
            table += f"\n{READINESS_HEAD}:\n\n{listed}"
        if self.markdown_path is not None:
            self.markdown_path.parent.mkdir(parents=True, exist_ok=True)
            self.markdown_path.write_text("## pytest-mlload capacity summary\n\n" + table)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a") as fh:
                fh.write("## pytest-mlload capacity summary\n\n" + table + "\n")
        if self.plots_dir is not None:
            self._plot()
        from pytest_mlload.notion.hooks import sync_session

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        sync_session(
            report,
            target=self.config.getoption("mlload_notion"),
            init=self.config.getoption("mlload_notion_init"),
            rootdir=Path(self.config.rootpath),
            warn=tr.write_line if tr else None,
        )

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: collect a finished worker's records and recorded keys."""
        from pytest_mlload.report.tables import TestRecord

        out = getattr(node, "workeroutput", {}) or {}
        self.records += [TestRecord.from_dict(d) for d in out.get("mlload_records", [])]
        self.recorded_elsewhere.update(out.get("mlload_pending", []))
        self.readiness.update(out.get("mlload_readiness", {}))
        self.load_notes.update(out.get("mlload_load_notes", {}))

    def _note_readiness(self, entries: dict[str, BaselineEntry]) -> None:
        """What each just-recorded entry can decide, kept for the summary and the report."""
        from pytest_mlload.gates.metrics import history_readiness

        for key, entry in entries.items():
            settings = self.pending[key][1]
            self.readiness[key] = [i.to_dict() for i in history_readiness(entry, settings)]
            if notes := entry.load_notes():
                self.load_notes[key] = notes

    def _readiness_lines(self) -> list[str]:
        from pytest_mlload.gates.metrics import HistoryReadiness, readiness_line

        return [
            readiness_line(
                key,
                [HistoryReadiness.from_dict(d) for d in dicts],
                self.history,
                notes=self.load_notes.get(key, ()),
            )
            for key, dicts in sorted(self.readiness.items())
        ]

    def _plot(self) -> None:
        from pytest_mlload.report.plots import plot_path_for, plot_result
        from pytest_mlload.results import part_key, part_name

        assert self.plots_dir is not None
        entries = self.store.load() if not self.update else {}
        for rec in self.records:
            for r in rec.results:
                part = part_name(rec.key, r.name)
                key = part_key(rec.key, part)
                entry = entries.get(key)
                plot_result(
                    r,
                    plot_path_for(self.plots_dir, key),
                    baseline_capacity_rps=entry.capacity_rps if entry else None,
                    verdict=rec.part_outcome(part),
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
        recorded = sorted({*self.pending, *self.recorded_elsewhere})
        if recorded:
            verb = "not written (interrupted)" if self.interrupted else "recorded in"
            tr.write_line(f"baselines {verb} {self.baseline_path}: {', '.join(recorded)}")
        if self.readiness:
            tr.write_line(READINESS_HEAD + ":")
            for line in self._readiness_lines():
                tr.write_line("  " + line)
        for path, what in (
            (self.report_path, "JSON report"),
            (self.markdown_path, "Markdown"),
            (self.plots_dir, "plots"),
        ):
            if path is not None:
                tr.write_line(f"{what}: {path}")


def _require_matplotlib() -> None:
    """--mlload-plots without matplotlib: a usage error now, not after minutes of load."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise pytest.UsageError(
            "--mlload-plots needs matplotlib, which is not installed: "
            "pip install 'pytest-mlload[plots]' (or drop --mlload-plots)"
        ) from None


@pytest.fixture(scope="session")
def mlload_host(pytestconfig: pytest.Config) -> str | None:
    """The service URL: ``--mlload-host`` / ini ``mlload_host``. Override it in a conftest
    to start a server of your own (the example suite starts the demo server)."""
    host = _option(pytestconfig, "host")
    return None if host is None else str(host)


@pytest.fixture
def mlload(request: pytest.FixtureRequest, mlload_host: str | None) -> MlloadFixture:
    """Run capacity searches for this test and gate them (see :class:`MlloadFixture`)."""
    return MlloadFixture(request, mlload_host, _state(request.config))


__all__ = ["MlloadFixture", "mlload", "mlload_host"]
