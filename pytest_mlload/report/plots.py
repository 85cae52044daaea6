"""One picture per capacity test: where the controller settled and why the gate decided.

:func:`plot_result` draws a :class:`~pytest_mlload.results.CapacityResult` as a PNG with three
stacked panels on one time axis (seconds since the first measured window):

* **users**: the user count the controller held (step plot), one thick segment per window;
* **throughput**: successful req/s per window, the measured capacity with its 95 % CI as a
  band over the measure window, and the baseline capacity (dashed) with the drop the
  regression threshold allows shaded under it;
* **P99**: per-window P99 with the target (dashed red) and the band just under it where the
  search stops (lightly shaded); points far above the target are clipped with their value.

Windows are shaded and coloured by phase (ramp / refine / measure / probe / openloop), each
point carries the controller's decision, and the operating point is starred in every panel.

matplotlib is an optional extra (``pip install 'pytest-mlload[plots]'``), imported only when a
plot is drawn. Only the object-oriented API (``Figure`` + ``FigureCanvasAgg``) is used: no
pyplot, no backend switch, no rcParams change, so the host process's matplotlib state (an
interactive backend, a notebook, another plugin) is left alone and plotting is thread-safe.
"""

from __future__ import annotations

import hashlib
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_mlload.errors import ConfigError
from pytest_mlload.results import CapacityResult, WindowRecord

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PHASE_COLORS", "plot_path_for", "plot_result"]

#: Colour of each search phase (tab10 colours; red is kept for the P99 target).
PHASE_COLORS: dict[str, str] = {
    "ramp": "#1f77b4",
    "refine": "#ff7f0e",
    "measure": "#2ca02c",
    "probe": "#9467bd",
    "openloop": "#17becf",
}
_OTHER_COLOR = "#7f7f7f"
_TARGET_COLOR = "#d62728"
_BASELINE_COLOR = "#333333"
_VERDICT_COLORS = {
    "pass": "#2ca02c",
    "passed": "#2ca02c",
    "ok": "#2ca02c",
    "converged": "#2ca02c",
    "regression": _TARGET_COLOR,
    "fail": _TARGET_COLOR,
    "failed": _TARGET_COLOR,
}
_WARN_COLOR = "#e69500"  # inconclusive, no-baseline, settings-mismatch, ...
# P99 above this multiple of the target is drawn clipped at the top of its panel, so one
# overloaded ramp window does not squash the band the controller aims for.
_P99_CLIP_RATIO = 2.5
_MAX_STEM = 80


def plot_path_for(directory: Path, key: str) -> Path:
    """A safe, stable PNG path in ``directory`` for the test ``key`` (a pytest node id).

    ``test_capacity.py::test_x[production]`` becomes
    ``test_capacity__test_x-production-<hash>.png``: only letters, digits, ``_``, ``-`` and
    ``.``, no path separators, at most ~100 characters. The short hash of the full key keeps
    two keys that read alike after cleaning (``[a/b]`` and ``[a_b]``) from sharing a file.
    """
    stem = key.strip()
    stem = re.sub(r"\.py(?=::|$)", "", stem)  # the module suffix adds nothing
    stem = stem.replace("::", "__").replace("[", "-").replace("]", "")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    stem = re.sub(r"_{3,}", "__", stem).strip("._-")[:_MAX_STEM].rstrip("._-") or "plot"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:8]
    return Path(directory) / f"{stem}-{digest}.png"


