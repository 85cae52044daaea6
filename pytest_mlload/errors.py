"""The one exception tree of pytest-mlload.

::

    MlloadError                                 root: catch it to catch all we raise
    ├── ConfigError(MlloadError, ValueError)     bad settings, marker args, targets, files
    ├── BaselineError(MlloadError, ValueError)   a baseline file that cannot be trusted
    ├── LoadError(MlloadError, RuntimeError)     the load run broke (driver died, overran)
    │   ├── HostUnreachable                      DNS failure, refused connection, timeout
    │   └── UserCodeError                        the load test's own code raised (a TaskSet)
    ├── NotionError(MlloadError, RuntimeError)   a Notion sync failed (never fails a test)
    │   └── NotionSchemaError                    the data sources lack properties we write
    └── GateFailure(MlloadError, AssertionError) a verdict that fails the test
        ├── PerformanceRegression                a metric moved past its threshold
        ├── Inconclusive                         too little data, time cap, errors, ...
        ├── MissingBaseline                      no entry to compare with
        └── SettingsMismatch                     baseline measured with other settings

Gate failures derive from :class:`AssertionError` so pytest reports them as plain test
failures (not errors) of the test that called the assertion helper.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MlloadWarning",
    "BaselineError",
    "ConfigError",
    "GateFailure",
    "HostUnreachable",
    "Inconclusive",
    "LoadError",
    "MissingBaseline",
    "MlloadError",
    "NotionError",
    "NotionSchemaError",
    "PerformanceRegression",
    "SettingsMismatch",
    "UserCodeError",
]


class MlloadError(Exception):
    """Root of every exception raised by pytest-mlload."""


class ConfigError(MlloadError, ValueError):
    """A setting, marker argument, target class or config file is invalid.

    The message names the offending setting and the accepted form.
    """


class BaselineError(MlloadError, ValueError):
    """A baseline file is malformed, hand-edited into an invalid state, or locked.

    The file is never rewritten when this is raised.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LoadError(MlloadError, RuntimeError):
    """The load run could not produce a measurement (driver crashed, killed, timed out)."""


class HostUnreachable(LoadError):
    """The target host could not be resolved or connected to."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class UserCodeError(LoadError):
    """The load test's own code raised instead of sending its request (a TaskSet's
    ``test_endpoint``, a User's task, an ``on_start``): no measurement means anything.

    ``exc_type`` and ``detail`` are the exception's type name and message, ``location``
    the ``file:line`` in the user's code and ``where`` the function (``Broken.test_endpoint``).
    """

    def __init__(
        self,
        message: str,
        *,
        exc_type: str = "",
        detail: str = "",
        location: str = "",
        where: str = "",
    ) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.detail = detail
        self.location = location
        self.where = where


class NotionError(MlloadError, RuntimeError):
    """A Notion sync could not finish; its message never holds the token.

    The sync reports it as a warning and keeps the payload to send later: it never changes
    a verdict or the exit code of a test session.
    """


class NotionSchemaError(NotionError):
    """The Notion data sources lack properties the sync writes (``missing``), or hold them
    with another type (``mistyped``); the message names each and the init flag."""

    def __init__(
        self, message: str, *, missing: tuple[str, ...] = (), mistyped: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.missing = missing
        self.mistyped = mistyped


class GateFailure(MlloadError, AssertionError):
    """A gate decided that the test fails. ``verdict`` is the machine-readable kind;
    ``verdicts`` the failing :class:`~pytest_mlload.gates.metrics.Verdict` records (figures
    kept) when the judge raised it."""

    verdict = "fail"
    verdicts: tuple[Any, ...] = ()


class PerformanceRegression(GateFailure):
    """A metric moved past its threshold in the bad direction.

    ``metric``, ``baseline``, ``observed``, ``change_ratio`` and ``threshold_ratio`` carry
    the numbers for reports; the message carries them for people.
    """

    verdict = "regression"

    def __init__(
        self,
        message: str,
        *,
        metric: str = "",
        baseline: float | None = None,
        observed: float | None = None,
        change_ratio: float | None = None,
        threshold_ratio: float | None = None,
    ) -> None:
        super().__init__(message)
        self.metric = metric
        self.baseline = baseline
        self.observed = observed
        self.change_ratio = change_ratio
        self.threshold_ratio = threshold_ratio


class Inconclusive(GateFailure):
    """The run cannot support a verdict; never a pass. ``reason`` says why."""

    verdict = "inconclusive"

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class MissingBaseline(GateFailure):
    """No baseline entry exists for this test; the message gives the command that records one."""

    verdict = "no-baseline"


class SettingsMismatch(GateFailure):
    """The baseline entry was measured with different settings; it is not compared blindly."""

    verdict = "settings-mismatch"


class MlloadWarning(UserWarning):
    """A problem worth seeing that does not fail the test (ignored config keys, HPA queries)."""
