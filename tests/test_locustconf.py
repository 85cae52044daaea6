"""Unit tests of pytest_mlload.locustconf: ml-loadtest locust.conf files, read as Locust would."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_mlload.config import resolve_settings, setting_fields
from pytest_mlload.errors import ConfigError
from pytest_mlload.locustconf import LocustConf, load_locust_conf

# Verbatim from the ml-loadtest 1.10.0a1 README, "Configuration File" section.
README_CONF = """\
; Locust configuration file
host = http://api:8000
headless
only-summary
run-time = 2h
loglevel = INFO
csv = report
html = report.html

; Load test settings
target-p99-ms = 1000
min-users = 1
max-users = 32
increase-step = 1
decrease-rate = 0.8
check-interval = 30
settle-periods = 1
tolerance = 0.1
production-run-duration = 1200
weights-module = loadtest.distribution_weights
"""

# ml-loadtest 1.12.5: step replaces increase-step/decrease-rate, --test-mode became --mode.
CONF_1_12 = """\
host = https://models.internal:8443
headless
target-p99-ms = 250
min-users = 2
max-users = 64
step = 1
check-interval = 30
settle-periods = 1
tolerance = 0.05
production-run-duration = 600
weights-module = loadtest.distribution_weights
spike-target-rps = 150
spike-duration = 45
mode = endpoint_latency individual
endpoint-latency-sample-count = 20
"""


def write(tmp_path: Path, text: str, name: str = "locust.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def ignored_keys(conf: LocustConf) -> list[str]:
    return [entry.split(" (", 1)[0] for entry in conf.ignored]


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_locust_conf(write(tmp_path, text))
    return str(info.value)


# --------------------------------------------------------------------------- real files


def test_readme_example_maps_every_tool_setting(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, README_CONF))
    assert conf.settings == {
        "target_p99_ms": 1000,
        "min_users": 1,
        "max_users": 32,
        "tolerance": 0.1,
        "max_duration_s": 1200,
        "weights_module": "loadtest.distribution_weights",
    }
    assert type(conf.settings["min_users"]) is int
    assert type(conf.settings["target_p99_ms"]) is float
    assert conf.host == "http://api:8000"
    assert conf.path == str(tmp_path / "locust.conf")


def test_readme_example_warns_once_about_every_key_that_means_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, README_CONF)
    conf = load_locust_conf(path)
    expected = [
        "headless",
        "only-summary",
        "run-time",
        "loglevel",
        "csv",
        "html",
        "increase-step",
        "decrease-rate",
        "check-interval",
        "settle-periods",
    ]
    assert ignored_keys(conf) == expected
    assert "increase-step (the search sizes its own steps)" in conf.ignored
    assert all(re.fullmatch(r"\S+ \(.+\)", entry) for entry in conf.ignored)
    warning = conf.warning()
    assert warning is not None
    assert "\n" not in warning
    assert str(path) in warning
    for key in expected:
        assert re.search(rf"(^|; |: ){re.escape(key)} \(", warning), key
    # A mapped key is never reported as ignored.
    assert "target-p99-ms" not in warning
    assert "weights-module" not in warning


def test_1_12_file_with_step_and_endpoint_latency_mode(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, CONF_1_12))
    assert conf.settings == {
        "target_p99_ms": 250,
        "min_users": 2,
        "max_users": 64,
        "tolerance": 0.05,
        "max_duration_s": 600,
        "weights_module": "loadtest.distribution_weights",
        "spike_target_rps": 150,
        "spike_duration_s": 45,
        "mode": ("individual",),
    }
    assert conf.host == "https://models.internal:8443"
    keys = ignored_keys(conf)
    assert keys == [
        "headless",
        "step",
        "check-interval",
        "settle-periods",
        "mode ENDPOINT_LATENCY",
        "endpoint-latency-sample-count",
    ]
    warning = conf.warning()
    assert warning is not None and "ENDPOINT_LATENCY" in warning and "step (" in warning


def test_file_with_only_mapped_keys_has_no_warning(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "target-p99-ms = 500\nhost = http://x:1\n"))
    assert conf.ignored == ()
    assert conf.warning() is None


def test_empty_file_gives_nothing(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "\n# nothing\n"))
    assert conf == LocustConf(
        path=str(tmp_path / "locust.conf"), settings={}, host=None, ignored=()
    )


# --------------------------------------------------------------------------- syntax


def test_colons_comments_sections_underscores_and_argparse_style(tmp_path: Path) -> None:
    text = """\
