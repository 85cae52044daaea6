"""Notion sync figures against the local Notion API of the tests (tests/notion_fake.py).

Prints, per report size: requests per sync (first sync with init, then a re-sync), requests
per test result, and the average request rate on the sync's clock; then the same sync under
an injected fault mix (429 with Retry-After, 529, 500, 502/503/504 after the write, a slow
answer past the timeout, 409), with pages kept, duplicates and retries.

The clock is virtual (waits advance it, nothing sleeps), so the rate is the limiter's, not
the loopback's. Run: ``PYTHONPATH=. python bench/bench_notion.py``.
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from notion_fake import FakeNotion, Fault  # noqa: E402
from test_notion import (  # noqa: E402
    TOKEN,
    VirtualClock,
    make_report,
    payload_of,
    runs_from_report,
    settings_for,
)

from pytest_mlload.notion.payload import RunPayload  # noqa: E402
from pytest_mlload.notion.sync import send_payload  # noqa: E402

FAULTS = [
    Fault("GET", r"/databases/", status=500),
    Fault("GET", r"/data_sources/", status=529),
    Fault("POST", r"/query$", status=429, retry_after="2", count=2),
    Fault("POST", r"/pages$", status=502, after=True),
    Fault("POST", r"/pages$", status=503),
    Fault("POST", r"/pages$", after=True, delay_s=0.5),
    Fault("PATCH", r"/children$", status=504, after=True),
    Fault("PATCH", r"/pages/", status=429, retry_after="1"),
    Fault("PATCH", r"/pages/", status=409),
]


def _sync(fake: FakeNotion, payload: RunPayload, *, init: bool, results: int, label: str) -> None:
    clock = VirtualClock()
    o = send_payload(
        payload,
        settings_for(fake, timeout_s=0.2),
        init=init,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(0),
    )
    span = clock.now - 1000.0
    print(
        f"{results:7d} {len(payload.rows):4d}  {label:7s} {o.requests:8d}  "
        f"{o.requests / results:10.2f}  {span:7.2f}  {(o.requests - 3) / span:5.2f}  "
        f"{o.retries:7d}"
    )


def main() -> None:
    """Print the table."""
    print("results rows  sync    requests  per-result  clock-s  req/s  retries")
    for n in (2, 12, 40):
        report = make_report(n)
        results = sum(len(t.parts) for t in runs_from_report(report).tests)
        payload = payload_of(report)
        with FakeNotion(TOKEN) as fake:
            fake.add_sync_databases()
            _sync(fake, payload, init=True, results=results, label="first")
            _sync(fake, payload, init=False, results=results, label="again")
        with FakeNotion(TOKEN) as fake:  # fresh databases, so the faults meet the creates
            fake.add_sync_databases()
            fake.inject(*(Fault(**vars(f)) for f in FAULTS))
            _sync(fake, payload, init=True, results=results, label="faults")
            met = sum(f.count == 0 for f in fake.faults)
            runs = fake.live_pages(fake.runs_db)
            rows = Counter(fake.text(p, "Row ID") for p in fake.live_pages(fake.eps_db))
            print(
                f"  faults met {met}/{len(FAULTS)}: {len(runs)} run page(s), {len(rows)} rows "
                f"of {len(payload.rows)} expected, most copies of one row {max(rows.values())}"
            )


if __name__ == "__main__":
    main()
