"""Verdicts on a real inference server nobody here wrote: Seldon MLServer serving scikit-learn.

    python bench/bench_mlserver.py                 # 10 A/A + 3 slowed runs (~20 min)
    python bench/bench_mlserver.py --quick         # smoke: 2 A/A + 1 slowed run
    python bench/bench_mlserver.py --check         # later runs in check mode (hold_users)

Issue 9's target: 10 A/A runs on fresh server starts give no false regression; each is a pass
or an inconclusive that names the measured run-to-run spread and the smallest threshold this
setup can decide. A real slowdown fails as a regression. MLServer and the load generator share
the machine's cores, as they do on most CI runners.

Setup. MLServer and its scikit-learn runtime live in their own virtualenv outside the
repository (``--venv``, default ``.venv-mlserver`` beside the checkout), created and filled
from PyPI with the pinned ``PINS`` when missing or different. Two models are trained there on
the iris data that ships with scikit-learn: a LogisticRegression (``iris-logreg``: cheap, the
HTTP and codec path dominate) and a 30-tree RandomForest (``iris-forest``: CPU bound in the
inference workers). Each server start is ``mlserver start <dir>`` with ``settings.json`` on
127.0.0.1: HTTP and gRPC on free loopback ports, no metrics server, no access log,
``parallel_workers`` = ``--workers`` (2). It is stopped by its process group (SIGTERM, then
SIGKILL), also on Ctrl-C or SIGTERM.

Method. A first quick sweep (one server start, wrk at 1 connection per model) measures each
model's unloaded P99; its P99 target is ``TARGET_FACTOR`` x that (at least ``TARGET_FLOOR_MS``).
Then, every run on a fresh server start (stopped and restarted between runs):

1. ``--history`` (3) baseline runs recorded as ``--mlload-update-baseline`` records them;
2. ``--runs`` (10) A/A runs at the same worker count, each judged by
   :func:`pytest_mlload.gates.evaluate` (default 10 % threshold), P99 probed at the baseline's
   user count as the plugin does;
3. ``--slow-runs`` (3) slowed runs, spread evenly among the A/A runs, judged against the same
   baseline. ``--slow trees`` (default): the forest served with ``SLOW_TREES_FACTOR`` x its
   trees under the same name (a CPU-heavier model; the logistic regression in those rounds is
   an unchanged control). ``--slow workers``: ``parallel_workers`` = ``--slow-workers`` (1) for
   both models.

``--check``: steps 2 and 3 hold the baseline's user count (``hold_users`` and ``probe_users``
= ``entry.users``) instead of searching, if this version of ``run_capacity`` accepts
``hold_users``; otherwise a note says so and the full search is used.

An A/A run is a *false regression* when any verdict is ``regression``; a slowed run is
*caught* when any verdict is ``regression``. The exit status is non-zero only when something
broke (not for a missed target).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from _common import (
    BENCH_DIR,
    BenchError,
    cv,
    header,
    pct,
    say,
    skip_locust_patch,
    stop_on_sigterm,
    table,
)
from _common import wrk as run_wrk

skip_locust_patch()

from pytest_mlload import RunSettings  # noqa: E402
from pytest_mlload.baseline import BaselineEntry, BaselineRun  # noqa: E402
from pytest_mlload.errors import GateFailure, LoadError  # noqa: E402
from pytest_mlload.flow import confirm_check  # noqa: E402
from pytest_mlload.gates.metrics import (  # noqa: E402
    evaluate,
    history_readiness,
    readiness_line,
    regression_messages,
)
from pytest_mlload.results import CapacityResult  # noqa: E402

REPO = os.path.dirname(BENCH_DIR)
DEFAULT_VENV = os.path.join(os.path.dirname(REPO), ".venv-mlserver")
# MLServer 1.7.1 is the newest release and installs on Python 3.11. scikit-learn is pinned so
# the models train and load with one version; uvloop because 0.22+ raises "There is no current
# event loop" in MLServer 1.7.1's parallel inference workers (they call get_event_loop()).
PINS = {
    "mlserver": "1.7.1",
    "mlserver-sklearn": "1.7.1",
    "scikit-learn": "1.9.1",
    "uvloop": "0.21.0",
}
MODELS = ("iris-logreg", "iris-forest")
# A baseline run that does not converge is not recorded, and the bench runs that model again
# on a fresh start, as a team reruns --mlload-update-baseline, up to this many times in all
# (the forest's search once met a slow spell through 3 step-downs).
BASELINE_RERUNS = 3
# 100 trees cost ~33 ms per predict on this 2-core machine under load (at most ~60 req/s with
# 2 workers): a search window then needs 5+ s for its 300 samples and a run overruns its cap.
# 30 trees keep it CPU bound in the workers at a rate the search can measure in time.
FOREST_TREES = 30
# The target is TARGET_FACTOR x the lowest unloaded P99 of three short wrk runs (other jobs on
# the machine inflate a single one: seen 212 ms for ~8 ms of work). 8x, not 2-3x: under Locust
# on the shared cores the 1-user P99 is already 1.5-2x what wrk sees, so 4x (35 / 60 ms here)
# put the operating points at 1-4 users, where one user more is a 25-100 % step in load, and
# the 3x-tree forest missed the target at 1 user (an inconclusive search, not a regression).
TARGET_FACTOR = 8.0
SWEEP_RUNS = 3
# The default slowdown: the forest served with 2x its trees (same name, same requests). With 3x
# its P99 at 1 user (115.6 ms) already exceeded the 105 ms target: the search ended
# inconclusive at min_users instead of measuring a slower server.
# Fewer parallel workers (--slow workers) is no slowdown here: measured on 2 shared cores,
# parallel_workers 1 served the light model faster than 2 (fewer processes share the cores).
SLOW_TREES_FACTOR = 2
TARGET_FLOOR_MS = 10.0
MAX_DURATION_S = 60.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
FINGERPRINT = {"bench": "bench_mlserver"}  # one fixed fingerprint: no "other machine" note

# --------------------------------------------------------------------------- the venv

_VERSIONS = "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in %r}))"


def venv_python(venv: str) -> str:
    return os.path.join(venv, "bin", "python")


def installed(venv: str) -> dict[str, str] | None:
    """Versions of the pinned packages in ``venv``, or None when it or one of them is missing."""
    py = venv_python(venv)
    if not os.path.exists(py):
        return None
    proc = subprocess.run(
        [py, "-c", _VERSIONS % (list(PINS),)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return None
    versions: dict[str, str] = json.loads(proc.stdout)
    return versions


def ensure_venv(venv: str) -> dict[str, str]:
    """Create ``venv`` and pip-install ``PINS`` from PyPI unless they are already there."""
    if os.path.realpath(venv).startswith(os.path.realpath(REPO) + os.sep):
        raise BenchError(
            f"--venv {venv} is inside the repository; put it outside (default {DEFAULT_VENV})"
        )
    have = installed(venv)
    if have == PINS:
        return have
    say(
        f"installing {', '.join(f'{k}=={v}' for k, v in PINS.items())} into {venv} "
        f"(found {have}); this takes 1-3 minutes"
    )
    if not os.path.exists(venv_python(venv)):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    proc = subprocess.run(
        [venv_python(venv), "-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in PINS.items())],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise BenchError(f"pip install into {venv} failed:\n{proc.stderr[-2000:]}")
    have = installed(venv)
    if have != PINS:
        raise BenchError(f"{venv} holds {have} after pip install, expected {PINS}")
    return have


# --------------------------------------------------------------------------- models + server

_TRAIN = """
import json, os, sys
import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

