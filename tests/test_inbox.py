"""The drop folder: each file imported once and archived, even with two runs looking at once."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import T0, run_in_threads
from sqlalchemy import func, select

from leadflow.intake import inbox
from leadflow.intake.inbox import claimed, import_inbox
from leadflow.runtime import Runtime
from leadflow.settings import Settings
from models.tables import LEADS

STAMP = T0.strftime("%Y%m%dT%H%M%SZ")


def _drop(settings: Settings, name: str, emails: list[str]) -> Path:
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    path = settings.inbox_dir / name
    rows = "".join(f"{email},Ada,Example Ltd\n" for email in emails)
    path.write_text(f"Email Address,First Name,Company\n{rows}")
    return path


def _lead_count(rt: Runtime) -> int:
    with rt.engine.connect() as conn:
        count: int = conn.execute(select(func.count()).select_from(LEADS)).scalar_one()
        return count


def _archived(settings: Settings) -> list[str]:
    return sorted(p.name for p in (settings.inbox_dir / "archive").iterdir() if p.is_file())


def test_drop_folder_imports_each_file_and_archives_it_with_its_rejects(
    settings: Settings, rt: Runtime
) -> None:
    _drop(settings, "fair.csv", ["a@example.com", "b@example.com"])
    _drop(settings, "web.csv", ["c@example.com", "not-an-address"])

    first = import_inbox(rt, now=T0)
    again = import_inbox(rt, now=T0)

    assert {k: first[k] for k in ("files", "created", "rejected", "busy", "errors")} == {
        "files": 2,
        "created": 3,
        "rejected": 1,
        "busy": 0,
        "errors": [],
    }
    assert first["summary"] == "2 file(s): created 3, updated 0, rejected 1"
    assert again["files"] == 0 and again["summary"] == "0 file(s): created 0, updated 0, rejected 0"
    assert _archived(settings) == [
        f"{STAMP}-fair.csv",
        f"{STAMP}-web.csv",
        f"{STAMP}-web.rejects.csv",
    ]
    assert sorted(p.name for p in settings.inbox_dir.iterdir() if p.is_file()) == []
    assert _lead_count(rt) == 3


def test_a_file_another_run_is_importing_is_left_to_it(settings: Settings, rt: Runtime) -> None:
    path = _drop(settings, "big.csv", ["a@example.com"])
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as the other run's claim holds it
        busy = import_inbox(rt, now=T0)
    finally:
        os.close(holder)  # the other run died: the kernel drops its lock
    after = import_inbox(rt, now=T0)

    assert (busy["files"], busy["busy"], busy["errors"]) == (0, 1, [])
    assert busy["summary"].endswith("; 1 being imported by another run")
    assert (after["files"], after["created"], after["busy"]) == (1, 1, 0)
    assert _archived(settings) == [f"{STAMP}-big.csv"]


def test_a_file_archived_before_the_lock_came_is_not_imported_again(
    settings: Settings, rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrow race: this run opened the file, then the other run imported and archived
    it, and only then was this run's lock granted."""
    path = _drop(settings, "race.csv", ["a@example.com"])
    real_flock = fcntl.flock

    def other_run_finishes_first(fd: int, operation: int) -> None:
        path.rename(path.with_name("elsewhere.txt"))
        real_flock(fd, operation)

    monkeypatch.setattr(inbox.fcntl, "flock", other_run_finishes_first)
    with claimed(path) as mine:
        assert mine is False


def test_two_runs_at_once_import_every_file_exactly_once(settings: Settings, rt: Runtime) -> None:
    for n in range(8):
        _drop(settings, f"part{n}.csv", [f"lead{n}-{i}@example.com" for i in range(50)])
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def run() -> None:
        runtime = Runtime.open(settings)
        try:
            start.wait()
            results.append(import_inbox(runtime, now=T0))
        finally:
            runtime.close()

    run_in_threads(run, 2)

    assert [r["errors"] for r in results] == [[], []]
    assert sum(r["files"] for r in results) == 8
    assert sum(r["created"] for r in results) == 400
    assert sum(r["updated"] + r["unchanged"] for r in results) == 0  # none imported twice
    assert _archived(settings) == sorted(f"{STAMP}-part{n}.csv" for n in range(8))
    assert _lead_count(rt) == 400
