"""``python -m pytest_mlload.notion_sync``: send a ``--mlload-report`` JSON file to Notion.

ml-loadtest's command shape, for a runner that cannot reach Notion during the tests::

    python -m pytest_mlload.notion_sync SERVICE VERSION --report-file report.json \\
        [--baseline-file mlload-baseline.yaml] [--dry-run] [--init]
    python -m pytest_mlload.notion_sync --retry-pending

The token comes only from ``NOTION_TOKEN`` (a command line is visible in ``ps``); the
database ids from ``NOTION_TEST_RESULTS_DATABASE_ID`` / ``NOTION_ENDPOINT_DATABASE_ID`` or
the options. A Notion failure keeps the payload in ``.mlload/notion-pending`` and exits 0
(a warning on stderr), so a CI job is never broken by Notion; ``--strict`` exits 1 instead.
Exit 2: the command line or the report is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

EXIT_OK, EXIT_NOTION, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pytest_mlload.notion_sync",
        description="Sync a pytest-mlload JSON report to Notion (one run page, one row per "
        "endpoint). NOTION_TOKEN is read from the environment only.",
    )
    p.add_argument("service", nargs="?", help="service name (the Service Name select)")
    p.add_argument("version", nargs="?", help="service version (Service Version)")
    p.add_argument("--report-file", type=Path, help="the JSON written by --mlload-report")
    p.add_argument("--baseline-file", type=Path, help="baseline YAML for tests no gate judged")
    p.add_argument("--dry-run", action="store_true", help="print the payload, send nothing")
    p.add_argument("--init", action="store_true", help="add missing properties first")
    p.add_argument("--retry-pending", action="store_true", help="send the kept payloads")
    p.add_argument(
        "--pending-dir",
        type=Path,
        default=None,
        help="where failed payloads are kept (default .mlload/notion-pending)",
    )
    p.add_argument("--test-results-database-id", help="overrides the environment's id")
    p.add_argument("--endpoint-database-id", help="overrides the environment's id")
    p.add_argument("--strict", action="store_true", help="exit 1 when Notion fails")
    return p


def _env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.test_results_database_id:
        env["NOTION_TEST_RESULTS_DATABASE_ID"] = args.test_results_database_id
    if args.endpoint_database_id:
        env["NOTION_ENDPOINT_DATABASE_ID"] = args.endpoint_database_id
    return env


def _say(attempt: Any, strict: bool) -> int:
    if attempt.outcome is not None:
        o = attempt.outcome
        print(
            f"run {attempt.run_id}: page {'created' if o.created else 'updated'}; rows "
            f"{o.rows_created} created, {o.rows_updated} updated, {o.rows_trashed} trashed; "
            f"{o.duplicates_trashed} duplicate(s) trashed; {o.requests} requests, "
            f"{o.retries} retries"
        )
        if o.initialised:
            print(f"added {len(o.initialised)} properties: {', '.join(o.initialised)}")
        if o.url:
            print(f"NOTION_PAGE_URL={o.url}")
        return EXIT_OK
    kept = f"; kept in {attempt.pending}" if attempt.pending else ""
    print(f"warning: run {attempt.run_id} not synced: {attempt.error}{kept}", file=sys.stderr)
    return EXIT_NOTION if strict else EXIT_OK


def _read_report(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read --report-file {path}: {exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    from pytest_mlload.errors import MlloadError
    from pytest_mlload.notion import (
        PENDING_DIR,
        baseline_lookup,
        payload_from_report,
        retry_pending,
        sync_or_keep,
    )

    parser = _parser()
    args = parser.parse_args(argv)
    pending_dir = args.pending_dir or Path.cwd() / PENDING_DIR
    env = _env(args)
    if args.retry_pending:
        attempts = retry_pending(pending_dir, init=args.init, env=env)
        if not attempts:
            print(f"nothing pending in {pending_dir}")
        codes = [_say(a, args.strict) for a in attempts]
        return max(codes, default=EXIT_OK)
    if not (args.service and args.version and args.report_file):
        parser.print_usage(sys.stderr)
        print(
            "error: SERVICE, VERSION and --report-file are needed (or --retry-pending)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        lookup = baseline_lookup(args.baseline_file) if args.baseline_file else None
        run, payload = payload_from_report(
            _read_report(args.report_file),
            service=args.service,
            version=args.version,
            baseline=lookup,
            env=env,
            source=str(args.report_file),
        )
    except (MlloadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if run.run_id_derived:
        print(
            f"note: the report has no run_id; using {run.run_id} (from generated_at and the "
            f"test keys)",
            file=sys.stderr,
        )
    if args.dry_run:
        json.dump(payload.to_dict(), sys.stdout, indent=2, sort_keys=True)
        print()
        return EXIT_OK
    return _say(
        sync_or_keep(payload, pending_dir=pending_dir, init=args.init, env=env), args.strict
    )


if __name__ == "__main__":
    sys.exit(main())