def plot_result(
    result: CapacityResult,
    path: Path,
    *,
    baseline_capacity_rps: float | None = None,
    verdict: str | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``result`` as a PNG at ``path`` (parent directories are created); return the path.

    ``baseline_capacity_rps`` adds the baseline's capacity as a dashed line (and the drop the
    ``threshold`` setting allows, shaded); ``verdict`` is the gate's word (``pass``,
    ``regression``, ``inconclusive``...; default: the result's status); ``title`` replaces the
    test name in the heading. Results without windows or without P99 values (inconclusive
    runs) are drawn with what exists, and the reason goes into the heading.

    Raises :class:`~pytest_mlload.errors.ConfigError` when matplotlib is not installed.
    """
    figure_cls, canvas_cls = _load_matplotlib()
    path = Path(path)
    fig: Figure = figure_cls(figsize=(12, 9.5), dpi=110, layout="constrained")
    canvas_cls(fig)  # attaches the Agg canvas to this figure only
    ax_users, ax_rps, ax_p99 = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [1.0, 1.35, 1.35]}
    )
    windows = tuple(result.trajectory)
    t0 = windows[0].start_s if windows else 0.0
    op = _operating_window(result)
    threshold = _float_setting(result, "threshold")
    tolerance = _float_setting(result, "tolerance")

    _style_panels((ax_users, ax_rps, ax_p99), windows, t0)
    _draw_users(ax_users, windows, t0, op)
    _draw_throughput(ax_rps, result, windows, t0, op, baseline_capacity_rps, threshold)
    _draw_p99(ax_p99, result, windows, t0, op, tolerance)
    _draw_time_axis((ax_users, ax_rps, ax_p99), windows, t0)
    _draw_legend(fig, windows, op is not None)
    _draw_heading(fig, result, title, verdict or result.status or "unknown", baseline_capacity_rps)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", facecolor="white")
    return path


# -- helpers ---------------------------------------------------------------------------------


def _style_panels(axes: Sequence[Axes], windows: Sequence[WindowRecord], t0: float) -> None:
    """Phase shading, a light horizontal grid and no top/right spines on every panel."""
    for ax in axes:
        _shade_phases(ax, windows, t0)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)


def _draw_time_axis(axes: Sequence[Axes], windows: Sequence[WindowRecord], t0: float) -> None:
    """Label and bound the shared time axis (last panel); say so when nothing was measured."""
    last = axes[-1]
    last.set_xlabel("time since the first window (s)")
    if windows:
        span = max(w.end_s for w in windows) - t0
        last.set_xlim(-0.02 * span, span * 1.02 or 1.0)
        return
    last.set_xlim(0.0, 1.0)
    for ax in axes:
        ax.text(
            0.5,
            0.5,
            "no window was measured",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color=_OTHER_COLOR,
            fontsize=12,
        )


def _draw_heading(
    fig: Figure,
    result: CapacityResult,
    title: str | None,
    verdict_text: str,
    baseline_rps: float | None,
) -> None:
    """The figure's heading (name, verdict, figures, reason) and the coloured verdict badge."""
    fig.suptitle(
        _heading(result, title, verdict_text, baseline_rps),
        fontsize=11,
        x=0.01,
        ha="left",
    )
    fig.text(
        0.99,
        0.995,
        f" {verdict_text.upper()} ",
        ha="right",
        va="top",
        fontsize=13,
        fontweight="bold",
        color="white",
        bbox={
            "boxstyle": "round,pad=0.3",
            "facecolor": _VERDICT_COLORS.get(verdict_text.lower(), _WARN_COLOR),
            "edgecolor": "none",
        },
    )


