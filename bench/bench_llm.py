"""TTFT / TPOT / request rate of ``openai_chat`` under Locust against the demo engine's truth.

    PYTHONPATH=. python bench/bench_llm.py [--users 2,4,8,12,16] [--reject-stream-options]

One check-mode run (one held window) per user count against one demo server (engine knobs
at their defaults: B=8, 0.05 ms per prompt token, d(b) = 4 + 0.5·b ms; 512-word prompts,
8 output tokens). Prints measured vs :func:`pytest_mlload.testing.llm.truth` and the
generator's CPU per streamed chunk. Past the batch the truth's TTFT is a mean, so the table
compares means there and medians below it.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")  # this process only builds the class

import numpy as np  # noqa: E402
from _common import stop_on_sigterm  # noqa: E402

from pytest_mlload.config import RunSettings  # noqa: E402
from pytest_mlload.load.engine import run_capacity  # noqa: E402
from pytest_mlload.targets import openai_chat  # noqa: E402
from pytest_mlload.testing.demo import DemoServerProcess  # noqa: E402
from pytest_mlload.testing.llm import EngineKnobs, truth  # noqa: E402

PROMPT, OUT = 512, 8


def main() -> None:
    """Run the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="2,4,8,12,16")
    parser.add_argument("--reject-stream-options", action="store_true")
    args = parser.parse_args()
    stop_on_sigterm()
    chat = openai_chat(model="demo", prompt_tokens=PROMPT, max_tokens=OUT)
    settings = RunSettings(target_p99_ms=2000, min_samples=200, measure_s=4, max_duration_s=30)
    print(
        f"{'users':>5} {'ttft ms':>16} {'tpot ms':>14} {'req/s':>14} {'ttft-ttfb':>9} "
        f"{'source':>7} {'CPU s/1k chunks':>16}"
    )
    with DemoServerProcess(llm_stream_options=2 if args.reject_stream_options else 0) as server:
        for users in (int(u) for u in args.users.split(",")):
            events: list[dict] = []
            result = run_capacity(
                chat, host=server.url, settings=settings, hold_users=users, on_event=events.append
            )
            ev = next(
                (e for e in events if e["event"] == "stream" and e["phase"] == "measure"), None
            )
            if result.status != "converged" or ev is None:
                print(f"{users:>5} {result.status}: {result.reason}")
                continue
            t = truth(EngineKnobs(), concurrency=users, prompt_tokens=PROMPT, output_tokens=OUT)
            ttft, ttfb = np.array(ev["ttft_ms"]), np.array(ev["ttfb_ms"])
            tpot = np.array(ev["tpot_ms"], dtype=float)
            mid = np.median if t.per_request else np.mean
            chunks_per_s = result.capacity_rps * (OUT + 1)  # content + role chunks
            cpu = (result.generator_cpu_ratio or 0.0) / chunks_per_s * 1000
            print(
                f"{users:>5} {mid(ttft):7.2f}/{t.ttft_ms:<7.2f} {np.median(tpot):6.3f}/"
                f"{t.tpot_ms:<6.3f} {result.capacity_rps:6.1f}/{t.rps:<6.1f} "
                f"{np.median(ttft - ttfb):9.2f} {ev['summary']['token_source']:>7} {cpu:16.4f}"
            )


if __name__ == "__main__":
    main()
