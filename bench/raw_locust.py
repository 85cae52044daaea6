"""Raw Locust, the reference for bench_generator.py: a plain FastHttpUser doing GET /fast.

    python bench/raw_locust.py --host http://127.0.0.1:PORT --users N [--window-s 6] [--seed]

``--seed`` runs the seed TaskSet ``seed_tasks.Fast`` (catch_response) inside a FastHttpUser
the way the load driver wraps it, but without the driver: the same per-request work as the
driver's ``seed`` variant minus the driver's own bookkeeping.

Run as its own process (Locust patches it with gevent). Spawns N users the way the load
driver does (spawn rate max(100, 20 N), wait until all run), settles ``--settle-s``, then counts
completed requests from Locust's own stats over ``--window-s`` (no extra listener: this is
Locust as shipped). Bounded by time and by ``--max-requests``. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gevent
from locust import FastHttpUser, task
from locust.env import Environment


class RawFast(FastHttpUser):
    """The plainest Locust user against the trivial endpoint."""

    @task
    def fast(self) -> None:
        self.client.get("/fast")


class RawSeed(FastHttpUser):
    """seed_tasks.Fast wrapped like the driver wraps a seed TaskSet (one instance per user)."""

    def on_start(self) -> None:
        from seed_tasks import Fast

        self._taskset = Fast(self)

    @task
    def run_endpoint(self) -> None:
        self._taskset.test_endpoint()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--settle-s", type=float, default=1.0)
    ap.add_argument("--window-s", type=float, default=6.0)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--seed", action="store_true", help="run the seed TaskSet seed_tasks.Fast")
    args = ap.parse_args()
    if not args.host.startswith("http://127.0.0.1:"):
        raise SystemExit(f"refusing a non-loopback host: {args.host}")
    env = Environment(user_classes=[RawSeed if args.seed else RawFast], host=args.host)
    runner = env.create_local_runner()
    t_start = time.monotonic()
    runner.start(args.users, spawn_rate=max(100, 20 * args.users))
    deadline = time.monotonic() + 10.0
    while runner.user_count != args.users and time.monotonic() < deadline:
        gevent.sleep(0.01)
    gevent.sleep(args.settle_s)
    total = env.stats.total
    n0, f0, t0, c0 = total.num_requests, total.num_failures, time.monotonic(), time.process_time()
    stop = t0 + args.window_s
    while time.monotonic() < stop and total.num_requests - n0 < args.max_requests:
        gevent.sleep(0.05)
    n1, f1, t1, c1 = total.num_requests, total.num_failures, time.monotonic(), time.process_time()
    runner.quit()
    out = {
        "rps": (n1 - n0 - (f1 - f0)) / (t1 - t0),
        "requests": n1 - n0,
        "failures": f1 - f0,
        "window_s": t1 - t0,
        "cpu_ratio": (c1 - c0) / (t1 - t0),
        "p50_ms": total.get_response_time_percentile(0.5),
        "startup_s": t0 - t_start,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
