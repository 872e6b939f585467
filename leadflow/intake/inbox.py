"""The drop folder: files placed in ``inbox/`` are imported by the intake flow and archived.

A file is moved to ``inbox/archive/`` only after its import committed, so a crash leaves it
in place to be picked up again (re-importing is idempotent). Rejected rows are written next
to the archive as ``<name>.rejects.csv``.

Two runs may look at the inbox at once (the intake and tick crons both fire on the quarter
hour). Each file is claimed with an exclusive ``flock`` for the length of its import: a file
another run is importing is skipped (counted as ``busy``), and one it archived meanwhile is
gone when the lock is granted. The kernel drops the lock if a run dies, so nothing stays
claimed after a crash. POSIX only, like the deployments this runs in.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def claimed(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` while the block runs; yield whether this run owns
    the file (False when another run holds it, or archived it before the lock came)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            still_here = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            still_here = False
        yield still_here
    finally:
        os.close(fd)  # releases the lock


COUNTS = ("created", "updated", "unchanged", "rejected", "suppressed")


def import_inbox(rt: Runtime, *, now: datetime) -> dict[str, Any]:
    inbox = rt.settings.inbox_dir
    totals = dict.fromkeys(("files", *COUNTS, "busy"), 0)
    errors: list[str] = []
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    for path in pending_files(inbox):
        with claimed(path) as mine:
            if not mine:
                totals["busy"] += 1
                continue
            error = _import_one(rt, path, inbox / "archive", f"{stamp}-", totals, now=now)
        if error:
            errors.append(error)
    summary_line = (
        f"{totals['files']} file(s): created {totals['created']}, updated "
        f"{totals['updated']}, rejected {totals['rejected']}"
    )
    if totals["busy"]:
        summary_line += f"; {totals['busy']} being imported by another run"
    return {**totals, "errors": errors, "summary": summary_line}


def _import_one(
    rt: Runtime, path: Path, archive: Path, prefix: str, totals: dict[str, int], *, now: datetime
) -> str | None:
    """Import one claimed file and archive it. A file that cannot be read at all goes to
    ``archive/failed`` and its error line is returned."""
    from leadflow.intake import IntakeError, import_file, write_rejects

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
        (archive / "failed").mkdir(parents=True, exist_ok=True)
        path.rename(archive / "failed" / f"{prefix}{path.name}")
        return f"{path.name}: {exc}"
    archive.mkdir(parents=True, exist_ok=True)
    if summary.rejects:
        write_rejects(archive / f"{prefix}{path.stem}.rejects.csv", summary.rejects)
    path.rename(archive / f"{prefix}{path.name}")
    totals["files"] += 1
    for key in COUNTS:
        totals[key] += getattr(summary, key)
    return None
