"""Notion sync: one run page and one row per endpoint per run, in two Notion databases.

Layers, each testable alone:

* :mod:`~pytest_mlload.notion.report_input`: the JSON report -> typed records (the only
  reader of the report dict);
* :mod:`~pytest_mlload.notion.payload` and :mod:`~pytest_mlload.notion.blocks`: records ->
  the page properties and blocks to write (plain data, no request);
* :mod:`~pytest_mlload.notion.transport`: notion-client (imported lazily) behind a rate
  limiter, retries and one deadline;
* :mod:`~pytest_mlload.notion.sync`: data-source discovery, schema check / init, and the
  idempotent upsert of the run page and its rows;
* :mod:`~pytest_mlload.notion.pending`: what failed, kept on disk for ``--retry-pending``;
* :mod:`~pytest_mlload.notion.hooks`: the few functions the pytest plugin calls.

:func:`sync_or_keep` never raises for a Notion problem: it returns what failed (the text
free of the token) and where the payload was kept. A Notion failure never changes a verdict.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlload.errors import MlloadError, NotionError
from pytest_mlload.notion.payload import BaselineLookup, RunPayload, build_payload
from pytest_mlload.notion.pending import (
    PENDING_DIR,
    PendingFile,
    load_pending,
    pending_path,
    save_pending,
)
from pytest_mlload.notion.report_input import RunInput, runs_from_report
from pytest_mlload.notion.settings import ENV_TOKEN, NotionSettings, ci_context, redact
from pytest_mlload.notion.sync import SyncOutcome, send_payload

__all__ = [
    "PENDING_DIR",
    "NotionError",
    "NotionSettings",
    "PendingFile",
    "RunPayload",
    "SyncAttempt",
    "SyncOutcome",
    "baseline_lookup",
    "payload_from_report",
    "retry_pending",
    "sync_or_keep",
]

log = logging.getLogger("pytest_mlload.notion")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncAttempt:
    """How one sync went: ``outcome`` when it worked, else ``error`` and ``pending``."""

    run_id: str
    outcome: SyncOutcome | None = None
    error: str = ""
    pending: Path | None = None


def baseline_lookup(path: Path) -> BaselineLookup:
    """Baseline figures (capacity, P99) by baseline key, from a baseline YAML file."""
    from pytest_mlload.baseline import BaselineStore

    entries = BaselineStore(path).load()

    def look(key: str) -> tuple[float | None, float | None] | None:
        entry = entries.get(key)
        return (entry.capacity_rps, entry.p99_ms) if entry else None

    return look


def payload_from_report(
    report: Any,
    *,
    service: str,
    version: str,
    baseline: BaselineLookup | None = None,
    env: Mapping[str, str] | None = None,
    source: str = "the report",
) -> tuple[RunInput, RunPayload]:
    """The typed run and what to write for it; :class:`NotionError` for a bad report."""
    run = runs_from_report(report, source=source)
    payload = build_payload(
        run, service=service, version=version, ci=ci_context(env), baseline=baseline
    )
    return run, payload


def sync_or_keep(
    payload: RunPayload,
    *,
    pending_dir: Path,
    init: bool = False,
    env: Mapping[str, str] | None = None,
    settings: NotionSettings | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> SyncAttempt:
    """Send ``payload``; on any failure keep it in ``pending_dir`` and say why (no raise)."""
    env = os.environ if env is None else env
    token = settings.token if settings else env.get(ENV_TOKEN)
    try:
        settings = settings or NotionSettings.from_env(env)
        outcome = send_payload(payload, settings, init=init, clock=clock, sleep=sleep, rng=rng)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the verdicts stand
        kind = "" if isinstance(exc, MlloadError) else f"{type(exc).__name__}: "
        error = redact(f"{kind}{exc}", token)
        try:
            path: Path | None = save_pending(pending_dir, payload, error, token)
        except OSError as io:
            path = None
            error += redact(f" (and the payload could not be kept in {pending_dir}: {io})", token)
        return SyncAttempt(run_id=payload.run_id, error=error, pending=path)
    pending_path(pending_dir, payload.run_id).unlink(missing_ok=True)  # sent: nothing pending
    return SyncAttempt(run_id=payload.run_id, outcome=outcome)


def retry_pending(
    pending_dir: Path, *, init: bool = False, env: Mapping[str, str] | None = None, **kw: Any
) -> list[SyncAttempt]:
    """Send every kept payload, oldest first; a sent one's file is deleted."""
    out = []
    for kept in load_pending(pending_dir):
        attempt = sync_or_keep(kept.payload, pending_dir=pending_dir, init=init, env=env, **kw)
        if attempt.outcome is not None:
            kept.path.unlink(missing_ok=True)
        out.append(attempt)
    return out
