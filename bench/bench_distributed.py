"""Distributed load: single process vs Locust workers, same run, same server.

    python bench/bench_distributed.py [--quick] [--rounds R] [--users N] [--workers W]

1. **Generator throughput.** Successful requests/s of ``GET /fast`` (seed TaskSet
   ``seed_tasks.Fast``) against ``bench/trivial_server.py`` (a canned 200 for every request,
   so the server takes as little of the 2 shared cores as possible; ``--demo-fast`` uses the
   demo server's ``/fast`` instead) at a fixed user count (``min_users = max_users = N``, 10 s
   P99 target, so the search goes straight to its measure window), once in one process
   (``workers=0``) and once with ``workers=W`` local worker processes behind a Locust master.
   The ratio is the headline (issue 13 aims at >= 1.6x with 2 workers); wrk at N connections
   gives the server's limit. The server, the master and the workers share the 2 cores.
2. **Capacity agreement.** The full capacity search of ``POST /v1/classify`` on a demo server
   with 4 slots of 20 ms (truth 200 req/s), single process vs ``workers=W``, interleaved;
   the ratio of the mean capacities (aim: within +-5 %) and each run's P99.

Runs alternate (single, workers, then reversed) to cancel drift. CPU used by other jobs
during each run is shown, and a run during which they used more than 0.3 cores is marked
"(busy)". Exit non-zero only if something broke.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from _common import (
    BENCH_DIR,
    BenchError,
    CpuMeter,
    demo_server,
    header,
    run_main,
    say,
    skip_locust_patch,
    stop_on_sigterm,
    table,
    wrk,
)

skip_locust_patch()

import seed_tasks  # noqa: E402  (imports Locust, unpatched)

from pytest_mlload._io import stop_process  # noqa: E402
from pytest_mlload.config import RunSettings  # noqa: E402
from pytest_mlload.load.engine import run_capacity  # noqa: E402
from pytest_mlload.testing.demo import capacity_rps  # noqa: E402

WINDOW_S = 6.0
BUSY_CORES = 0.3
AIM_SPEEDUP = 1.6
AIM_AGREEMENT = 0.05
SLOTS, SERVICE_MS = 4, 20.0


@dataclass(frozen=True, slots=True)
class Server:
    """A server process on loopback: its URL and PID."""

    url: str
    pid: int


@contextlib.contextmanager
def trivial_server(timeout_s: float = 10.0) -> Iterator[Server]:
    """bench/trivial_server.py on a free loopback port; stopped by PID."""
    proc = subprocess.Popen(
        [sys.executable, os.path.join(BENCH_DIR, "trivial_server.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise BenchError(f"trivial_server.py printed no URL within {timeout_s:g} s")
        line = proc.stdout.readline().strip()
        if not line.startswith("URL http://127.0.0.1:"):
            raise BenchError(f"trivial_server.py said {line!r}")
        yield Server(url=line.removeprefix("URL "), pid=proc.pid)
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()


def measure(url: str, server_pid: int, target: type, settings: RunSettings) -> dict[str, Any]:
    """One run_capacity; its figures and the CPU other jobs used meanwhile."""
    meter = CpuMeter(server_pid)
    t0 = time.monotonic()
    res = run_capacity(target, host=url, settings=settings)
    cpu = meter.stop()
    # Saturating the generator is the point of part 1: the CPU guard marks such a run
    # inconclusive but still reports its measure window, which is what is compared.
    saturated = "generator was saturated" in res.reason
    if (res.status != "converged" and not saturated) or res.failures or not res.requests:
        raise BenchError(f"{settings.workers} workers: {res.status} {res.reason}")
    return {
        "rps": res.capacity_rps,
        "p99_ms": res.p99_ms,
        "users": res.users,
        "cpu_ratio": res.generator_cpu_ratio,
        "wall_s": time.monotonic() - t0,
        "others": cpu.others,
        "busy": cpu.others > BUSY_CORES,
    }


def rounds_of(args: argparse.Namespace, run: Any) -> tuple[list[list[Any]], dict[int, list]]:
    """Alternate single / workers for ``args.rounds`` rounds; every row and the figures."""
    rows: list[list[Any]] = []
    got: dict[int, list[dict[str, Any]]] = {0: [], args.workers: []}
    for rnd in range(args.rounds):
        order = (0, args.workers) if rnd % 2 == 0 else (args.workers, 0)
        for w in order:
            say(f"  round {rnd + 1}: workers={w} ...")
            r = run(w)
            got[w].append(r)
            cpu = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio'] * 100:.0f}"
            busy = f"{r['others']:.2f}" + (" (busy)" if r["busy"] else "")
            p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
            rows.append(
                [rnd + 1, w, f"{r['rps']:.1f}", r["users"], p99, cpu, busy, f"{r['wall_s']:.1f}"]
            )
            say(f"    {r['rps']:.1f} req/s at {r['users']} users")
    return rows, got


HEADERS = [
    "round",
    "workers",
    "req/s",
    "users",
    "P99 ms",
    "busiest generator CPU %",
    "other jobs cores",
    "wall s",
]


def part1(args: argparse.Namespace) -> tuple[float, int]:
    """Generator throughput on GET /fast; the speed-up and the busy-run count."""
    which = "demo server" if args.demo_fast else "trivial_server.py"
    say(
        f"\n## 1. Requests/s on GET /fast ({which}) at {args.users} users: one process vs "
        f"{args.workers} workers"
    )
    with demo_server() if args.demo_fast else trivial_server() as server:
        limit = wrk(server.url, "/fast", conns=args.users, duration_s=4.0).rps
        say(f"server {server.url}; wrk -t1 -c{args.users} GET /fast: {limit:.0f} req/s")

        def run(w: int) -> dict[str, Any]:
            settings = RunSettings(
                min_users=args.users,
                max_users=args.users,
                target_p99_ms=10_000,
                measure_s=WINDOW_S,
                max_duration_s=30,
                workers=w,
            )
            return measure(server.url, server.pid, seed_tasks.Fast, settings)

        rows, got = rounds_of(args, run)
    say(table(HEADERS, rows))
    ratios = [b["rps"] / a["rps"] for a, b in zip(got[0], got[args.workers], strict=True)]
    speedup = statistics.fmean(ratios)
    busy = sum(r["busy"] for rs in got.values() for r in rs)
    single = statistics.fmean(r["rps"] for r in got[0])
    multi = statistics.fmean(r["rps"] for r in got[args.workers])
    say(
        f"speed-up workers={args.workers} / single: {speedup:.2f}x (per round "
        f"{' / '.join(f'{x:.2f}' for x in ratios)}; aim >= {AIM_SPEEDUP:g}x"
        f"{'' if speedup >= AIM_SPEEDUP else ' (!)'}); single {single:.0f} req/s, workers "
        f"{multi:.0f} req/s, server limit (wrk) {limit:.0f} req/s; busy runs {busy}"
    )
    return speedup, busy


def part2(args: argparse.Namespace) -> tuple[float, int]:
    """Capacity search on /v1/classify; the relative difference and the busy-run count."""
    truth = capacity_rps(slots=SLOTS, service_ms=SERVICE_MS)
    say(
        f"\n## 2. Capacity of POST /v1/classify ({SLOTS} slots x {SERVICE_MS:g} ms, truth "
        f"{truth:.0f} req/s): one process vs {args.workers} workers"
    )
    with demo_server(slots=SLOTS, classify_ms=SERVICE_MS, service_ms=SERVICE_MS) as server:

        def run(w: int) -> dict[str, Any]:
            settings = RunSettings(
                target_p99_ms=120,
                max_users=48,
                measure_s=2.5,
                min_samples=200,
                max_duration_s=40,
                workers=w,
            )
            return measure(server.url, server.pid, seed_tasks.Classify, settings)

        rows, got = rounds_of(args, run)
    say(table(HEADERS, rows))
    single = statistics.fmean(r["rps"] for r in got[0])
    multi = statistics.fmean(r["rps"] for r in got[args.workers])
    diff = multi / single - 1
    busy = sum(r["busy"] for rs in got.values() for r in rs)
    say(
        f"capacity workers={args.workers} {multi:.1f} req/s vs single {single:.1f} req/s: "
        f"{diff * 100:+.1f} % (aim within +-{AIM_AGREEMENT * 100:g} %"
        f"{'' if abs(diff) <= AIM_AGREEMENT else ' (!)'}); vs truth {multi / truth - 1:+.1%} / "
        f"{single / truth - 1:+.1%}; busy runs {busy}"
    )
    return diff, busy


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one round of each part")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per part (default 2)")
    ap.add_argument("--users", type=int, default=64, help="users in part 1 (default 64)")
    ap.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    ap.add_argument(
        "--demo-fast",
        action="store_true",
        help="part 1 against the demo server's /fast instead of trivial_server.py",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds = 1
    stop_on_sigterm()
    header(f"bench_distributed: one process vs {args.workers} Locust workers")
    t0 = time.monotonic()
    speedup, busy1 = part1(args)
    diff, busy2 = part2(args)
    say(
        f"\n## Summary\nspeed-up {speedup:.2f}x on GET /fast; capacity difference "
        f"{diff * 100:+.1f} %; busy runs {busy1 + busy2}; {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