root, trees = sys.argv[1], int(sys.argv[2])
X, y = load_iris(return_X_y=True)
models = {
    "iris-logreg": LogisticRegression(max_iter=1000).fit(X, y),
    "iris-forest": RandomForestClassifier(n_estimators=trees, random_state=0).fit(X, y),
}
for name, model in models.items():
    d = os.path.join(root, name)
    os.makedirs(d)
    joblib.dump(model, os.path.join(d, "model.joblib"))
    with open(os.path.join(d, "model-settings.json"), "w") as f:
        json.dump({"name": name, "implementation": "mlserver_sklearn.SKLearnModel",
                   "parameters": {"uri": "./model.joblib", "version": "v1"}}, f)
"""


def train_models(venv: str, root: str, trees: int) -> None:
    """Train both models (the forest with ``trees`` trees) with the venv's scikit-learn into
    the model repository ``root``, each with its model-settings.json."""
    os.makedirs(root)
    proc = subprocess.run(
        [venv_python(venv), "-c", _TRAIN, root, str(trees)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise BenchError(f"training the models failed:\n{proc.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class MLServerProcess:
    """One ``mlserver start`` on 127.0.0.1, in its own process group."""

    venv: str
    root: str
    workers: int
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_path: str = ""
    started_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port, grpc_port = free_port(), free_port()
        scratch = os.path.join(self.root, f"run-{time.monotonic_ns()}")
        os.makedirs(scratch)
        settings = {
            "debug": False,  # no access log
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": grpc_port,  # gRPC cannot be turned off: a free loopback port
            "metrics_endpoint": None,  # no metrics server
            "parallel_workers": self.workers,
            "metrics_dir": os.path.join(scratch, "metrics"),
            "environments_dir": os.path.join(scratch, "envs"),
            "load_models_at_startup": True,
        }
        with open(os.path.join(self.root, "settings.json"), "w") as f:
            json.dump(settings, f)
        self.log_path = os.path.join(scratch, "mlserver.log")
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [os.path.join(self.venv, "bin", "mlserver"), "start", self.root],
                cwd=scratch,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped as one
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.started_s = time.monotonic() - t0

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def _wait_ready(self) -> None:
        """Poll the v2 readiness routes (server, then each model) until 200, bounded."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        paths = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in MODELS]
        while paths:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"mlserver exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(
                    f"mlserver not ready after {READY_TIMEOUT_S:g} s "
                    f"({paths[0]}):\n{self.log_tail()}"
                )
            if self._get(paths[0]) == 200:
                paths.pop(0)
            else:
                time.sleep(0.2)  # polling an external server's readiness, not synchronising

    def log_tail(self, n: int = 20) -> str:
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
        return ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after ``STOP_TIMEOUT_S``."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=STOP_TIMEOUT_S)
        # the inference workers are children in the same group: none may outlive the server
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=5)


