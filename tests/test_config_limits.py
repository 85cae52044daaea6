"""Absurd capacity settings are usage errors naming the value and the limit (issue 11)."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_mlload.config import RunSettings, resolve_settings
from pytest_mlload.errors import ConfigError

# -- row 5: absurd marker values --------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named", "limit"),
    [
        ({"max_users": 10**9}, "max_users=1000000000", "limit of 10000 users"),
        ({"spike_target_rps": 5e8}, "spike_target_rps=500000000.0", "limit of 100000 req/s"),
        (
            {"spike_target_rps": 50_000.0, "spike_duration_s": 100_000.0},
            "spike_target_rps x spike_duration_s = 5e+09 arrivals",
            "limit of 1000000",
        ),
    ],
    ids=["max_users", "spike_rate", "spike_arrivals"],
)
def test_absurd_values_are_usage_errors_naming_value_and_limit(
    kwargs: dict[str, Any], named: str, limit: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_settings(marker=kwargs)
    assert named in str(info.value) and limit in str(info.value)


def test_large_but_sane_values_stay_accepted() -> None:
    s = RunSettings(max_users=10_000, spike_target_rps=10_000.0, spike_duration_s=100.0)
    assert (s.max_users, s.spike_target_rps * s.spike_duration_s) == (10_000, 1_000_000.0)
