"""Read an ml-loadtest ``locust.conf`` into pytest-mlload run settings.

ml-loadtest (1.10 and 1.12) users keep their settings in a Locust config file and run
``locust -f $(ml-loadtest-file) --config locust.conf``. :func:`load_locust_conf` reads the
same file (point ``--mlload-config`` at it) and returns the settings that mean something
here, keyed by :class:`~pytest_mlload.config.RunSettings` field name, plus the keys that do
not, each with the reason, so the plugin can warn about them once.

The syntax is what Locust's config parser (``configargparse.DefaultConfigFileParser``)
accepts: ``key = value``, ``key: value``, ``key value`` or ``--key value``; full-line
comments starting with ``#`` or ``;``; a `` #`` or `` ;`` comment after a value; blank lines,
``---`` lines and ``[section]`` headers (skipped); a bare ``key`` meaning true; ``[a, b]``
lists. Keys are case-sensitive, as in Locust; underscores are accepted for dashes. When a key
appears twice the last one wins, as in Locust.

Mapping (ml-loadtest key -> setting):

==========================  ===================  ==========================================
``target-p99-ms``           ``target_p99_ms``    positive number, ms
``min-users``               ``min_users``        integer >= 1
``max-users``               ``max_users``        integer >= 1, not under ``min-users``
``tolerance``               ``tolerance``        ratio in [0, 1)
``production-run-duration`` ``max_duration_s``   positive number, s (see below)
``weights-module``          ``weights_module``   dotted module path
``spike-target-rps``        ``spike_target_rps`` positive number, req/s (see below)
``spike-duration``          ``spike_duration_s`` positive number, s
``test-mode`` / ``mode``    ``mode``             INDIVIDUAL PRODUCTION EXPLORATION SPIKE
``host`` / ``H``            :attr:`LocustConf.host`  ``http(s)://`` URL
==========================  ===================  ==========================================

Two meanings shift on the way:

* ``production-run-duration``: ml-loadtest ran PRODUCTION for exactly that long; here it
  is only the cap of a run (``max_duration_s``), and a search stops as soon as it has
  converged, usually far sooner.
* ``spike-target-rps``: ml-loadtest spawned that many *users* (the number was never a
  rate); here it is the arrival rate the spike aims at.

Modes are case-insensitive, separated by spaces or commas, and returned in ml-loadtest's
fixed execution order. ``ENDPOINT_LATENCY`` (1.12) is accepted and ignored: individual mode
already measures each endpoint on its own.

Only the mapped keys are validated; a bad, empty or missing value raises
:class:`~pytest_mlload.errors.ConfigError` naming the file, the line, the key and the
accepted form. Every other key (the search's own tuning knobs, Locust's output and UI
options, unknown keys) lands in :attr:`LocustConf.ignored`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_mlload.config import MODES
from pytest_mlload.errors import ConfigError

__all__ = ["LocustConf", "load_locust_conf"]


@dataclass(frozen=True, slots=True)
class LocustConf:
    """The meaningful content of one ``locust.conf``.

    ``settings`` maps :class:`~pytest_mlload.config.RunSettings` field names to values
    already parsed and checked (pass it as one layer of
    :func:`~pytest_mlload.config.resolve_settings`); ``host`` is the target URL, if given;
    ``ignored`` holds one ``"key (reason)"`` entry per key that means nothing here, in file
    order.
    """

    path: str
    settings: dict[str, Any]
    host: str | None
    ignored: tuple[str, ...]

    def warning(self) -> str | None:
        """One message naming every ignored key and the file, or ``None`` if none was."""
        if not self.ignored:
            return None
        n = len(self.ignored)
        return (
            f"{self.path}: {n} key{'s' if n != 1 else ''} ignored, as pytest-mlload has no "
            f"use for {'them' if n != 1 else 'it'}: {'; '.join(self.ignored)}"
        )


# ---------------------------------------------------------------------------- line syntax

# configargparse.DefaultConfigFileParser's line pattern, so a file Locust reads reads the same.
_LINE = re.compile(
    r"^(?P<key>[^:=;#\s]+)\s*"
    r"(?:(?P<equal>[:=\s])\s*(?P<quote>['\"]?)(?P<value>.+?)?(?P=quote))?"
    r"\s*(?:\s[;#]\s*(?P<comment>.*?)\s*)?$"
)


# ---------------------------------------------------------------------------- value parsers
# Each returns the parsed value or raises ValueError; the caller adds file, line and form.


def _positive_number(text: str) -> float:
    v = float(text)
    if not (math.isfinite(v) and v > 0):
        raise ValueError
    return v


def _users(text: str) -> int:
    v = int(text)
    if v < 1:
        raise ValueError
    return v


def _ratio(text: str) -> float:
    v = float(text)
    if not (0 <= v < 1):
        raise ValueError
    return v


def _module_path(text: str) -> str:
    if not all(part.isidentifier() for part in text.split(".")):
        raise ValueError
    return text


def _host(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError
    return text


_ENDPOINT_LATENCY_REASON = (
    "there is no separate endpoint-latency phase: individual mode measures each endpoint alone"
)


def _modes(text: str) -> tuple[tuple[str, ...], bool]:
    """Modes in ml-loadtest's fixed order, and whether ENDPOINT_LATENCY was among them."""
    # Accepts "A B", "A, B" and configargparse's list forms "[A, B]" and '["A", "B"]'.
    names = [n.lower() for n in re.split(r"[\s,\[\]'\"]+", text) if n]
    if not names or any(n not in MODES and n != "endpoint_latency" for n in names):
        raise ValueError
    return tuple(m for m in MODES if m in names), "endpoint_latency" in names