@contextlib.contextmanager
def mlserver(venv: str, root: str, workers: int) -> Iterator[MLServerProcess]:
    """A fresh MLServer start serving ``MODELS``; stopped by its process group on exit."""
    server = MLServerProcess(venv, root, workers)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- targets


def sweep_targets(venv: str, root: str, workers: int) -> dict[str, tuple[float, float]]:
    """Per model: (unloaded P99 ms, the lowest of wrk at 1 connection, the P99 target)."""
    import mlserver_tasks  # noqa: PLC0415  (imports Locust, unpatched)

    out = {}
    with mlserver(venv, root, workers) as server:
        for model in MODELS:
            path = mlserver_tasks.infer_path(model)
            run_wrk(server.url, path, conns=1, duration_s=1.0, post_json=mlserver_tasks.BODY)
            p99s = []
            for _ in range(SWEEP_RUNS):
                w = run_wrk(
                    server.url, path, conns=1, duration_s=2.0, post_json=mlserver_tasks.BODY
                )
                if w.p99_ms is None:
                    raise BenchError(f"wrk measured no P99 for {model}")
                p99s.append(w.p99_ms)
            best = min(p99s)
            target = max(TARGET_FLOOR_MS, 5.0 * math.ceil(TARGET_FACTOR * best / 5.0))
            out[model] = (best, target)
    return out


def parse_targets(text: str) -> dict[str, float]:
    """``iris-logreg=45,iris-forest=250`` -> {model: ms}; every model needs one."""
    got: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, ms = part.partition("=")
        if not sep or name not in MODELS:
            raise BenchError(f"--targets: {part!r} is not MODEL=MS with MODEL in {MODELS}")
        got[name] = float(ms)
    missing = [m for m in MODELS if m not in got]
    if missing:
        raise BenchError(f"--targets lacks {missing}: give MODEL=MS for each of {MODELS}")
    return got


# --------------------------------------------------------------------------- runs and verdicts


