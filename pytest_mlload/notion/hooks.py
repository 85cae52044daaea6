"""What the pytest plugin calls: two options, and one function at session end.

Nothing here imports pytest or notion-client; the plugin passes its option group and a
``warn`` callback (a terminal line, not a Python warning: ``-W error`` must not turn a
Notion failure into a failed session).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["add_options", "parse_target", "sync_session"]

PREFIX = "mlload notion"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def parse_target(value: str) -> str:
    """Check ``SERVICE:VERSION`` (argparse ``type=``: a bad value is a usage error)."""
    service, sep, version = value.partition(":")
    if not sep or not service.strip() or not version.strip():
        raise argparse.ArgumentTypeError(
            f"--mlload-notion={value!r} is invalid: expected SERVICE:VERSION, e.g. "
            f"--mlload-notion=classifier:1.4.2"
        )
    return value


def add_options(group: Any) -> None:
    """Register ``--mlload-notion`` and ``--mlload-notion-init`` on a pytest option group."""
    group.addoption(
        "--mlload-notion",
        dest="mlload_notion",
        metavar="SERVICE:VERSION",
        default=None,
        type=parse_target,
        help="sync the session's results to Notion at the end (NOTION_TOKEN, "
        "NOTION_TEST_RESULTS_DATABASE_ID, NOTION_ENDPOINT_DATABASE_ID from the environment); "
        "a Notion failure is a warning and the payload is kept in .mlload/notion-pending",
    )
    group.addoption(
        "--mlload-notion-init",
        dest="mlload_notion_init",
        action="store_true",
        default=False,
        help="with --mlload-notion: first add the properties the sync writes to the two "
        "Notion data sources",
    )


def sync_session(
    report: Mapping[str, Any],
    *,
    target: str | None,
    init: bool,
    rootdir: Path,
    warn: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
    **kw: Any,
) -> Any:
    """Sync the session's JSON report dict when ``target`` (SERVICE:VERSION) is set.

    Never raises for a Notion problem: failures go to ``warn`` (default: stderr) with the
    pending file, and the verdicts and exit code stay as they were; the success lines
    (``NOTION_PAGE_URL=...``) go to ``info`` (default: where ``warn`` goes). Returns the
    :class:`~pytest_mlload.notion.SyncAttempt`, or None when nothing was asked.
    """
    if not target:
        return None
    from pytest_mlload.notion import payload_from_report, sync_or_keep
    from pytest_mlload.notion.pending import PENDING_DIR
    from pytest_mlload.notion.settings import ENV_TOKEN, redact

    env = os.environ if env is None else env
    warn = warn or _stderr
    info = info or warn
    service, _, version = target.partition(":")
    try:
        run, payload = payload_from_report(
            report, service=service.strip(), version=version.strip(), env=env
        )
    except Exception as exc:  # noqa: BLE001 - the sync must never fail the session
        warn(redact(f"{PREFIX}: not synced: {exc}", env.get(ENV_TOKEN)))
        return None
    attempt = sync_or_keep(payload, pending_dir=rootdir / PENDING_DIR, init=init, env=env, **kw)
    if attempt.outcome is None:
        where = f"; kept in {attempt.pending}" if attempt.pending else ""
        warn(
            f"{PREFIX}: run {run.run_id} not synced: {attempt.error}{where}; send it later "
            f"with python -m pytest_mlload.notion_sync --retry-pending"
        )
    else:
        o = attempt.outcome
        info(
            f"{PREFIX}: run {run.run_id} {'created' if o.created else 'updated'}, "
            f"{o.rows_created} row(s) created, {o.rows_updated} updated "
            f"({o.requests} requests)"
        )
        if o.url:
            info(f"NOTION_PAGE_URL={o.url}")
    return attempt
