"""The per-test picture: valid PNGs for converged, inconclusive and empty runs; safe names."""

from __future__ import annotations

import importlib.util
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mlload.config import RunSettings
from pytest_mlload.errors import ConfigError
from pytest_mlload.load.controller import CapacitySearch, build_result, run_search
from pytest_mlload.report.plots import _operating_window, plot_path_for, plot_result
from pytest_mlload.results import CapacityResult, WindowRecord
from pytest_mlload.testing.simulate import FakeClock, SimulatedService

# matplotlib is the optional [plots] extra: drawing tests skip without it, the rest still run.
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib (the [plots] extra)"
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXAMPLE = Path("/tmp/mlload_plot_example.png")


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the IHDR chunk, after checking the PNG signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def simulated(
    svc: SimulatedService, *, name: str = "x", probe_users: int | None = None, **kw: object
) -> CapacityResult:
    settings = RunSettings(**kw)  # type: ignore[arg-type]
    s = CapacitySearch(settings, probe_users=probe_users)
    clock = FakeClock(svc)
    run_search(s, svc, clock)
    return build_result(s, name=name, host="sim", elapsed_s=clock.now())


@pytest.fixture(scope="module")
def converged() -> CapacityResult:
    r = simulated(
        SimulatedService(slots=4, service_ms=20, seed=1),
        name="test_capacity.py::test_predict[production]",
        probe_users=10,
        target_p99_ms=120,
    )
    assert r.status == "converged", r.reason
    assert {w.phase for w in r.trajectory} >= {"ramp", "measure", "probe"}
    return r


def hand_made(trajectory: tuple[WindowRecord, ...], **kw: object) -> CapacityResult:
    fields: dict[str, object] = {
        "name": "test_hand",
        "host": "http://127.0.0.1:1",
        "status": "inconclusive",
        "reason": "time cap reached: 60 s elapsed before the search converged",
        "capacity_rps": 0.0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "users": 0,
        "requests": 0,
        "failures": 0,
        "error_ratio": 0.0,
        "measure_s": 0.0,
        "elapsed_s": 60.0,
        "target_p99_ms": 200.0,
        "trajectory": trajectory,
    }
    fields.update(kw)
    return CapacityResult(**fields)  # type: ignore[arg-type]


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 10_000
    width, height = png_size(path)
    assert width >= 800 and height >= 600


@needs_matplotlib
def test_converged_run_renders_a_png(converged: CapacityResult, tmp_path: Path) -> None:
    out = plot_result(converged, tmp_path / "deep" / "dir" / "x.png", baseline_capacity_rps=230.0)
    assert out == tmp_path / "deep" / "dir" / "x.png"
    assert_png(out)


@needs_matplotlib
def test_example_picture(converged: CapacityResult) -> None:
    # The example looked at by eye (see the module docstring of pytest_mlload.report.plots).
    out = plot_result(converged, EXAMPLE, baseline_capacity_rps=230.0, verdict="regression")
    assert_png(out)


@needs_matplotlib
def test_result_round_tripped_through_json_renders(
    converged: CapacityResult, tmp_path: Path
) -> None:
    # Reports plot what the driver shipped as JSON, not the in-process object.
    r = CapacityResult.from_dict(converged.to_dict())
    assert_png(plot_result(r, tmp_path / "rt.png", verdict="pass", title="custom title"))


@needs_matplotlib
def test_inconclusive_simulated_runs_render(tmp_path: Path) -> None:
    errors = simulated(
        SimulatedService(slots=4, service_ms=20, seed=1, error_ratio=0.2), target_p99_ms=120
    )
    overloaded = simulated(
        SimulatedService(slots=2, service_ms=200, seed=1), target_p99_ms=50, min_users=30
    )
    # the error run keeps its failing window (failures never vanish); the overloaded one has none
    assert errors.status == "inconclusive" and errors.failures > 0
    assert overloaded.status == "inconclusive" and overloaded.p99_ms is None
    for i, r in enumerate((errors, overloaded)):
        assert_png(plot_result(r, tmp_path / f"bad{i}.png", baseline_capacity_rps=100.0))


@needs_matplotlib
def test_empty_trajectory_renders(tmp_path: Path) -> None:
    r = hand_made((), reason="host unreachable: connection refused", elapsed_s=0.1)
    assert_png(plot_result(r, tmp_path / "empty.png", baseline_capacity_rps=50.0))


