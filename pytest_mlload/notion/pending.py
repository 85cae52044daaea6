"""Payloads that could not be sent, kept on disk: ``.mlload/notion-pending/<run id>.json``.

A file holds the payload and the (redacted) reason it failed, never the token: the
settings are read again from the environment when it is sent.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pytest_mlload._io import atomic_write
from pytest_mlload.errors import NotionError
from pytest_mlload.notion.payload import RunPayload
from pytest_mlload.notion.settings import redact

__all__ = ["PENDING_DIR", "PendingFile", "load_pending", "pending_path", "save_pending"]

PENDING_DIR = Path(".mlload") / "notion-pending"
PENDING_SCHEMA = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingFile:
    """One kept payload and where it lives."""

    path: Path
    payload: RunPayload
    error: str
    saved_at: str


def pending_path(directory: Path, run_id: str) -> Path:
    """Where the payload of ``run_id`` is kept."""
    return directory / (re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:120] + ".json")


def save_pending(directory: Path, payload: RunPayload, error: str, token: str | None) -> Path:
    """Keep ``payload`` (replacing an older copy of the same run); returns the file."""
    data = {
        "pending_schema": PENDING_SCHEMA,
        "saved_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "error": error,
        "payload": payload.to_dict(),
    }
    # The report's text (test messages) could quote anything: redact the whole document.
    text = redact(json.dumps(data, indent=2, sort_keys=True, allow_nan=False), token)
    path = pending_path(directory, payload.run_id)
    atomic_write(path, text + "\n")
    return path


def load_pending(directory: Path) -> list[PendingFile]:
    """Every kept payload, oldest first; :class:`NotionError` naming a file it cannot read."""
    out = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            data = json.loads(path.read_text())
            if data.get("pending_schema") != PENDING_SCHEMA:
                raise ValueError(f"pending_schema {data.get('pending_schema')!r}")
            payload = RunPayload.from_dict(data["payload"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise NotionError(
                f"{path} is not a pending Notion payload ({exc}); delete it or restore it"
            ) from None
        out.append(
            PendingFile(
                path=path,
                payload=payload,
                error=str(data.get("error") or ""),
                saved_at=str(data.get("saved_at") or ""),
            )
        )
    return sorted(out, key=lambda p: p.saved_at)
