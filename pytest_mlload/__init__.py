"""pytest-mlload: adaptive Locust capacity search and regression gates for ML inference APIs."""

from __future__ import annotations

from .config import RunSettings, resolve_settings
from .errors import (
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
)
from .results import CapacityResult, EndpointResult, ProbeResult, WindowRecord

__version__ = "0.1.0"

__all__ = sorted(
    [
        "BaselineError",
        "CapacityResult",
        "ConfigError",
        "EndpointResult",
        "GateFailure",
        "HostUnreachable",
        "Inconclusive",
        "LoadError",
        "MissingBaseline",
        "MlloadError",
        "PerformanceRegression",
        "ProbeResult",
        "RunSettings",
        "SettingsMismatch",
        "WindowRecord",
        "__version__",
        "resolve_settings",
    ]
)