@dataclass
class Run:
    """One model's run on one server start, and its verdicts (none for a baseline run)."""

    phase: str  # baseline | A/A | slow
    index: int
    model: str
    workers: int
    result: CapacityResult | None
    error: str = ""
    verdicts: dict[str, str] = field(default_factory=dict)  # metric -> verdict
    messages: dict[str, str] = field(default_factory=dict)  # metric -> message's first line
    seconds: float = 0.0  # run_capacity wall time, queueing for the load lock included
    start_s: float = 0.0  # the server start this run had (readiness included)

    @property
    def regression(self) -> bool:
        return any(v == "regression" for v in self.verdicts.values())

    @property
    def inconclusive(self) -> bool:
        return not self.regression and any(
            v not in ("pass", "improvement") for v in self.verdicts.values()
        )

    @property
    def passed(self) -> bool:
        return bool(self.verdicts) and not (self.regression or self.inconclusive)


def key_of(model: str) -> str:
    return f"bench_mlserver::{model}"


def judge(run: Run, entry: BaselineEntry, settings: RunSettings) -> None:
    """Fill ``run``'s verdicts exactly as the gate computes them."""
    if run.result is None:
        run.verdicts, run.messages = {"run": "error"}, {"run": run.error.splitlines()[0]}
        return
    try:
        vs = evaluate(run.result, entry, settings, key=key_of(run.model), baseline_path="(bench)")
    except GateFailure as exc:
        run.verdicts = {"run": exc.verdict}
        run.messages = {"run": str(exc).splitlines()[0]}
        return
    run.verdicts = {v.metric: v.verdict for v in vs}
    run.messages = {v.metric: v.message.splitlines()[0] for v in vs}


def regressions_of(
    model: str, entry: BaselineEntry, settings: RunSettings
) -> Callable[[CapacityResult], list[str]]:
    """The regressions a check window of ``model`` reads against ``entry``."""
    return functools.partial(
        regression_messages,
        entry=entry,
        settings=settings,
        key=key_of(model),
        baseline_path="(bench)",
    )


def record(
    entry: BaselineEntry | None, run: Run, settings: RunSettings, history: int
) -> BaselineEntry:
    """Append ``run`` to the history as ``--mlload-update-baseline`` does."""
    r = run.result
    if r is None or not r.converged:
        why = run.error if r is None else f"{r.status}: {r.reason}"
        raise BenchError(
            f"baseline run {run.index} of {run.model} did not converge ({why}); "
            f"rerun the bench (a baseline is only recorded from converged runs)"
        )
    if entry is None:
        return BaselineEntry.from_result(key_of(run.model), r, settings, FINGERPRINT)
    return entry.with_run(BaselineRun.from_result(r), settings, FINGERPRINT, history)


def accepts_hold_users() -> bool:
    from pytest_mlload.load.engine import run_capacity  # noqa: PLC0415

    return "hold_users" in inspect.signature(run_capacity).parameters


def one_round(
    phase: str,
    index: int,
    workers: int,
    repo: str,
    args: argparse.Namespace,
    settings: dict[str, RunSettings],
    entries: dict[str, BaselineEntry],
    *,
    hold: bool,
    models: Sequence[str] = MODELS,
) -> list[Run]:
    """A fresh server start, then one run_capacity per model of ``models``; the server is
    stopped after."""
    import mlserver_tasks  # noqa: PLC0415

    from pytest_mlload.load.engine import run_capacity  # noqa: PLC0415

    tasks = {"iris-logreg": mlserver_tasks.IrisLogreg, "iris-forest": mlserver_tasks.IrisForest}
    runs = []
    with mlserver(args.venv, repo, workers) as server:
        for model in models:
            entry = entries.get(model)
            kw: dict[str, Any] = {"probe_users": entry.users if entry else None}
            if hold and entry is not None:
                kw["hold_users"] = entry.users
            t0 = time.monotonic()
            run = Run(phase, index, model, workers, None, start_s=server.started_s)

            def window(model: str = model, kw: dict[str, Any] = kw) -> CapacityResult:
                target, url, name = tasks[model], server.url, key_of(model)
                return run_capacity(target, host=url, settings=settings[model], name=name, **kw)

            try:
                run.result = window()
                if "hold_users" in kw:  # check mode: the plugin's confirmation windows
                    assert entry is not None
                    regressed = regressions_of(model, entry, settings[model])
                    run.result = confirm_check(run.result, window, regressed, settings[model])
            except LoadError as exc:  # an overrun or a crashed driver: a failed run, go on
                run.error = f"{type(exc).__name__}: {exc}"
            run.seconds = time.monotonic() - t0
            if server.proc is None or server.proc.poll() is not None:
                raise BenchError(
                    f"mlserver died during {phase} {index} ({model}):\n{server.log_tail()}"
                )
            runs.append(run)
    return runs


