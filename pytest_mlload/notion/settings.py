"""Notion sync settings, read once from the environment (the names ml-loadtest uses).

The token comes only from ``NOTION_TOKEN``: never from a command line, which ``ps`` shows.
It is kept out of ``repr`` so a settings object can be printed or logged safely.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_mlload.errors import NotionError

__all__ = ["NOTION_VERSION", "NotionSettings", "ci_context", "redact"]

NOTION_VERSION = "2025-09-03"  # databases hold data sources; pages take a data_source_id parent
DEFAULT_BASE_URL = "https://api.notion.com"
ENV_TOKEN = "NOTION_TOKEN"
ENV_RUNS = "NOTION_TEST_RESULTS_DATABASE_ID"
ENV_ENDPOINTS = "NOTION_ENDPOINT_DATABASE_ID"
ENV_BASE_URL = "NOTION_API_BASE_URL"
ENV_DEADLINE = "MLLOAD_NOTION_DEADLINE_S"


@dataclass(frozen=True, slots=True, kw_only=True)
class NotionSettings:
    """Where and how to sync.

    ``deadline_s`` bounds the whole sync (every request, retry and wait); ``rate_rps`` is the
    client-side average request rate (Notion allows an average of 3 requests/s) and
    ``burst`` how many requests may go at once after a pause; ``backoff_base_s`` and
    ``backoff_max_s`` shape the exponential backoff (full jitter) when Notion gives no
    ``Retry-After``; ``timeout_s`` is the per-request timeout (capped by what is left of
    the deadline).
    """

    token: str = field(repr=False)
    runs_database_id: str
    endpoints_database_id: str
    base_url: str = DEFAULT_BASE_URL
    deadline_s: float = 60.0
    rate_rps: float = 3.0
    burst: int = 3
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 20.0

    def __post_init__(self) -> None:
        for name in ("deadline_s", "rate_rps", "backoff_base_s", "backoff_max_s", "timeout_s"):
            value = getattr(self, name)
            if not value > 0:
                raise NotionError(f"Notion setting {name}={value!r} is invalid: expected > 0")
        if self.burst < 1:
            raise NotionError(f"Notion setting burst={self.burst!r} is invalid: expected >= 1")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        runs_database_id: str | None = None,
        endpoints_database_id: str | None = None,
        **overrides: Any,
    ) -> NotionSettings:
        """Settings from ``NOTION_*`` variables; the ids may be overridden, never the token.

        Raises :class:`NotionError` naming every variable that is missing.
        """
        env = os.environ if env is None else env
        values = {
            ENV_TOKEN: env.get(ENV_TOKEN, "").strip(),
            ENV_RUNS: (runs_database_id or env.get(ENV_RUNS, "")).strip(),
            ENV_ENDPOINTS: (endpoints_database_id or env.get(ENV_ENDPOINTS, "")).strip(),
        }
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise NotionError(
                f"Notion sync needs {', '.join(missing)} in the environment (the integration "
                f"token and the ids of the test-results and endpoint databases, shared with "
                f"the integration); set {'it' if len(missing) == 1 else 'them'} and rerun"
            )
        deadline = env.get(ENV_DEADLINE)
        if deadline:
            try:
                overrides.setdefault("deadline_s", float(deadline))
            except ValueError:
                raise NotionError(
                    f"{ENV_DEADLINE}={deadline!r} is invalid: expected seconds, e.g. 60"
                ) from None
        settings = cls(
            token=values[ENV_TOKEN],
            runs_database_id=values[ENV_RUNS],
            endpoints_database_id=values[ENV_ENDPOINTS],
            base_url=(env.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/"),
        )
        return replace(settings, **overrides) if overrides else settings


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of the token replaced (the last guard before output)."""
    if token:
        text = text.replace(token, "<NOTION_TOKEN>")
    return text


def ci_context(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Commit and CI run URL from GitHub Actions or GitLab CI variables, when present."""
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    commit = env.get("GITHUB_SHA") or env.get("CI_COMMIT_SHA")
    if commit:
        out["commit"] = commit
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL") or "https://github.com"
        out["ci_url"] = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    elif env.get("CI_PIPELINE_URL"):
        out["ci_url"] = env["CI_PIPELINE_URL"]
    return out
