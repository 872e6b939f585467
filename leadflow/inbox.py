"""The drop folder: files placed in ``inbox/`` are imported by the intake flow and archived.

A file is moved to ``inbox/archive/`` only after its import committed, so a crash leaves it
in place to be picked up again (re-importing is idempotent). Rejected rows are written next
to the archive as ``<name>.rejects.csv``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from leadflow.runtime import Runtime

PATTERNS = ("*.csv", "*.jsonl", "*.ndjson")


def pending_files(inbox: Path) -> list[Path]:
    if not inbox.is_dir():
        return []
    files = {p for pattern in PATTERNS for p in inbox.glob(pattern) if p.is_file()}
    return sorted(files)


def import_inbox(rt: Runtime, *, now: datetime) -> dict[str, Any]:
    from leadflow.intake import IntakeError, import_file, write_rejects

    inbox = rt.settings.inbox_dir
    archive = inbox / "archive"
    totals = {
        "files": 0,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "rejected": 0,
        "suppressed": 0,
    }
    errors: list[str] = []
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for path in pending_files(inbox):
        try:
            summary = import_file(
                rt.engine,
                path,
                rt.loaded.config.intake,
                default_timezone=rt.loaded.config.timezone,
                now=now,
                batch_size=min(rt.settings.batch_size, 5000),
            )
        except IntakeError as exc:
            errors.append(f"{path.name}: {exc}")
            archive_to = archive / "failed"
            archive_to.mkdir(parents=True, exist_ok=True)
            path.rename(archive_to / f"{stamp}-{path.name}")
            continue
        archive.mkdir(parents=True, exist_ok=True)
        if summary.rejects:
            write_rejects(archive / f"{stamp}-{path.stem}.rejects.csv", summary.rejects)
        path.rename(archive / f"{stamp}-{path.name}")
        totals["files"] += 1
        for key in ("created", "updated", "unchanged", "rejected", "suppressed"):
            totals[key] += getattr(summary, key)
    summary_line = (
        f"{totals['files']} file(s): created {totals['created']}, updated "
        f"{totals['updated']}, rejected {totals['rejected']}"
    )
    return {**totals, "errors": errors, "summary": summary_line}
