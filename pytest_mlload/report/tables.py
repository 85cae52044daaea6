"""Reports: the end-of-session table, the JSON report, the Markdown summary.

Everything here is plain data in, text out; the plugin decides where it goes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_mlload._io import atomic_write
from pytest_mlload.config import RunSettings
from pytest_mlload.gates.judgement import worst
from pytest_mlload.gates.metrics import Verdict
from pytest_mlload.results import RESULT_SCHEMA, CapacityResult, StreamResult, part_name

__all__ = [
    "TestRecord",
    "json_report",
    "markdown_table",
    "summary_notes",
    "summary_rows",
    "text_table",
    "write_json",
]

SCHEMA_VERSION = RESULT_SCHEMA  # 2: typed records (open_loop, spike, hpa, rate_limit_rps)


@dataclass(slots=True)
class TestRecord:
    """What one capacity test produced: its result(s), verdicts and final outcome."""

    nodeid: str
    key: str
    results: list[CapacityResult] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    outcome: str = "not judged"  # pass | regression | inconclusive | no-baseline | recorded | ...
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, raw trajectory included."""
        return {
            "nodeid": self.nodeid,
            "key": self.key,
            "outcome": self.outcome,
            "message": self.message,
            "results": [r.to_dict() for r in self.results],
            "verdicts": [v.to_dict() for v in self.verdicts],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TestRecord:
        """Rebuild from :meth:`to_dict` output (an xdist worker's records)."""
        return cls(
            nodeid=d["nodeid"],
            key=d["key"],
            outcome=d.get("outcome", "not judged"),
            message=d.get("message", ""),
            results=[CapacityResult.from_dict(r) for r in d.get("results", [])],
            verdicts=[Verdict.from_dict(v) for v in d.get("verdicts", [])],
        )

    def part_outcome(self, part: str) -> str:
        """The worst verdict of one part, else the test's outcome."""
        return worst({v.verdict for v in self.verdicts if v.part == part}, default=self.outcome)


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def _label(key: str, part: str) -> str:
    return f"{key} [{part}]" if part else key


def summary_rows(records: list[TestRecord]) -> list[list[str]]:
    """Header + one row per result: test, capacity, P99, users, errors, change, verdict."""
    rows = [
        [
            "test",
            "capacity req/s",
            "P99 ms",
            "users",
            "errors",
            "capacity change",
            "rate limit",
            "verdict",
        ]
    ]
    for rec in records:
        if not rec.results:
            rows.append([rec.key, "-", "-", "-", "-", "-", "-", rec.outcome])
        for r in rec.results:
            part = part_name(rec.key, r.name)
            cap_v = next(
                (v for v in rec.verdicts if v.metric in ("capacity", "goodput") and v.part == part),
                None,
            )
            change = "-"
            if cap_v and cap_v.change is not None:
                change = f"{cap_v.change * 100:+.1f} %"
                if cap_v.low is not None and cap_v.high is not None:
                    change += f" [{cap_v.low * 100:+.1f}, {cap_v.high * 100:+.1f}]"
            cap = _fmt(r.capacity_rps)
            if r.capacity_ci:
                cap += f" ±{(r.capacity_ci[1] - r.capacity_ci[0]) / 2:.1f}"
            limit = r.rate_limit_rps
            rows.append(
                [
                    _label(rec.key, part),
                    cap,
                    f"{_fmt(r.p99_ms)}/{_p99_bound(r)}",
                    _users_cell(r),
                    f"{r.error_ratio:.2%}",
                    change,
                    "-" if limit is None else f"{limit:.1f}",
                    rec.part_outcome(part),
                ]
            )
    return rows


def _p99_bound(r: CapacityResult) -> str:
    """What P99 is held against: the target; for a spike its own bound; in SLO mode nothing
    (the operating point is the SLO attainment's, named in the notes). — when none."""
    if r.spike is not None:
        bound = r.settings.get("spike_max_p99_ms") or 0
        return f"{bound:g}" if bound else "—"
    if any((r.settings.get(name) or 0) > 0 for name in RunSettings.SLO_LIMITS):
        return "— (SLO)"
    return f"{r.target_p99_ms:g}"


def _users_cell(r: CapacityResult) -> str:
    if getattr(r, "bound", "") == "max_users":
        return f"{r.users} (max_users)"
    if getattr(r, "check", False):
        return f"{r.users} (check)"
    return str(r.users)


def summary_notes(records: list[TestRecord]) -> list[str]:
    """One line per result worth a sentence beside the table: check mode, a capacity that
    is only the max_users bound, where throughput falls past its knee, and the streaming
    figures (goodput, SLO attainment, TTFB/TTFT/TPOT/ITL, tokens/s) of a streaming test."""
    notes: list[str] = []
    for rec in records:
        for r in rec.results:
            label = _label(rec.key, part_name(rec.key, r.name))
            if r.check:
                notes.append(f"{label}: check mode, held the baseline's {r.users} users")
            if r.bound == "max_users":
                notes.append(
                    f"{label}: stopped at max_users={r.users} with P99 {_fmt(r.p99_ms)} ms under "
                    f"the {r.target_p99_ms:g} ms target: the capacity is only a lower bound"
                )
            if r.knee_users is not None:
                notes.append(f"{label}: throughput falls past {r.knee_users} users")
            if r.stream is not None:
                notes.append(f"{label}: {_stream_note(r.stream)}")
    return notes


def _stream_note(st: StreamResult) -> str:
    """The streaming figures of a result in one sentence (goodput, attainment, TTFT...)."""
    attained = ""
    if st.slo_attainment is not None:
        ci = st.slo_attainment_ci or (st.slo_attainment, st.slo_attainment)
        attained = (
            f", SLO attainment {st.slo_attainment:.1%} (95 % CI {ci[0]:.1%}..{ci[1]:.1%}, "
            f"{st.undetermined} undetermined)"
        )
    return (
        f"goodput {st.goodput_rps:.1f} req/s{attained}; TTFB P50 {_fmt(st.ttfb_p50_ms)} ms, "
        f"TTFT P50/P99 {_fmt(st.ttft_p50_ms)}/{_fmt(st.ttft_p99_ms)} ms, TPOT P50/P99 "
        f"{_fmt(st.tpot_p50_ms)}/{_fmt(st.tpot_p99_ms)} ms, ITL P99 {_fmt(st.itl_p99_ms)} ms, "
        f"{st.output_tokens_per_s:.0f} tokens/s ({st.token_source})"
    )


def text_table(rows: list[list[str]]) -> list[str]:
    """Align rows into fixed-width text lines."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def markdown_table(records: list[TestRecord]) -> str:
    """The summary table as GitHub-flavoured Markdown."""
    rows = summary_rows(records)
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
    notes = summary_notes(records)
    if notes:
        out += ["", *(f"- {n}" for n in notes)]
    return "\n".join(out) + "\n"


def json_report(records: list[TestRecord], *, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything: results, verdicts, trajectories, with a schema version and a run id.

    ``run_id`` names the session (the CI run and attempt when the environment has them, else
    a random id), so a sync of the same report twice updates, never duplicates; ``commit``
    and ``ci_url`` come from the CI environment when it has them.
    """
    return {
        "schema": SCHEMA_VERSION,
        "generated_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **run_identity(os.environ),
        **(meta or {}),
        "tests": [r.to_dict() for r in records],
    }


def run_identity(env: Mapping[str, str]) -> dict[str, str | None]:
    """``run_id``, ``commit`` and ``ci_url`` of this session from a CI environment
    (GitHub Actions, GitLab CI), else a random run id and no commit or URL."""
    if env.get("GITHUB_RUN_ID"):
        run_id = f"gh-{env['GITHUB_RUN_ID']}-{env.get('GITHUB_RUN_ATTEMPT', '1')}"
        server, repo = (
            env.get("GITHUB_SERVER_URL", "https://github.com"),
            env.get("GITHUB_REPOSITORY"),
        )
        url = f"{server}/{repo}/actions/runs/{env['GITHUB_RUN_ID']}" if repo else None
        return {"run_id": run_id, "commit": env.get("GITHUB_SHA"), "ci_url": url}
    if env.get("CI_JOB_ID"):
        return {
            "run_id": f"gl-{env['CI_JOB_ID']}",
            "commit": env.get("CI_COMMIT_SHA"),
            "ci_url": env.get("CI_JOB_URL"),
        }
    return {"run_id": f"run-{uuid.uuid4().hex[:16]}", "commit": None, "ci_url": None}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), creating parent folders."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"
    atomic_write(path, text)