@needs_matplotlib
def test_windows_without_p99_and_unknown_phases_render(tmp_path: Path) -> None:
    windows = (
        WindowRecord(
            phase="openloop",
            users=0,
            start_s=5.0,
            end_s=6.0,
            requests=40,
            failures=40,
            rps=0.0,
            p99_ms=None,
            decision="all requests failed",
        ),
        WindowRecord(
            phase="ramp",
            users=4,
            start_s=6.2,
            end_s=7.0,
            requests=0,
            failures=0,
            rps=0.0,
            p99_ms=None,
            decision="no request completed: measure again",
        ),
        WindowRecord(
            phase="warmup",
            users=4,
            start_s=7.2,
            end_s=7.2,
            requests=1,
            failures=0,
            rps=1.0,
            p99_ms=1e6,
        ),
        # A measure window that did not produce the result (inconclusive, no capacity).
        WindowRecord(
            phase="measure",
            users=4,
            start_s=7.5,
            end_s=9.0,
            requests=10,
            failures=0,
            rps=6.7,
            p99_ms=150.0,
            decision="too few samples",
        ),
    )
    r = hand_made(windows, settings={"tolerance": 0.1, "threshold": 0.1})
    assert_png(plot_result(r, tmp_path / "sparse.png", verdict="inconclusive"))


@needs_matplotlib
def test_missing_settings_and_ci_render(converged: CapacityResult, tmp_path: Path) -> None:
    r = CapacityResult.from_dict(
        {**converged.to_dict(), "settings": {}, "capacity_ci": None, "p99_ci": None}
    )
    assert_png(plot_result(r, tmp_path / "bare.png", baseline_capacity_rps=230.0))


@pytest.mark.parametrize(
    "key",
    [
        "test_capacity.py::test_x[production]",
        "tests/perf/test_capacity.py::TestApi::test_x[individual-/predict]",
        'weird key: <>|?*"\\ with spaces and ünïcode',
        "../../etc/passwd",
        "",
        "x" * 500,
        "...",
    ],
)
def test_plot_path_is_safe(tmp_path: Path, key: str) -> None:
    p = plot_path_for(tmp_path, key)
    assert p.parent == tmp_path
    assert p.suffix == ".png"
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.png", p.name), p.name
    assert len(p.name) <= 100
    assert p == plot_path_for(tmp_path, key)  # stable across calls


def test_plot_path_is_readable_and_distinct(tmp_path: Path) -> None:
    p = plot_path_for(tmp_path, "test_capacity.py::test_x[production]")
    assert p.name.startswith("test_capacity__test_x-production-")
    a = plot_path_for(tmp_path, "test_a.py::test_x[a/b]")
    b = plot_path_for(tmp_path, "test_a.py::test_x[a_b]")
    assert a != b


def test_missing_matplotlib_raises_config_error_with_hint(
    converged: CapacityResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=re.escape("pip install 'pytest-mlload[plots]'")):
        plot_result(converged, tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_importing_the_package_does_not_import_matplotlib() -> None:
    # matplotlib is an optional extra: only drawing a plot may import it.
    code = (
        "import sys, pytest_mlload, pytest_mlload.report.plots; print('matplotlib' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


@needs_matplotlib
def test_plotting_leaves_global_matplotlib_state_alone(tmp_path: Path) -> None:
    # No pyplot, no backend switch, no rcParams change: the host process keeps its setup.
    code = f"""
import sys, matplotlib
matplotlib.rcParams["backend"] = "svg"
before = dict(matplotlib.rcParams)
from pytest_mlload.results import CapacityResult
from pytest_mlload.report.plots import plot_result
r = CapacityResult(name="t", host="h", status="inconclusive", reason="r", capacity_rps=0.0,
    p50_ms=None, p95_ms=None, p99_ms=None, users=0, requests=0, failures=0, error_ratio=0.0,
    measure_s=0.0, elapsed_s=0.0, target_p99_ms=100.0)
plot_result(r, {str(tmp_path / "g.png")!r})
assert "matplotlib.pyplot" not in sys.modules
assert dict(matplotlib.rcParams) == before
assert matplotlib.get_backend() == "svg"
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert_png(tmp_path / "g.png")


def test_operating_point_is_the_measure_window_that_gave_the_capacity(
    converged: CapacityResult,
) -> None:
    op = _operating_window(converged)
    assert op is not None and op.phase == "measure" and op.users == converged.users
    # A measure window that yielded no capacity (too few samples) is not an operating point.
    stub = WindowRecord(
        phase="measure", users=4, start_s=0, end_s=1, requests=3, failures=0, rps=3, p99_ms=9
    )
    assert _operating_window(hand_made((stub,), users=4)) is None


def test_plots_without_matplotlib_is_a_usage_error_before_any_load(
    pytester: pytest.Pytester,
) -> None:
    # a conftest hides matplotlib from the inner session; the test would run minutes of load
    pytester.makeconftest("import sys\nsys.modules['matplotlib'] = None\n")
    pytester.makepyfile(
        test_x="""
import pytest

@pytest.mark.capacity(target_p99_ms=100)
def test_x(mlload):
    raise AssertionError("never reached: the session must stop at configuration")
"""
    )
    result = pytester.runpytest_subprocess(
        "--mlload-plots", "plots", "--mlload-host", "http://127.0.0.1:9", timeout=60
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "pip install 'pytest-mlload[plots]'" in err and "never reached" not in err
    assert not (pytester.path / "plots").exists()