def _load_matplotlib() -> tuple[Any, Any]:
    """``(Figure, FigureCanvasAgg)``, or a ConfigError with the install hint."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ConfigError(
            "plots need matplotlib, which is not installed: "
            "pip install 'pytest-mlload[plots]' (or drop --mlload-plots)"
        ) from exc
    return Figure, FigureCanvasAgg


def _float_setting(result: CapacityResult, name: str) -> float | None:
    value = result.settings.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _operating_window(result: CapacityResult) -> WindowRecord | None:
    """The measure window that produced the result (the last one, after any re-measure).

    None when no measure window produced a capacity (e.g. too few samples in it).
    """
    if result.capacity_rps <= 0:
        return None
    for w in reversed(result.trajectory):
        if w.phase == "measure" and w.users == result.users:
            return w
    return None


def _color(phase: str) -> str:
    return PHASE_COLORS.get(phase, _OTHER_COLOR)


def _mid(w: WindowRecord, t0: float) -> float:
    return (w.start_s + w.end_s) / 2.0 - t0


def _shade_phases(ax: Axes, windows: Sequence[WindowRecord], t0: float) -> None:
    for w in windows:
        ax.axvspan(w.start_s - t0, w.end_s - t0, color=_color(w.phase), alpha=0.10, lw=0)


def _draw_users(
    ax: Axes, windows: Sequence[WindowRecord], t0: float, op: WindowRecord | None
) -> None:
    ax.set_ylabel("users")
    if not windows:
        ax.set_ylim(0, 1)
        return
    # The controller sets the next user count as soon as a window ends; the settle time
    # between windows is discarded, so the step changes at each window's end.
    xs = [0.0] + [w.end_s - t0 for w in windows]
    ys = [w.users for w in windows] + [windows[-1].users]
    ax.step(xs, ys, where="post", color=_BASELINE_COLOR, lw=1.0, alpha=0.7)
    for w in windows:
        ax.hlines(w.users, w.start_s - t0, w.end_s - t0, color=_color(w.phase), lw=5)
        ax.annotate(
            str(w.users),
            (_mid(w, t0), w.users),
            xytext=(0, 12 if w is op else 5),
            textcoords="offset points",
            ha="center",
            fontsize=8,
        )
    if op is not None:
        ax.plot(_mid(op, t0), op.users, marker="*", ms=16, color="gold", mec="black", zorder=5)
    ax.set_ylim(0, max(w.users for w in windows) * 1.25 + 1)


def _draw_throughput(
    ax: Axes,
    result: CapacityResult,
    windows: Sequence[WindowRecord],
    t0: float,
    op: WindowRecord | None,
    baseline_rps: float | None,
    threshold: float | None,
) -> None:
    ax.set_ylabel("throughput (req/s)")
    top = max([w.rps for w in windows] + [result.capacity_rps, baseline_rps or 0.0, 1.0])
    _draw_window_rps(ax, windows, t0, op)
    if baseline_rps is not None and baseline_rps > 0:
        _draw_baseline(ax, baseline_rps, threshold)
    if op is not None and result.capacity_rps > 0:
        _draw_capacity(ax, result, t0, op, top, baseline_rps)
    ax.set_ylim(0, top * 1.2)


def _draw_window_rps(
    ax: Axes, windows: Sequence[WindowRecord], t0: float, op: WindowRecord | None
) -> None:
    """Each window's req/s as a segment and a point, with its failure share when it had any."""
    for w in windows:
        if w is not op:  # the operating window is drawn as the capacity band
            ax.hlines(w.rps, w.start_s - t0, w.end_s - t0, color=_color(w.phase), lw=3)
        ax.plot(_mid(w, t0), w.rps, "o", color=_color(w.phase), ms=5)
        if w.failures:
            ax.annotate(
                f"{w.failures / max(w.requests, 1):.1%} failed",
                (_mid(w, t0), w.rps),
                xytext=(0, -12),
                textcoords="offset points",
                ha="center",
                fontsize=7,
                color=_TARGET_COLOR,
            )


def _draw_baseline(ax: Axes, baseline_rps: float, threshold: float | None) -> None:
    """The baseline capacity (dashed) and, with a threshold, the drop it allows (shaded)."""
    ax.axhline(baseline_rps, color=_BASELINE_COLOR, ls="--", lw=1.3)
    label = f"baseline {baseline_rps:.1f} req/s"
    if threshold:
        floor = baseline_rps * (1.0 - threshold)
        ax.axhspan(floor, baseline_rps, color=_BASELINE_COLOR, alpha=0.07, lw=0)
        ax.axhline(floor, color=_BASELINE_COLOR, ls=":", lw=0.9)
        label += f" (shaded: the {threshold:.0%} drop allowed)"
    _label_line(ax, label, baseline_rps, _BASELINE_COLOR)


def _label_line(ax: Axes, label: str, y: float, color: str) -> None:
    """Write ``label`` just above the horizontal line at ``y``, from the panel's left edge."""
    ax.annotate(
        label,
        (0.005, y),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
        fontsize=8,
        color=color,
    )