# key -> (setting name, parser, accepted form). "host" goes to LocustConf.host, not settings.
_Parser = Callable[[str], Any]
_MAPPED: dict[str, tuple[str, _Parser, str]] = {
    "target-p99-ms": (
        "target_p99_ms",
        _positive_number,
        "a positive number of milliseconds, e.g. target-p99-ms = 1000",
    ),
    "min-users": ("min_users", _users, "an integer >= 1, e.g. min-users = 1"),
    "max-users": ("max_users", _users, "an integer >= 1, e.g. max-users = 32"),
    "tolerance": ("tolerance", _ratio, "a ratio in [0, 1), e.g. tolerance = 0.1 for 10 %"),
    "production-run-duration": (
        "max_duration_s",
        _positive_number,
        "a positive number of seconds, e.g. production-run-duration = 1200",
    ),
    "weights-module": (
        "weights_module",
        _module_path,
        "a dotted module path, e.g. weights-module = loadtest.distribution_weights",
    ),
    "spike-target-rps": (
        "spike_target_rps",
        _positive_number,
        "a positive number of requests per second, e.g. spike-target-rps = 100",
    ),
    "spike-duration": (
        "spike_duration_s",
        _positive_number,
        "a positive number of seconds, e.g. spike-duration = 30",
    ),
    "host": ("host", _host, "an http:// or https:// URL, e.g. host = http://api:8000"),
    "H": ("host", _host, "an http:// or https:// URL, e.g. H = http://api:8000"),
    "test-mode": (
        "mode",
        _modes,
        "one or more of INDIVIDUAL PRODUCTION EXPLORATION SPIKE (any case, space or comma "
        "separated; ENDPOINT_LATENCY is ignored), e.g. test-mode = INDIVIDUAL PRODUCTION",
    ),
    "mode": (
        "mode",
        _modes,
        "one or more of INDIVIDUAL PRODUCTION EXPLORATION SPIKE (any case, space or comma "
        "separated; ENDPOINT_LATENCY is ignored), e.g. mode = INDIVIDUAL PRODUCTION",
    ),
}

_STEPS = "the search sizes its own steps"
_TICKS = "the search decides on sample counts and settle_s, not on fixed ticks"
_USERS = "the search chooses the user count"
_REPORT = "results go to pytest's report, the JSON/Markdown reports and the baseline file"
_IGNORED: dict[str, str] = {
    "increase-step": _STEPS,
    "step": _STEPS,
    "decrease-rate": _STEPS,
    "check-interval": _TICKS,
    "settle-periods": _TICKS,
    "stable-periods-required": "the search probes upward on its own once P99 is in band",
    "buffer-size": "every sample of a measurement window is kept",
    "individual-run-max-duration": (
        "the one cap per search is max_duration_s (production-run-duration)"
    ),
    "users": _USERS,
    "u": _USERS,
    "spawn-rate": _USERS,
    "r": _USERS,
    "run-time": "max_duration_s caps each search; a hard kill would lose the results",
    "t": "max_duration_s caps each search; a hard kill would lose the results",
    "output-file": _REPORT,
    "csv": _REPORT,
    "csv-full-history": _REPORT,
    "html": _REPORT,
    "json": _REPORT,
    "headless": "a pytest run has no web UI",
    "autostart": "a pytest run has no web UI",
    "only-summary": "pytest prints its own summary",
    "loglevel": "use pytest's --log-level",
    "L": "use pytest's --log-level",
    "logfile": "use pytest's --log-file",
    "locustfile": "the load is the test's TaskSets and weights module, not a locustfile",
    "f": "the load is the test's TaskSets and weights module, not a locustfile",
    "endpoint-latency-warmup-successes": _ENDPOINT_LATENCY_REASON,
    "endpoint-latency-sample-count": _ENDPOINT_LATENCY_REASON,
    "endpoint-latency-request-timeout-seconds": _ENDPOINT_LATENCY_REASON,
    "endpoint-latency-consecutive-failure-limit": _ENDPOINT_LATENCY_REASON,
}