# --------------------------------------------------------------------------- printing


def num(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def describe(run: Run) -> str:
    r = run.result
    if r is None:
        return f"{run.model}: ERROR {run.error.splitlines()[0] if run.error else ''}"
    probe = r.probe.p99_ms if r.probe else None
    v = " ".join(f"{k}={x}" for k, x in run.verdicts.items())
    return (
        f"{run.model}: {r.status}, {r.capacity_rps:.1f} req/s at {r.users} users, P99 "
        f"{num(r.p99_ms)} ms, probe P99 {num(probe)} ms, {run.seconds:.0f} s"
        + (f" -> {v}" if v else "")
        + (f"\n      {r.confirm}" if r.confirm else "")
    )


def run_rows(runs: Sequence[Run]) -> list[list[Any]]:
    rows = []
    for run in runs:
        r = run.result
        probe = r.probe if r else None
        notes = [
            f"{m}: {msg}"
            for m, msg in run.messages.items()
            if run.verdicts.get(m) not in ("pass", "improvement")
        ]
        rows.append(
            [
                f"{run.phase} {run.index}",
                run.model,
                run.workers,
                f"{r.capacity_rps:.1f}" if r else "-",
                r.users if r else "-",
                num(r.p99_ms) if r else "-",
                f"{num(probe.p99_ms)} @{probe.users}" if probe else "-",
                " ".join(f"{m}={v}" for m, v in run.verdicts.items())
                or (r.status if r else "error"),
                "; ".join(notes).replace("|", "/")[:400] or "-",
                f"{run.seconds:.0f}",
            ]
        )
    return rows


RUN_HEADERS = [
    "run",
    "model",
    "workers",
    "capacity req/s",
    "users",
    "P99 ms",
    "probe P99 ms @users",
    "verdicts",
    "message (first line) of each non-pass",
    "wall s",
]


def count_rows(groups: Sequence[tuple[str, Sequence[Run]]]) -> list[list[Any]]:
    rows = []
    for label, runs in groups:
        for model in MODELS:
            rs = [r for r in runs if r.model == model]
            if not rs:
                continue
            rows.append(
                [
                    label,
                    model,
                    len(rs),
                    sum(r.passed for r in rs),
                    sum(r.regression for r in rs),
                    sum(r.inconclusive for r in rs),
                ]
            )
    return rows


def spread_rows(groups: Sequence[tuple[str, Sequence[Run]]]) -> list[list[Any]]:
    rows = []
    for label, runs in groups:
        for model in MODELS:
            rs = [r.result for r in runs if r.model == model and r.result and r.result.converged]
            if not rs:
                continue
            probes = [r.probe.p99_ms for r in rs if r.probe]
            rows.append(
                [
                    label,
                    model,
                    len(rs),
                    pct(cv([r.capacity_rps for r in rs])),
                    f"{min(r.capacity_rps for r in rs):.1f}-{max(r.capacity_rps for r in rs):.1f}",
                    pct(cv([r.p99_ms for r in rs])),
                    pct(cv(probes)) if probes else "-",
                    sorted({r.users for r in rs}),
                ]
            )
    return rows


# --------------------------------------------------------------------------- main


def schedule(runs: int, slow_runs: int) -> list[str]:
    """A/A and slowed rounds interleaved (slowed ones spread evenly), so drift hits both."""
    order = ["A/A"] * runs
    for k in range(slow_runs, 0, -1):
        order.insert(round(k * runs / (slow_runs + 1)) if runs else 0, "slow")
    return order


def report(args: argparse.Namespace, base: list[Run], later: list[Run], t0: float) -> None:
    aa = [r for r in later if r.phase == "A/A"]
    slow = [r for r in later if r.phase == "slow"]
    say()
    say("## Runs")
    say(table(RUN_HEADERS, run_rows(base + later)))
    say()
    say("## Verdict counts (issue 9: A/A no regression; slowed runs regression)")
    say(
        table(
            ["runs", "model", "n", "pass", "regression", "inconclusive"],
            count_rows([("baseline", []), ("A/A", aa), (f"slow ({slow_label(args)})", slow)]),
        )
    )
    changed = [r for r in slow if r.model in changed_models(args)]
    control = [r for r in slow if r.model not in changed_models(args)]
    false_regr = sum(r.regression for r in aa + control)
    caught = sum(r.regression for r in changed)
    say()
    say(
        f"- unchanged: {false_regr}/{len(aa) + len(control)} model runs with a regression "
        f"verdict (target 0; A/A runs"
        + (", and the unchanged model in the slowed rounds" if control else "")
        + f"); slowed: {caught}/{len(changed)} model runs caught as regression (target all)"
    )
    for r in aa + control:  # a false regression in full: the per-run table cuts its messages
        for metric, verdict in r.verdicts.items():
            if verdict == "regression":
                say(f"- unchanged {r.phase} {r.index} {r.model}: {r.messages[metric]}")
    say()
    say("## Run-to-run spread (fresh server starts)")
    say(
        table(
            [
                "runs",
                "model",
                "converged",
                "CV capacity",
                "capacity range",
                "CV P99",
                "CV probe P99",
                "users seen",
            ],
            spread_rows([("baseline", base), ("A/A", aa), ("slow", slow)]),
        )
    )
    waits = [r.start_s for r in base + later if r.model == MODELS[0]]
    say()
    say(
        f"- wall time {(time.monotonic() - t0) / 60:.1f} min; MLServer start to ready "
        f"{min(waits, default=0):.0f}-{max(waits, default=0):.0f} s per start; run_capacity "
        f"wall s (load-lock queue included) {[round(r.seconds) for r in base + later]}"
    )


def changed_models(args: argparse.Namespace) -> tuple[str, ...]:
    """The models the slowdown changes (the others are unchanged controls in those rounds)."""
    return MODELS if args.slow == "workers" else ("iris-forest",)


def slow_label(args: argparse.Namespace) -> str:
    if args.slow == "workers":
        return f"parallel_workers {args.slow_workers}"
    return f"forest {FOREST_TREES} -> {FOREST_TREES * SLOW_TREES_FACTOR} trees"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=10, help="A/A runs on fresh starts (10)")
    p.add_argument("--slow-runs", type=int, default=3, help="slowed runs on fresh starts (3)")
    p.add_argument("--history", type=int, default=3, help="baseline runs recorded (3)")
    p.add_argument("--workers", type=int, default=2, help="parallel_workers of A/A runs (2)")
    p.add_argument(
        "--slow-workers", type=int, default=1, help="parallel_workers of slowed runs (1)"
    )
    p.add_argument(
        "--slow",
        choices=("trees", "workers"),
        default="trees",
        help=f"the slowdown: the forest with {SLOW_TREES_FACTOR}x trees (default), or "
        "--slow-workers parallel workers",
    )
    p.add_argument("--quick", action="store_true", help="smoke: 2 A/A + 1 slowed run")
    p.add_argument(
        "--check",
        action="store_true",
        help="A/A and slowed runs in check mode (hold the baseline's users)",
    )
    p.add_argument("--targets", default="", help="MODEL=MS,... instead of the first sweep")
    p.add_argument(
        "--threshold", type=float, default=0.10, help="the gates' threshold (0.10, the default)"
    )
    p.add_argument("--venv", default=DEFAULT_VENV, help=f"MLServer's venv ({DEFAULT_VENV})")
    p.add_argument(
        "--max-duration",
        type=float,
        default=MAX_DURATION_S,
        help=f"max_duration_s of every run ({MAX_DURATION_S:g})",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.slow_runs = min(args.runs, 2), min(args.slow_runs, 1)
    if args.history < 1 or args.runs < 0 or args.slow_runs < 0 or not 0 < args.threshold < 1:
        raise BenchError(
            "--history must be >= 1, --runs and --slow-runs >= 0, --threshold in (0, 1)"
        )
    stop_on_sigterm()
    t0 = time.monotonic()
    header(
        f"bench_mlserver: MLServer + scikit-learn, {args.history} baseline + {args.runs} "
        f"A/A (parallel_workers {args.workers}) + {args.slow_runs} slowed ({slow_label(args)}) "
        f"runs, each on a fresh server start"
        + (", check mode" if args.check else "")
        + f", threshold {args.threshold:g}"
    )
    versions = ensure_venv(args.venv)
    say(f"venv {args.venv}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    hold = False
    if args.check:
        hold = accepts_hold_users()
        if not hold:
            say(
                "NOTE: --check asked, but this run_capacity has no hold_users parameter (check "
                "mode not merged yet): A/A and slowed runs use the full search instead."
            )
    base: list[Run] = []
    later: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mlserver-") as root:
            repo = os.path.join(root, "models")
            train_models(args.venv, repo, FOREST_TREES)
            slow_repo = repo
            if args.slow == "trees":
                slow_repo = os.path.join(root, "models-slow")
                train_models(args.venv, slow_repo, FOREST_TREES * SLOW_TREES_FACTOR)
            if args.targets:
                targets = parse_targets(args.targets)
                say(f"P99 targets (given): {targets}")
            else:
                swept = sweep_targets(args.venv, repo, args.workers)
                targets = {m: t for m, (_, t) in swept.items()}
                say(
                    table(
                        [
                            "model",
                            f"unloaded P99 ms (lowest of {SWEEP_RUNS} x wrk -c1 2 s)",
                            "P99 target ms",
                        ],
                        [[m, f"{u:.1f}", f"{t:g}"] for m, (u, t) in swept.items()],
                    )
                )
                say(
                    f"(target = {TARGET_FACTOR:g} x unloaded P99, rounded up to 5 ms, at least "
                    f"{TARGET_FLOOR_MS:g} ms; pass --targets "
                    + ",".join(f"{m}={t:g}" for m, t in targets.items())
                    + " to reuse)"
                )
            settings = {
                m: RunSettings(
                    target_p99_ms=t, max_duration_s=args.max_duration, threshold=args.threshold
                )
                for m, t in targets.items()
            }
            entries: dict[str, BaselineEntry] = {}
            kept = dict.fromkeys(MODELS, 0)
            for i in range(1, args.history + BASELINE_RERUNS + 1):
                todo = [m for m in MODELS if kept[m] < args.history]
                if not todo:
                    break
                for run in one_round(
                    "baseline",
                    i,
                    args.workers,
                    repo,
                    args,
                    settings,
                    entries,
                    hold=False,
                    models=todo,
                ):
                    base.append(run)
                    if run.result is None or not run.result.converged:  # as a team reruns
                        say(f"  baseline {i} {describe(run)} -> not recorded, run again")
                        continue
                    entries[run.model] = record(
                        entries.get(run.model), run, settings[run.model], args.history
                    )
                    kept[run.model] += 1
                    say(f"  baseline {i} ({kept[run.model]}/{args.history}) {describe(run)}")
                    for note in entries[run.model].load_notes():
                        say(f"    {run.model} note: {note}")
            short = {m: k for m, k in kept.items() if k < args.history}
            if short:
                raise BenchError(
                    f"baseline runs recorded {short} of {args.history} after "
                    f"{BASELINE_RERUNS} reruns of runs that did not converge; rerun the bench"
                )
            for m, e in entries.items():
                say(
                    f"  baseline {m}: capacity {[x.capacity_rps for x in e.runs]} req/s, users "
                    f"{[x.users for x in e.runs]} -> later runs probe P99 at {e.users} users"
                )
                line = readiness_line(m, history_readiness(e, settings[m]), args.history)
                say(f"  record-time line: {line}")
            counts = {"A/A": 0, "slow": 0}
            for phase in schedule(args.runs, args.slow_runs):
                counts[phase] += 1
                workers, where = args.workers, repo
                if phase == "slow" and args.slow == "workers":
                    workers = args.slow_workers
                elif phase == "slow":
                    where = slow_repo
                for run in one_round(
                    phase, counts[phase], workers, where, args, settings, entries, hold=hold
                ):
                    judge(run, entries[run.model], settings[run.model])
                    later.append(run)
                    say(f"  {phase} {counts[phase]} {describe(run)}")
    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, or SIGTERM via stop_on_sigterm
        code = exc.code if isinstance(exc, SystemExit) else 130
        say(f"interrupted ({code}): servers stopped; the tables hold the runs done so far")
        report(args, base, later, t0)
        return code if isinstance(code, int) else 1
    report(args, base, later, t0)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"BENCH BROKEN: {exc}", file=sys.stderr)
        sys.exit(1)
