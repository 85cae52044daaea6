"""pytest-mlload: adaptive Locust capacity search and regression gates for ML inference APIs.

The public API. Light names are imported at once; the ones that pull numpy/scipy/yaml
(``run_capacity``, gates, baselines) load on first use, so importing the package (which
pytest does for every session through the plugin entry point) stays cheap. Nothing here
imports pytest or Locust.
"""

from __future__ import annotations

import importlib
from typing import Any

from pytest_mlload.config import RunSettings, resolve_settings
from pytest_mlload.errors import (
    BaselineError,
    ConfigError,
    GateFailure,
    HostUnreachable,
    Inconclusive,
    LoadError,
    MissingBaseline,
    MlloadError,
    PerformanceRegression,
    SettingsMismatch,
    UserCodeError,
)
from pytest_mlload.results import (
    CapacityResult,
    EndpointResult,
    OpenLoopResult,
    OpenLoopWindow,
    ProbeResult,
    SpikeResult,
    StreamResult,
    WindowRecord,
)

__version__ = "0.1.0"

_LAZY = {
    "run_capacity": "load.engine",
    "check_host": "load.engine",
    "evaluate": "gates.metrics",
    "check_no_regression": "gates.metrics",
    "Verdict": "gates.metrics",
    "judge": "gates.judgement",
    "Judgement": "gates.judgement",
    "CapacityTest": "flow",
    "BaselineStore": "baseline",
    "BaselineEntry": "baseline",
    "baseline_key": "baseline",
    "CapacitySearch": "load.controller",
    "run_search": "load.controller",
    "SimulatedService": "testing.simulate",
    "FakeClock": "testing.simulate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_mlload' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BaselineEntry",
    "BaselineError",
    "BaselineStore",
    "CapacityResult",
    "CapacitySearch",
    "CapacityTest",
    "ConfigError",
    "EndpointResult",
    "FakeClock",
    "GateFailure",
    "HostUnreachable",
    "Inconclusive",
    "Judgement",
    "LoadError",
    "MissingBaseline",
    "MlloadError",
    "OpenLoopResult",
    "OpenLoopWindow",
    "PerformanceRegression",
    "ProbeResult",
    "RunSettings",
    "SettingsMismatch",
    "SimulatedService",
    "SpikeResult",
    "StreamResult",
    "UserCodeError",
    "Verdict",
    "WindowRecord",
    "__version__",
    "baseline_key",
    "check_host",
    "check_no_regression",
    "evaluate",
    "judge",
    "resolve_settings",
    "run_capacity",
    "run_search",
]