def _unknown_reason(key: str) -> str:
    close = difflib.get_close_matches(key, list(_MAPPED) + list(_IGNORED), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"not an ml-loadtest or Locust setting pytest-mlload reads{hint}"


# ---------------------------------------------------------------------------- loader


def load_locust_conf(path: str | Path) -> LocustConf:
    """Parse the ``locust.conf`` at ``path``; see the module docstring for keys and syntax.

    Raises :class:`~pytest_mlload.errors.ConfigError` for a missing or unreadable file, a
    line that is not ``key = value``, and an empty, bare or invalid value of a mapped key
    (naming the file, the line number, the key and the accepted form).
    """
    shown = str(path)
    text = _read_conf_text(path, shown)
    state = _ConfState()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;[" or line.startswith("---"):
            continue
        _read_line(state, shown, lineno, line)
    _check_user_range(state, shown)
    return LocustConf(
        path=shown,
        settings=state.settings,
        host=state.host,
        ignored=tuple(f"{k} ({reason})" for k, reason in state.ignored.items()),
    )


@dataclass(slots=True)
class _ConfState:
    """What :func:`load_locust_conf` has gathered so far (later lines overwrite earlier ones)."""

    settings: dict[str, Any] = field(default_factory=dict)
    lines: dict[str, tuple[int, str]] = field(default_factory=dict)  # setting -> (line, key)
    host: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)  # key as written -> reason


def _read_conf_text(path: str | Path, shown: str) -> str:
    """The file's text, or a ConfigError naming the file and what went wrong."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"locust config file {shown} does not exist; check the path given to --mlload-config"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"locust config file {shown} cannot be read: {exc}") from None


def _read_line(state: _ConfState, shown: str, lineno: int, line: str) -> None:
    """Fold one non-blank, non-comment line into ``state``."""
    match = _LINE.match(line)
    if match is None:
        raise ConfigError(
            f"{shown}:{lineno}: cannot read {line!r}: expected 'key = value', "
            f"'key: value' or a bare flag such as 'headless'"
        )
    key = match["key"].lstrip("-")
    bare = match["equal"] is None
    value = (match["value"] or "").strip()
    lookup = key.replace("_", "-")

    if lookup not in _MAPPED:
        state.ignored.pop(key, None)
        state.ignored[key] = _IGNORED.get(lookup) or _unknown_reason(key)
        return

    name, parse, form = _MAPPED[lookup]
    if bare or not value:
        missing = "has no value" if bare else "is empty"
        raise ConfigError(f"{shown}:{lineno}: {key} {missing}: expected {form}")
    try:
        parsed = parse(value)
    except ValueError:
        raise ConfigError(
            f"{shown}:{lineno}: {key} = {value!r} is not valid: expected {form}"
        ) from None
    _set(state, name, parsed, lineno, key)


def _set(state: _ConfState, name: str, parsed: Any, lineno: int, key: str) -> None:
    """Record a parsed mapped value: the host apart, modes with their ENDPOINT_LATENCY note."""
    if name == "host":
        state.host = parsed
        return
    if name == "mode":
        modes, endpoint_latency = parsed
        for stale in [k for k in state.ignored if k.endswith(" ENDPOINT_LATENCY")]:
            del state.ignored[stale]  # the last mode line wins, its note with it
        if endpoint_latency:
            state.ignored[f"{key} ENDPOINT_LATENCY"] = _ENDPOINT_LATENCY_REASON
        if not modes:  # only ENDPOINT_LATENCY: leave the mode to the other layers
            state.settings.pop("mode", None)
            return
        parsed = modes
    state.settings[name] = parsed
    state.lines[name] = (lineno, key)


def _check_user_range(state: _ConfState, shown: str) -> None:
    """A ConfigError naming both lines when min-users exceeds max-users."""
    settings = state.settings
    if settings.get("min_users", 1) > settings.get("max_users", math.inf):
        min_line, min_key = state.lines["min_users"]
        max_line, max_key = state.lines["max_users"]
        raise ConfigError(
            f"{shown}:{min_line}: {min_key} = {settings['min_users']} exceeds "
            f"{max_key} = {settings['max_users']} (line {max_line}): expected "
            f"{min_key} <= {max_key}"
        )
