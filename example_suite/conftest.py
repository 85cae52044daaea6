"""Example suite wiring: without --mlload-host, start the bundled demo server.

The demo server runs in its own process on a free loopback port and is stopped (by PID)
when the session ends. Give --mlload-host to test a real service instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_mlload.testing.demo import DemoServerProcess


@pytest.fixture(scope="session")
def mlload_host(pytestconfig: pytest.Config) -> Iterator[str]:
    given = pytestconfig.getoption("mlload_host") or pytestconfig.getini("mlload_host")
    if given:
        yield given
        return
    with DemoServerProcess() as server:
        yield server.url
