"""The gate messages README.md and example_suite/README.md quote, printed by real runs.

1. ``slowed``: the example suite's ``test_classify_capacity`` against a demo server started
   30 % slower (``--slowdown 1.3``), judged against the committed example baseline
   (``example_suite/mlload-baseline.yaml``, copied: this script never writes it).
2. ``llm``: the example suite's ``test_chat_capacity`` records a one-run baseline on the
   unchanged demo engine (into a temporary file), then runs again with the decode step 30 %
   slower (``llm_decode_ms`` 4.0 -> 5.2, ``llm_decode_ms_per_seq`` 0.5 -> 0.65).

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


def session(url: str, test: str, baseline: str, *extra: str) -> dict[str, Any]:
    """One example-suite pytest session; returns its JSON report's record of ``test``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        cmd = [
            sys.executable, "-m", "pytest", f"{SUITE}/test_capacity.py::{test}", "-q",
            "--mlload-host", url, "--mlload-baseline", baseline, "--mlload-report", report,
            *extra,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=SUITE, capture_output=True, text=True, timeout=SESSION_TIMEOUT_S
        )
        if not os.path.exists(report):
            raise BenchError(f"no report from {' '.join(cmd)}:\n{proc.stdout[-2000:]}")
        with open(report, encoding="utf-8") as fh:
            tests = json.load(fh)["tests"]
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
    with tempfile.TemporaryDirectory() as tmp:
        baseline = os.path.join(tmp, "mlload-baseline.yaml")
        shutil.copyfile(os.path.join(SUITE, "mlload-baseline.yaml"), baseline)
        with demo_server(slowdown=1.3) as demo:
            show(session(demo.url, "test_classify_capacity", baseline))


def llm() -> None:
    header("bench_examples llm: test_chat_capacity, one-run baseline, then decode 30 % slower")
    with tempfile.TemporaryDirectory() as tmp, demo_server() as demo:
        baseline = os.path.join(tmp, "llm-baseline.yaml")
        show(session(demo.url, "test_chat_capacity", baseline, "--mlload-update-baseline"))
        demo.set_config(llm_decode_ms=5.2, llm_decode_ms_per_seq=0.65)
        show(session(demo.url, "test_chat_capacity", baseline))


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