def _draw_capacity(
    ax: Axes,
    result: CapacityResult,
    t0: float,
    op: WindowRecord,
    top: float,
    baseline_rps: float | None,
) -> None:
    """The measured capacity over the operating window: its 95 % CI band, a star and a label."""
    x0, x1 = op.start_s - t0, op.end_s - t0
    lo, hi = result.capacity_ci or (result.capacity_rps, result.capacity_rps)
    # Draw the band at least ~1.5 % of the axis tall so a tight interval stays visible.
    pad = max(0.0, 0.0075 * top * 1.2 - (hi - lo) / 2.0)
    ax.fill_between([x0, x1], lo - pad, hi + pad, color=PHASE_COLORS["measure"], alpha=0.35, lw=0)
    ax.hlines(result.capacity_rps, x0, x1, color=PHASE_COLORS["measure"], lw=1.5)
    ax.plot(
        _mid(op, t0),
        result.capacity_rps,
        marker="*",
        ms=16,
        color="gold",
        mec="black",
        zorder=5,
    )
    ci = f" (95 % CI {lo:.1f}-{hi:.1f})" if result.capacity_ci else ""
    vs = ""
    if baseline_rps:
        vs = f", {result.capacity_rps / baseline_rps - 1.0:+.1%} vs baseline"
    ax.annotate(
        f"capacity {result.capacity_rps:.1f} req/s{ci}\nat {result.users} users{vs}",
        (_mid(op, t0), result.capacity_rps),
        xytext=(0, -30),
        textcoords="offset points",
        ha="center",
        va="top",
        fontsize=8.5,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "none", "alpha": 0.85},
    )


def _draw_p99(
    ax: Axes,
    result: CapacityResult,
    windows: Sequence[WindowRecord],
    t0: float,
    op: WindowRecord | None,
    tolerance: float | None,
) -> None:
    ax.set_ylabel("P99 (ms)")
    target = result.target_p99_ms
    seen = [w.p99_ms for w in windows if w.p99_ms is not None]
    ceiling = max(seen + [target or 1.0]) * 1.15
    if target and target > 0:
        ceiling = min(ceiling, target * _P99_CLIP_RATIO)
        ceiling = max(ceiling, target * 1.3)
        _draw_target(ax, target, tolerance)
    clip = ceiling * 0.97
    _draw_window_p99(ax, windows, t0, clip, ceiling)
    _draw_p99_intervals(ax, result, windows, t0, op, clip)
    ax.set_ylim(0, ceiling)


def _draw_target(ax: Axes, target: float, tolerance: float | None) -> None:
    """The P99 target (dashed red) and, with a tolerance, the band under it where search stops."""
    ax.axhline(target, color=_TARGET_COLOR, ls="--", lw=1.5)
    label = f"target {target:g} ms"
    if tolerance:
        ax.axhspan(target * (1.0 - tolerance), target, color=_TARGET_COLOR, alpha=0.10, lw=0)
        label += f" (shaded: within {tolerance:.0%} under it, where the search stops)"
    _label_line(ax, label, target, _TARGET_COLOR)


def _draw_window_p99(
    ax: Axes, windows: Sequence[WindowRecord], t0: float, clip: float, ceiling: float
) -> None:
    """Each window's P99 (clipped at ``clip``, with its value) and the controller's decision."""
    xs = [_mid(w, t0) for w in windows if w.p99_ms is not None]
    ys = [min(w.p99_ms, clip) for w in windows if w.p99_ms is not None]
    ax.plot(xs, ys, color=_OTHER_COLOR, lw=0.8, alpha=0.6)
    for i, w in enumerate(windows):
        x = _mid(w, t0)
        if w.p99_ms is None:
            ax.plot(x, 0, marker="x", ms=8, color=_OTHER_COLOR, mew=2, clip_on=False)
            y, note = 0.0, "no P99"
        elif w.p99_ms > clip:
            ax.plot(x, clip, marker="^", ms=8, color=_color(w.phase))
            y, note = clip, f"{w.p99_ms:.0f} ms"
        else:
            ax.plot(x, w.p99_ms, "o", ms=6, color=_color(w.phase))
            y, note = w.p99_ms, ""
        text = "\n".join(t for t in (note, _short(w.decision)) if t)
        if text:
            # Alternate above/below so neighbouring decisions do not overlap; a clipped point
            # sits at the top edge, so its label goes below.
            below = (i % 2 == 1 and y > ceiling * 0.15) or y >= clip
            ax.annotate(
                text,
                (x, y),
                xytext=(0, -9 if below else 9),
                textcoords="offset points",
                ha="center",
                va="top" if below else "bottom",
                fontsize=7.5,
                color="#222222",
            )