# hash comment
; semicolon comment
---
[locust]
target-p99-ms: 800
min_users = 3
--max-users 12
tolerance=0.2    ; inline comment after whitespace
weights-module = "loadtest.weights"   # quoted, then a comment
host: http://api:8000/base#frag
[ml-loadtest]
production-run-duration 900
"""
    conf = load_locust_conf(write(tmp_path, text))
    assert conf.settings == {
        "target_p99_ms": 800,
        "min_users": 3,
        "max_users": 12,
        "tolerance": 0.2,
        "weights_module": "loadtest.weights",
        "max_duration_s": 900,
    }
    # "#" without whitespace before it is part of the value, as in configargparse.
    assert conf.host == "http://api:8000/base#frag"
    assert conf.ignored == ()


def test_keys_are_case_sensitive_like_locust(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "Target-P99-MS = 10\n"))
    assert conf.settings == {}
    assert ignored_keys(conf) == ["Target-P99-MS"]


def test_last_occurrence_wins(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "max-users = 8\ncsv = a\nmax_users = 16\ncsv = b\n"))
    assert conf.settings == {"max_users": 16}
    assert ignored_keys(conf) == ["csv"]


@pytest.mark.parametrize(
    ("line", "modes"),
    [
        ("test-mode = INDIVIDUAL PRODUCTION", ("individual", "production")),
        ("test-mode = SPIKE, individual", ("individual", "spike")),
        ("mode = [PRODUCTION, EXPLORATION]", ("production", "exploration")),
        ('mode = ["spike", "Production"]', ("production", "spike")),
        ("mode = individual individual", ("individual",)),
    ],
)
def test_modes_any_case_any_separator_fixed_order(
    tmp_path: Path, line: str, modes: tuple[str, ...]
) -> None:
    conf = load_locust_conf(write(tmp_path, line + "\n"))
    assert conf.settings == {"mode": modes}
    assert conf.ignored == ()


def test_endpoint_latency_alone_leaves_the_mode_unset(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "test-mode = INDIVIDUAL\nmode = ENDPOINT_LATENCY\n"))
    assert "mode" not in conf.settings
    assert ignored_keys(conf) == ["mode ENDPOINT_LATENCY"]


def test_a_later_mode_line_drops_the_earlier_endpoint_latency_note(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "mode = ENDPOINT_LATENCY SPIKE\nmode = SPIKE\n"))
    assert conf.settings == {"mode": ("spike",)}
    assert conf.ignored == ()


def test_short_locust_keys(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "H = http://h:1\nu = 10\nr = 2\nt = 5m\nf = x.py\n"))
    assert conf.host == "http://h:1"
    assert ignored_keys(conf) == ["u", "r", "t", "f"]


def test_users_and_spawn_rate_are_ignored_because_the_search_chooses(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "users = 100\nspawn-rate = 10\n"))
    assert conf.settings == {}
    assert all("the search chooses the user count" in e for e in conf.ignored)


def test_unknown_key_is_ignored_with_a_hint(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, "target-p99 = 500\nfrobnicate = 1\n"))
    assert conf.settings == {}
    first, second = conf.ignored
    assert first.startswith("target-p99 (") and "did you mean target-p99-ms?" in first
    assert second.startswith("frobnicate (") and "did you mean" not in second


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "lineno", "key", "form"),
    [
        ("\n\ntarget-p99-ms = fast\n", 3, "target-p99-ms", "positive number of milliseconds"),
        ("target-p99-ms = -5\n", 1, "target-p99-ms", "positive number"),
        ("target-p99-ms = nan\n", 1, "target-p99-ms", "positive number"),
        ("min-users = 0\n", 1, "min-users", "integer >= 1"),
        ("# c\nmax-users = 2.5\n", 2, "max-users", "integer >= 1"),
        ("tolerance = 10\n", 1, "tolerance", "ratio in [0, 1)"),
        ("production-run-duration = 20m\n", 1, "production-run-duration", "seconds"),
        ("weights-module = loadtest/weights.py\n", 1, "weights-module", "dotted module path"),
        ("spike-target-rps = 0\n", 1, "spike-target-rps", "requests per second"),
        ("spike-duration = soon\n", 1, "spike-duration", "seconds"),
        ("host = api:8000\n", 1, "host", "http:// or https:// URL"),
        ("test-mode = INDIVIDUAL BURST\n", 1, "test-mode", "INDIVIDUAL PRODUCTION"),
        ("mode = ,\n", 1, "mode", "INDIVIDUAL PRODUCTION"),
    ],
)
def test_bad_value_names_file_line_key_and_form(
    tmp_path: Path, text: str, lineno: int, key: str, form: str
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'locust.conf'}:{lineno}: {key} ")
    assert "expected" in message and form in message


@pytest.mark.parametrize(
    ("text", "key", "what"),
    [
        ("target-p99-ms =\n", "target-p99-ms", "is empty"),
        ("host:\n", "host", "is empty"),
        ("max-users\n", "max-users", "has no value"),
    ],
)
def test_empty_or_bare_mapped_key_is_an_error(
    tmp_path: Path, text: str, key: str, what: str
) -> None:
    message = error_of(tmp_path, text)
    assert f"locust.conf:1: {key} {what}: expected " in message


def test_empty_value_of_an_ignored_key_is_not_an_error(tmp_path: Path) -> None:
    assert ignored_keys(load_locust_conf(write(tmp_path, "csv =\n"))) == ["csv"]


def test_min_above_max_names_both_lines(tmp_path: Path) -> None:
    message = error_of(tmp_path, "min-users = 40\ncsv = x\nmax-users = 32\n")
    assert message.startswith(f"{tmp_path / 'locust.conf'}:1: min-users = 40 exceeds")
    assert "max-users = 32 (line 3)" in message


def test_unreadable_line_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "target-p99-ms = 1\n= 5\n")
    assert "locust.conf:2:" in message and "key = value" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "locust.conf"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_locust_conf(missing)


def test_config_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        load_locust_conf(write(tmp_path, "min-users = many\n"))


# --------------------------------------------------------------------------- with RunSettings


def known_settings(conf: LocustConf) -> dict[str, object]:
    # RunSettings is growing fields; test only those it has today.
    names = {f.name for f in setting_fields()}
    return {k: v for k, v in conf.settings.items() if k in names}


@pytest.mark.parametrize("text", [README_CONF, CONF_1_12])
def test_parsed_settings_resolve_into_run_settings(tmp_path: Path, text: str) -> None:
    conf = load_locust_conf(write(tmp_path, text))
    given = known_settings(conf)
    assert {"target_p99_ms", "min_users", "max_users", "tolerance"} <= set(given)
    run = resolve_settings(cli=given)
    for name, value in given.items():
        assert getattr(run, name) == value, name


def test_marker_still_beats_the_conf_layer(tmp_path: Path) -> None:
    conf = load_locust_conf(write(tmp_path, README_CONF))
    run = resolve_settings(marker={"max_users": 8}, cli=known_settings(conf))
    assert run.max_users == 8
    assert run.target_p99_ms == 1000
