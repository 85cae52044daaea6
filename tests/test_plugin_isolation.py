"""The plugin around the hardened driver (issue 11), in inner pytest sessions (pytester,
subprocess mode, so Locust never touches this process).

A load-test module that imports Locust keeps working without Locust's own pytest plugin
(``-p no:locust``), with it, and under pytest-timeout, all with ``-W error``; and a TaskSet
that raises fails its test naming the exception and the line (how fast: the engine test).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from plugin_support import FAST_MARKER, TASKS_SOURCE, helper_source

from pytest_mlload.testing.demo import DemoServerProcess

pytestmark = pytest.mark.engine

TESTS = f"""
import pytest
from mlhelp import assert_process_clean
from tasks import Classify  # imports Locust, at collection


@pytest.mark.capacity({FAST_MARKER})
def test_classify(mlload):
    result = mlload.run(Classify)
    assert result.status == "converged", result.reason
    assert result.requests > 100 and result.failures == 0
    assert_process_clean()
    print("\\nREQUESTS=%d" % result.requests)
"""

BROKEN = f"""
import pytest
from locust import TaskSet


class Broken(TaskSet):
    endpoint = "/v1/classify"

    def test_endpoint(self):
        raise ValueError("tokenizer not loaded")


@pytest.mark.capacity({FAST_MARKER})
def test_broken(mlload):
    mlload.run(Broken)
"""


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServerProcess]:
    with DemoServerProcess() as server:
        yield server


@pytest.fixture(autouse=True)
def _unpatched_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("LOCUST_SKIP_MONKEY_PATCH", "LOCUST_SKIP_URLLIB3_PATCH", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize(
    "flags",
    [("-p", "no:locust"), (), ("-p", "no:locust", "--timeout", "120"), ("--timeout", "120")],
    ids=["no-locust-plugin", "locust-plugin", "no-locust-plugin-timeout", "locust-timeout"],
)
def test_a_module_importing_locust_runs_with_and_without_locusts_plugin(
    pytester: pytest.Pytester, demo: DemoServerProcess, flags: tuple[str, ...]
) -> None:
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(tasks=TASKS_SOURCE, mlhelp=helper_source(), test_capacity=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error", "-s", "--mlload-host", demo.url, *flags,
        timeout=900,
    )  # fmt: skip
    out = "\n".join(result.outlines + result.errlines)
    assert result.ret == 0, out
    result.assert_outcomes(passed=1)
    match = re.search(r"^REQUESTS=(\d+)$", out, re.M)
    assert match is not None and int(match[1]) > 100, out


def test_a_taskset_that_raises_fails_its_test_within_seconds_naming_the_line(
    pytester: pytest.Pytester, demo: DemoServerProcess
) -> None:
    pytester.makeini("[pytest]\n")
    written = pytester.makepyfile(test_capacity=BROKEN).read_text().splitlines()
    line = 1 + written.index('        raise ValueError("tokenizer not loaded")')
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mlload-host", demo.url, timeout=900
    )
    out = "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(failed=1)
    assert "UserCodeError" in out and "ValueError: tokenizer not loaded" in out, out
    assert f"test_capacity.py:{line}" in out and "Broken.test_endpoint" in out, out


def _closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, then released: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_secret_in_any_output_or_file(
    pytester: pytest.Pytester, demo: DemoServerProcess
) -> None:
    """Credentials in --mlload-host and --mlload-prometheus-url: recorded, reported, with
    KEDA and JUnit output; neither secret appears in the output or in any file written."""
    host_secret, prom_secret = "hostpw-6a1f", "prompw-93c2"
    host = demo.url.replace("http://", f"http://mluser:{host_secret}@")
    prom = f"http://admin:{prom_secret}@127.0.0.1:{_closed_port()}"
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(tasks=TASKS_SOURCE, mlhelp=helper_source(), test_capacity=TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "--mlload-host", host, "--mlload-prometheus-url", prom,
        "--mlload-update-baseline", "--mlload-report", "r.json", "--junitxml", "j.xml",
        timeout=900,
    )  # fmt: skip
    out = "\n".join(result.outlines + result.errlines)
    result.assert_outcomes(passed=1)
    leaks = [("output", out)] + [
        (str(p.relative_to(pytester.path)), p.read_text(errors="replace"))
        for p in pytester.path.rglob("*")
        if p.is_file()
    ]
    found = [name for name, text in leaks if host_secret in text or prom_secret in text]
    assert not found, f"a secret is in: {found}"