def _draw_p99_intervals(
    ax: Axes,
    result: CapacityResult,
    windows: Sequence[WindowRecord],
    t0: float,
    op: WindowRecord | None,
    clip: float,
) -> None:
    """The operating point's P99 (star) with its 95 % CI, and the probe's CI at its window."""
    if op is not None and result.p99_ms is not None:
        x = _mid(op, t0)
        if result.p99_ci:
            lo, hi = result.p99_ci
            ax.vlines(x, lo, min(hi, clip), color="black", lw=1.2)
        ax.plot(x, min(result.p99_ms, clip), marker="*", ms=16, color="gold", mec="black", zorder=5)
    probe = result.probe
    if probe is not None and probe.p99_ci and probe.p99_ms is not None:
        for w in windows:
            if w.phase == "probe" and w.users == probe.users:
                lo, hi = probe.p99_ci
                ax.vlines(_mid(w, t0), lo, min(hi, clip), color="black", lw=1.2)


def _short(decision: str, width: int = 22) -> str:
    """A decision wrapped to two short lines for an annotation ("ramp to 40" -> "-> 40")."""
    decision = re.sub(r"^ramp to (\d+)$", "\u2192 \\1", decision)
    lines = textwrap.wrap(decision, width)
    if len(lines) > 2:
        lines = [lines[0], lines[1][: width - 3] + "..."]
    return "\n".join(lines)


def _draw_legend(fig: Figure, windows: Sequence[WindowRecord], has_op: bool) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    phases = [p for p in PHASE_COLORS if any(w.phase == p for w in windows)]
    phases += sorted({w.phase for w in windows} - set(PHASE_COLORS))
    handles: list[Any] = [Patch(color=_color(p), alpha=0.6, label=p) for p in phases]
    if has_op:
        handles.append(
            Line2D(
                [], [], marker="*", ms=12, color="gold", mec="black", ls="", label="operating point"
            )
        )
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            frameon=False,
            fontsize=9,
        )


def _heading(
    result: CapacityResult, title: str | None, verdict: str, baseline_rps: float | None
) -> str:
    name = title or result.name or "capacity test"
    lines = [f"{name}  —  {verdict}"]
    figures: list[str] = []
    if result.capacity_rps > 0:
        cap = f"capacity {result.capacity_rps:.1f} req/s"
        if result.capacity_ci:
            lo, hi = result.capacity_ci
            half = max(hi - result.capacity_rps, result.capacity_rps - lo)
            cap += f" ± {half:.1f} (95 % CI)"
        figures.append(cap)
    if result.p99_ms is not None:
        figures.append(
            f"P99 {result.p99_ms:.1f} ms at {result.users} users "
            f"(target {result.target_p99_ms:g} ms)"
        )
    else:
        figures.append(f"no operating point: P99 n/a (target {result.target_p99_ms:g} ms)")
    if baseline_rps and result.capacity_rps > 0:
        change = result.capacity_rps / baseline_rps - 1.0
        figures.append(f"baseline {baseline_rps:.1f} req/s ({change:+.1%})")
    if result.probe is not None and result.probe.p99_ms is not None:
        figures.append(f"P99 {result.probe.p99_ms:.1f} ms at {result.probe.users} users (probe)")
    lines.append("  ·  ".join(figures))
    if result.reason:
        lines += textwrap.wrap(f"{result.status}: {result.reason}", 140)[:3]
    return "\n".join(lines)
