"""Time to verdict and accuracy per traffic mode, against the demo server on 127.0.0.1.

    python bench/bench_modes.py

The demo server has 4 slots; classify holds one for 20 ms, embed 30 ms, infer 40 ms, so the
truths are 200 / 133.3 / 100 req/s solo and slots / sum(w_i * s_i) for a mix. Every load run
is bounded by its time cap; the server is stopped by PID at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "example_suite"))

from _common import stop_on_sigterm  # noqa: E402
from tasks import Classify, Embed, Infer  # noqa: E402

from pytest_mlload.config import RunSettings  # noqa: E402
from pytest_mlload.load.engine import run_capacity  # noqa: E402
from pytest_mlload.load.modes import run_modes  # noqa: E402
from pytest_mlload.testing.demo import DemoServerProcess, mix_capacity_rps  # noqa: E402

WEIGHTS = {Classify: 50, Embed: 30, Infer: 20}
SERVICE_MS = {"/v1/classify": 20.0, "/v1/embed": 30.0, "/v2/models/resnet/infer": 40.0}


def truth(weights: dict[str, float]) -> float:
    return mix_capacity_rps(slots=4, mix=[(w, SERVICE_MS[e]) for e, w in weights.items()])


def main() -> int:
    stop_on_sigterm()  # SIGTERM stops the demo server by PID, as Ctrl-C does
    rows: list[tuple[str, float, str]] = []
    with DemoServerProcess(slots=4, classify_ms=20.0, embed_ms=30.0, infer_ms=40.0) as demo:

        def timed(label: str, fn):  # noqa: ANN001, ANN202
            t0 = time.monotonic()
            out = fn()
            rows.append((label, time.monotonic() - t0, ""))
            return out

        def runner(settings: RunSettings):  # noqa: ANN202
            return lambda part: run_capacity(
                part.target, host=demo.url, settings=settings, name=part.name, kind=part.kind
            )

        s = RunSettings(mode=("individual",), target_p99_ms=240)
        ind = timed("individual (3 endpoints)", lambda: run_modes(WEIGHTS, s, runner(s)))
        for name, r in ind.parts.items():
            ep = name.split(" ", 1)[1]
            t = truth({ep: 1})
            rows.append(
                (
                    f"  {name}",
                    r.elapsed_s,
                    f"capacity {r.capacity_rps:.1f} vs truth {t:.1f} "
                    f"({(r.capacity_rps / t - 1) * 100:+.1f} %), P99 {r.p99_ms:.0f} ms",
                )
            )
        s = RunSettings(mode=("production",), target_p99_ms=200)
        prod = timed("production mix", lambda: run_modes(WEIGHTS, s, runner(s)))
        r = prod["production"]
        t = truth({"/v1/classify": 50, "/v1/embed": 30, "/v2/models/resnet/infer": 20})
        rows.append(
            (
                "  production",
                r.elapsed_s,
                f"capacity {r.capacity_rps:.1f} vs truth {t:.1f} "
                f"({(r.capacity_rps / t - 1) * 100:+.1f} %), rate limit "
                f"{prod.rate_limits['production']:.1f} req/s",
            )
        )
        s = RunSettings(mode=("exploration",), target_p99_ms=200)
        exp = timed(
            "exploration (production + 3 doubled mixes)", lambda: run_modes(WEIGHTS, s, runner(s))
        )
        for row in exp.exploration["mixes"]:
            t = truth(row["weights"])
            rows.append(
                (
                    f"  {row['mix']}",
                    0.0,
                    f"capacity {row['capacity_rps']:.1f} vs truth {t:.1f} "
                    f"({(row['capacity_rps'] / t - 1) * 100:+.1f} %)",
                )
            )
        rows.append(
            (
                "  best mix",
                0.0,
                f"{exp.exploration['best_mix']}; sensitivity "
                + ", ".join(f"{k} {v:+.2f}" for k, v in exp.exploration["sensitivity"].items()),
            )
        )
        s = RunSettings(spike_target_rps=300, spike_duration_s=5, target_p99_ms=120)
        sp = timed(
            "spike 300 req/s for 5 s (capacity 200)",
            lambda: run_capacity(Classify, host=demo.url, settings=s, kind="spike"),
        )
        f = sp.spike
        assert f is not None
        rows.append(
            (
                "  spike",
                sp.elapsed_s,
                f"sent {f.spike.sent_rps:.1f} req/s, P99 pre {f.pre.p99_ms or 0:.0f} ms"
                f" / during {sp.p99_ms:.0f} ms, errors {sp.error_ratio:.1%}, recovery "
                f"{f.recovery_s} s",
            )
        )
    with DemoServerProcess(slots=4, classify_ms=20.0, stall_every_s=10.0, stall_s=1.0) as demo:
        s = RunSettings(target_p99_ms=60, measure_s=10.5, probe_s=10.5, max_duration_s=60)
        r = timed(
            "open-loop check, 1 s stall every 10 s",
            lambda: run_capacity(Classify, host=demo.url, settings=s),
        )
        ol = r.open_loop
        assert ol is not None and ol.p99_ms is not None
        rows.append(
            (
                "  stall",
                r.elapsed_s,
                f"closed-loop P99 {r.p99_ms:.0f} ms vs open-loop P99 {ol.p99_ms:.0f} ms "
                f"at {ol.rate_rps:.0f} req/s ({ol.p99_ms / r.p99_ms:.1f}x)",
            )
        )
    width = max(len(label) for label, _, _ in rows)
    print(f"{'run'.ljust(width)}  wall s  figures")
    for label, secs, text in rows:
        print(f"{label.ljust(width)}  {secs:6.1f}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
