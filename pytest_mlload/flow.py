"""One capacity test, start to end, without pytest: plan -> load -> result -> judge -> record.

:class:`CapacityTest` is what the ``mlload`` fixture wraps and what a script uses directly::

    from pytest_mlload import BaselineStore, CapacityTest, RunSettings

    test = CapacityTest(key="svc::classify", host="http://127.0.0.1:8000",
                        settings=RunSettings(target_p99_ms=120),
                        store=BaselineStore(Path("mlload-baseline.yaml")))
    result = test.run(Classify)          # probes P99 at the baseline's load, like pytest
    judgement = test.judge(result)       # the same verdicts as under pytest
    if judgement.error():
        raise judgement.error()

Planning reads the baseline: the P99 probe at the baseline entry's reference load, check
mode's held load and the open-loop rate come from the entry (when its settings match).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlload.config import RunSettings
from pytest_mlload.errors import Inconclusive
from pytest_mlload.results import CapacityResult, part_key, part_name

if TYPE_CHECKING:
    from pytest_mlload.baseline import BaselineStore
    from pytest_mlload.gates.judgement import Judgement
    from pytest_mlload.hpa.recommend import HpaReport, HpaSettings
    from pytest_mlload.load.modes import Part

__all__ = ["CapacityTest", "RunPlan", "confirm_check"]


def _ignore(_: str) -> None:
    return None


def confirm_check(
    first: CapacityResult,
    again: Callable[[], CapacityResult],
    regressions: Callable[[CapacityResult], Sequence[str]],
    settings: RunSettings,
    *,
    pause: Callable[[float], None] = time.sleep,
) -> CapacityResult:
    """A check run's verdict from up to ``settings.check_windows`` windows, spread in time.

    A check window is ~10 s. A slow spell of the server or the runner (a cold start's tail,
    a neighbour's job) can outlast it, and then an unchanged build reads as a regression
    (seen on MLServer: P99 161.6 ms against baseline probes of 68.9-93.0). So when the first
    window reads a regression (``regressions(result)`` names any), the load is held again in
    a new window after a pause of ``check_gap_s``, and again, until a majority of
    ``check_windows`` agree (two of the default three): the regression stands when they read
    one, and is dismissed when they do not. The
    result is the deciding (last) window's, with ``confirm`` saying how each window read and
    ``elapsed_s`` counting every window and pause. An unchanged build whose first window
    passes costs nothing more; a real regression costs one window and one pause more.

    A window starts only when it fits in what is left of ``max_duration_s`` (the longest
    window so far, plus the pause); otherwise, or when a confirmation window cannot run
    (:class:`~pytest_mlload.errors.LoadError`), the windows so far decide and ``confirm``
    says why no more ran: a regression read once and never contradicted stands, and windows
    split evenly make the run inconclusive (``status``), never a pass.
    """
    from pytest_mlload.errors import LoadError

    found = list(regressions(first))
    if not found or settings.check_windows < 2:
        return first
    windows = [(first, found)]
    spent = first.elapsed_s
    stopped = ""
    need = (settings.check_windows + 2) // 2  # the same reading in a majority of the windows
    while len(windows) < settings.check_windows:
        read = sum(bool(f) for _, f in windows)
        if read >= need or len(windows) - read >= need:
            break
        longest = max(r.elapsed_s for r, _ in windows)
        if spent + settings.check_gap_s + longest > settings.max_duration_s:
            stopped = (
                f"no time for window {len(windows) + 1}: {spent:.0f} s spent, a window takes "
                f"~{longest:.0f} s after a {settings.check_gap_s:g} s pause, max_duration_s="
                f"{settings.max_duration_s:g} (raise it)"
            )
            break
        pause(settings.check_gap_s)
        try:
            r = again()
        except LoadError as exc:
            stopped = f"window {len(windows) + 1} failed: {exc}"
            break
        spent += settings.check_gap_s + r.elapsed_s
        windows.append((r, list(regressions(r))))
    read = sum(bool(f) for _, f in windows)
    clear = len(windows) - read
    shown = "; ".join(
        f"window {i}: {_figures(r)}, {'regression' if f else 'no regression'}"
        for i, (r, f) in enumerate(windows, 1)
    )
    confirm = f"check windows {settings.check_gap_s:g} s apart: {shown}" + (
        f"; {stopped}" if stopped else ""
    )
    if read == clear:  # a window could not run, or an even check_windows: no majority
        why = stopped or f"check_windows={settings.check_windows} leaves no window to decide"
        split = f"check windows split {read} to {clear} on a regression: {why}"
        last = replace(windows[-1][0], status="inconclusive", reason=split)
    else:
        stands = read > clear
        last = next(r for r, f in reversed(windows) if bool(f) == stands)
        confirm = (
            f"the regression held in {read} of {len(windows)} check windows"
            if stands
            else f"window 1's regression did not hold in {clear} of {len(windows)} check "
            "windows: taken for a slow spell of the server or the runner, not the build"
        ) + f" ({confirm})"
    return replace(last, confirm=confirm, elapsed_s=spent)


def _figures(r: CapacityResult) -> str:
    p99 = "-" if r.p99_ms is None else f"{r.p99_ms:.1f} ms"
    return f"{r.capacity_rps:.1f} req/s, P99 {p99} at {r.users} users"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """How one part runs, read from its baseline entry."""

    probe_users: int | None = None  # P99 probe at the entry's reference load
    hold_users: int | None = None  # check mode: hold this load instead of searching
    open_loop_rps: float | None = None  # the entry's open-loop rate
    note: str = ""  # why check mode fell back to a full search


@dataclass(kw_only=True)
class CapacityTest:
    """One capacity test: its baseline key, host, settings and baseline store.

    ``update`` records instead of comparing (``--mlload-update-baseline``). ``hpa`` enables
    the HPA recommendation when it has a Prometheus URL; ``keda_dir`` receives KEDA trigger
    YAML. ``warn`` receives warnings (the plugin turns them into pytest warnings),
    ``on_event`` every progress event, ``on_part`` every finished part.
    """

    key: str
    host: str
    settings: RunSettings
    store: BaselineStore
    update: bool = False
    hpa: HpaSettings | None = None
    keda_dir: Path | None = None
    record_command: str = "pytest --mlload-update-baseline"
    warn: Callable[[str], None] = _ignore
    on_event: Callable[[str, dict[str, Any]], None] | None = None
    on_part: Callable[[str, CapacityResult], None] | None = None

    def run(self, target: Any = None, *, mixes: list[Any] | None = None) -> CapacityResult:
        """Run ``target`` in the settings' modes; one result (parts inside when several)."""
        from pytest_mlload.load.modes import Part, run_modes
        from pytest_mlload.targets import is_locust_user, is_seed_taskset

        single = is_seed_taskset(target) or is_locust_user(target)
        if single and self.settings.mode == ("individual",):
            return self.run_part(Part("", "individual", target))
        return run_modes(target, self.settings, self.run_part, mixes=mixes)

    def plan(
        self, part: str, kind: str = "search", mix: Mapping[str, float] | None = None
    ) -> RunPlan:
        """The probe, held load and open-loop rate of ``part`` from its baseline entry
        (when it was measured with these settings and this ``mix``)."""
        s = self.settings
        stored = self.store.get(part_key(self.key, part))
        entry = stored if stored and not stored.settings_differences(s, mix) else None
        search = kind == "search"
        probe = entry.users if entry is not None and search else None
        hold = probe if s.check and not self.update else None
        ol = entry.latest.extra.open_loop if entry is not None and not self.update else None
        note = ""
        if s.check and search and hold is None:
            why = (
                "--mlload-update-baseline"
                if self.update
                else "no baseline"
                if stored is None
                else "baseline measured with other settings"
            )
            note = f"check mode: {why}: full search"
        return RunPlan(
            probe_users=probe,
            hold_users=hold,
            open_loop_rps=ol.rate_rps if ol is not None else None,
            note=note,
        )

    def run_part(self, part: Part) -> CapacityResult:
        """Run one part as planned, then add its rate limit and HPA report."""
        from pytest_mlload.load.engine import run_capacity
        from pytest_mlload.load.modes import rate_limit_rps

        key = part_key(self.key, part.name)
        plan = self.plan(part.name, part.kind, part.weights)
        if plan.note:
            self.warn(f"{key}: {plan.note}")
        label = part.name or self.key
        events = self.on_event

        def window() -> CapacityResult:
            return run_capacity(
                part.target,
                host=self.host,
                settings=self.settings,
                name=label,
                probe_users=plan.probe_users,
                hold_users=plan.hold_users,
                open_loop_rps=plan.open_loop_rps,
                kind=part.kind,
                on_event=(lambda e: events(f"{label} ({plan.note})" if plan.note else label, e))
                if events
                else None,
            )

        result = window()
        if plan.hold_users is not None:
            result = confirm_check(
                result, window, lambda r: self.regressions(r, part.name), self.settings
            )
            if result.confirm:
                self.warn(f"{key}: {result.confirm}")
        search = part.kind == "search"
        hpa = self._hpa_report(result, key) if search else None
        result = replace(
            result, rate_limit_rps=rate_limit_rps(result, self.settings.safety_factor), hpa=hpa
        )
        self._warn_bound(result, key)
        if self.on_part is not None:
            self.on_part(part.name, result)
        return result

    def judge(
        self, result: CapacityResult, *, checks: Collection[str] = ("regression",)
    ) -> Judgement:
        """Judge ``result`` against this test's entries (:func:`pytest_mlload.judge`)."""
        from pytest_mlload.gates.judgement import judge

        return judge(
            result,
            self.store,
            self.settings,
            key=self.key,
            checks=checks,
            hpa_threshold=self.hpa.drift_threshold if self.hpa else None,
            baseline_path=str(self.store.path),
            record_command=self.record_command,
        )

    def regressions(self, result: CapacityResult, part: str = "") -> list[str]:
        """The regression messages of one part's ``result`` against its entry
        (:func:`pytest_mlload.gates.metrics.regression_messages`)."""
        from pytest_mlload.gates.metrics import regression_messages

        key = part_key(self.key, part)
        return regression_messages(
            result,
            self.store.get(key),
            self.settings,
            key=key,
            baseline_path=str(self.store.path),
            record_command=self.record_command,
            part=part,
        )

    def recordable(self, result: CapacityResult) -> dict[str, CapacityResult]:
        """The parts of ``result`` to record, by baseline key; :class:`Inconclusive` when any
        part did not converge (then nothing of the test is recorded)."""
        parts = {part_key(self.key, part_name(self.key, n)): r for n, r in result}
        bad = [f"{k}: {r.reason}" for k, r in parts.items() if not r.converged]
        if bad:
            raise Inconclusive("not recorded, inconclusive: " + "; ".join(bad), reason="record")
        return parts

    def _hpa_report(self, result: CapacityResult, key: str) -> HpaReport | None:
        """The HPA recommendation at the operating point; KEDA YAML written when it has one."""
        if self.hpa is None or not self.hpa.prometheus_url:
            return None
        from pytest_mlload._redact import known_secrets, scrub
        from pytest_mlload.hpa.prometheus import PrometheusClient
        from pytest_mlload.hpa.recommend import recommend
        from pytest_mlload.report.plots import plot_path_for

        report = recommend(
            PrometheusClient(self.hpa.prometheus_url),
            self.hpa,
            result.window_start_epoch,
            result.window_end_epoch,
        )
        secrets = known_secrets(self.hpa.prometheus_url)
        for warning in report.warnings:  # the client redacts; scrub is the second layer
            self.warn(scrub(f"{key}: HPA {warning}", secrets))
        if report.recommended and self.keda_dir is not None:
            path = plot_path_for(self.keda_dir, key).with_suffix(".yaml")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.keda_yaml(self.hpa.prometheus_url))
        return report

    def _warn_bound(self, result: CapacityResult, key: str) -> None:
        """Warn when the capacity is only the max_users bound (P99 still under the target)."""
        if result.bound != "max_users":
            return
        p99 = "-" if result.p99_ms is None else f"{result.p99_ms:.1f}"
        self.warn(
            f"{key}: the search stopped at max_users={result.users} with P99 {p99} ms, "
            f"still under the {result.target_p99_ms:g} ms target: {result.capacity_rps:.1f} "
            f"req/s is a lower bound of the capacity, not the capacity; raise max_users "
            f"to find it"
        )
