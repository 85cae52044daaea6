"""The gate messages README.md and example_suite/README.md quote, printed by real runs.

1. ``slowed``: the example suite's ``test_classify_capacity`` against a demo server started
   30 % slower (``--slowdown 1.3``), judged against the committed example baseline.
2. ``llm``: the example suite's ``test_chat_capacity`` records a one-run baseline on the
   unchanged demo engine, then runs again with the decode step 20 % slower
   (``llm_decode_ms`` 4.0 -> 4.8, ``llm_decode_ms_per_seq`` 0.5 -> 0.6).

Each part runs a copy of ``example_suite/`` in a temporary directory (baseline keys are
relative to the baseline file, so the copy keeps them), and never writes the repository.

Each pytest session runs in its own process against a demo server on 127.0.0.1, stopped by
PID; each is bounded by a subprocess timeout. Prints each session's outcome and its failing
verdicts' messages, as the test failure shows them.

    python bench/bench_examples.py            # both, ~2 min
    python bench/bench_examples.py slowed
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from _common import BENCH_DIR, BenchError, demo_server, header, run_main, say, stop_on_sigterm

SUITE = os.path.join(os.path.dirname(BENCH_DIR), "example_suite")
SESSION_TIMEOUT_S = 300


def suite_copy(tmp: str) -> str:
    """A copy of the example suite (its committed baseline included) under ``tmp``."""
    return shutil.copytree(SUITE, os.path.join(tmp, "example_suite"))


def session(suite: str, url: str, test: str, *extra: str) -> dict[str, Any]:
    """One pytest session in the suite copy ``suite``; returns its report's record of ``test``."""
    report = os.path.join(suite, "report.json")  # the copy is temporary; each session rewrites it
    cmd = [
        sys.executable, "-m", "pytest", f"test_capacity.py::{test}", "-q",
        "--mlload-host", url, "--mlload-report", report, *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=suite, capture_output=True, text=True, timeout=SESSION_TIMEOUT_S)
    if not os.path.exists(report):
        raise BenchError(f"no report from {' '.join(cmd)}:\n{proc.stdout[-2000:]}")
    with open(report, encoding="utf-8") as fh:
        tests = json.load(fh)["tests"]
    os.unlink(report)  # a later session that writes none must not read this one's
    say(f"$ pytest {test} {' '.join(extra)} -> exit {proc.returncode}")
    [record] = [t for t in tests if t["key"].endswith(f"::{test}")]
    return dict(record)


def show(record: dict[str, Any]) -> None:
    """The outcome and every failing verdict's message."""
    say(f"outcome: {record['outcome']}")
    for verdict in record["verdicts"]:
        if verdict["verdict"] not in ("pass", "improvement"):
            say(f"  {verdict['metric']}: {verdict['verdict']}: {verdict['message']}")


def slowed() -> None:
    header("bench_examples slowed: test_classify_capacity, demo --slowdown 1.3")
    with tempfile.TemporaryDirectory() as tmp, demo_server(slowdown=1.3) as demo:
        show(session(suite_copy(tmp), demo.url, "test_classify_capacity"))


def llm() -> None:
    header("bench_examples llm: test_chat_capacity, one-run baseline, then decode 20 % slower")
    with tempfile.TemporaryDirectory() as tmp, demo_server() as demo:
        suite = suite_copy(tmp)
        os.unlink(os.path.join(suite, "mlload-baseline.yaml"))  # a fresh one-run baseline
        show(session(suite, demo.url, "test_chat_capacity", "--mlload-update-baseline"))
        demo.set_config(llm_decode_ms=4.8, llm_decode_ms_per_seq=0.6)
        show(session(suite, demo.url, "test_chat_capacity"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = {"slowed": slowed, "llm": llm}
    parser.add_argument("which", nargs="*", help=f"any of {', '.join(parts)} (default: all)")
    args = parser.parse_args()
    unknown = [name for name in args.which if name not in parts]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: choose from {', '.join(parts)}")
    stop_on_sigterm()
    for name in args.which or list(parts):
        parts[name]()
    return 0


if __name__ == "__main__":
    run_main(main)
