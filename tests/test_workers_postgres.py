"""Scale-out on PostgreSQL: four worker processes drain one due set with FOR UPDATE SKIP
LOCKED — zero duplicates, zero lost, and a fair split."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import DEFAULT_CONFIG, T0, TEMPLATES, run_in_threads
from seeding import enrolled_lead, seed_due_intros
from sqlalchemy import func, insert, select

from leadflow.mail.sink import SmtpSink
from leadflow.runtime import Runtime
from models.tables import LEADS, OUTBOX

pytestmark = pytest.mark.skipif(
    not os.environ.get("LEADFLOW_TEST_DATABASE_URL"),
    reason="needs PostgreSQL (scripts/with-postgres sets LEADFLOW_TEST_DATABASE_URL)",
)

MESSAGES = 1200
WORKERS = 4


def _seed(rt: Runtime) -> None:
    """``MESSAGES`` enrolled leads over 50 domains, each with step ``intro`` due at ``T0``."""
    leads = [
        enrolled_lead(f"lead{n}@domain{n % 50}.example", now=T0, score=30.0)
        for n in range(MESSAGES)
    ]
    seed_due_intros(rt.engine, leads, now=T0)


def _config_with_caps(folder: Path, *, daily: int, per_domain: int) -> Path:
    """The default pipeline.yaml in ``folder`` with the sender's two daily caps replaced."""
    config = folder / "pipeline.yaml"
    config.write_text(
        DEFAULT_CONFIG.read_text(encoding="utf-8")
        .replace("daily_cap: 400", f"daily_cap: {daily}")
        .replace("per_domain_daily_cap: 40", f"per_domain_daily_cap: {per_domain}"),
        encoding="utf-8",
    )
    return config


def _run_workers(rt: Runtime, config: Path) -> tuple[list[dict[str, int]], list[bytes]]:
    """Four worker processes drain the due set at once; their JSON results and what the
    SMTP sink received."""
    with SmtpSink() as sink:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.scale_worker",
                    rt.settings.db_url,
                    str(config),
                    str(TEMPLATES),
                    str(sink.port),
                    T0.isoformat(),
                    "50",
                ],
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            for _ in range(WORKERS)
        ]
        results = []
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            assert worker.returncode == 0
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results, [m.data for m in sink.messages]


def _outbox_counts(rt: Runtime, column: Any, condition: Any) -> dict[Any, int]:
    """How many outbox rows matching ``condition`` have each value of ``column``."""
    with rt.engine.connect() as conn:
        return dict(
            conn.execute(select(column, func.count()).where(condition).group_by(column)).all()
        )


def test_four_workers_drain_one_due_set_exactly_once(rt: Runtime, tmp_path: Path) -> None:
    config = _config_with_caps(tmp_path, daily=100000, per_domain=1000)
    _seed(rt)
    results, received = _run_workers(rt, config)
    ids = Counter(email.message_from_bytes(m)["Message-ID"] for m in received)
    assert len(received) == MESSAGES  # zero lost at the server
    assert max(ids.values()) == 1  # zero duplicates
    statuses = _outbox_counts(rt, OUTBOX.c.step, OUTBOX.c.status == "sent")
    with rt.engine.connect() as conn:
        scheduled = conn.execute(
            select(func.count()).where(OUTBOX.c.step == "value", OUTBOX.c.status == "pending")
        ).scalar()
    assert statuses == {"intro": MESSAGES}
    assert scheduled == MESSAGES  # each send scheduled the next step exactly once
    claimed = [r["claimed"] for r in results]
    assert sum(claimed) == MESSAGES
    assert min(claimed) >= MESSAGES / WORKERS / 3, claimed  # a fair split: nobody starved


def test_four_workers_at_once_never_send_past_the_daily_caps(rt: Runtime, tmp_path: Path) -> None:
    """Claims are serialized (an advisory lock), so each counts the others' claims: the
    daily cap and the per-domain cap hold exactly, not to within a batch per worker."""
    config = _config_with_caps(tmp_path, daily=300, per_domain=7)
    _seed(rt)  # 1,200 due messages to 50 domains: the domain cap allows 350, the daily cap 300
    results, received = _run_workers(rt, config)
    counts = _outbox_counts(rt, OUTBOX.c.status, OUTBOX.c.step == "intro")
    reasons = _outbox_counts(rt, OUTBOX.c.defer_reason, OUTBOX.c.status == "deferred")
    domains = Counter(
        email.message_from_bytes(m)["To"].rsplit("@", 1)[-1].rstrip(">") for m in received
    )
    assert len(received) == 300 and counts == {"sent": 300, "deferred": MESSAGES - 300}
    assert max(domains.values()) <= 7
    assert sum(reasons.values()) == MESSAGES - 300 and set(reasons) <= {"daily cap", "domain cap"}
    assert sum(r["sent"] for r in results) == 300


def _active_leads(rt: Runtime, count: int, **fields: Any) -> tuple[int, int]:
    """``count`` active leads with ``fields`` in one INSERT; their first and last id."""
    with rt.engine.begin() as conn:
        conn.execute(
            insert(LEADS),
            [
                {
                    "email": f"lead{n}@example.com",
                    "attributes": {},  # the rest (status active, scores 0) are column defaults
                    "created_at": T0,
                    "updated_at": T0,
                    **fields,
                }
                for n in range(count)
            ],
        )
        first, last = conn.execute(select(func.min(LEADS.c.id), func.max(LEADS.c.id))).one()
    return int(first), int(last)


def test_two_runs_advancing_the_same_range_at_once_move_each_lead_once(rt: Runtime) -> None:
    import threading

    from leadflow.pipeline import stages
    from models.db import session_scope
    from models.tables import TRANSITIONS

    first, last = _active_leads(rt, 2000, next_action_at=T0, score=30.0)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def advance() -> None:
        try:
            barrier.wait()
            with session_scope(rt.engine) as session:
                stages.advance_batch(session.connection(), rt, (first, last), now=T0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    run_in_threads(advance, 2)
    assert errors == []
    with rt.engine.connect() as conn:
        moves = conn.execute(select(func.count()).select_from(TRANSITIONS)).scalar()
    assert moves == 2000


def test_two_runs_scoring_the_same_range_at_once_record_each_change_once(rt: Runtime) -> None:
    """The first run holds the rows until it commits; the second skips them (it used to
    compute the same changes and write a second score-history row for each)."""
    import threading

    from leadflow.pipeline import scoring
    from models.tables import SCORE_CHANGES

    first, last = _active_leads(rt, 500, industry="saas", rescore_at=T0)
    second: list[scoring.ScoreOutcome] = []
    with rt.engine.connect() as holder:
        with holder.begin():
            held = scoring.score_batch(holder, rt.loaded, (first, last), now=T0)
            rival = threading.Thread(
                target=lambda: second.append(_score_in_own_transaction(rt, first, last))
            )
            rival.start()
            rival.join(timeout=60)  # with the lock skipped it does not wait for the commit
            finished_while_held = not rival.is_alive()
        rival.join()
    with rt.engine.connect() as conn:
        history = conn.execute(select(func.count()).select_from(SCORE_CHANGES)).scalar()
    assert finished_while_held
    assert (held.rescored, held.changed) == (500, 500)
    assert (second[0].rescored, second[0].changed) == (0, 0)
    assert history == 500


def _score_in_own_transaction(rt: Runtime, first: int, last: int) -> Any:
    from leadflow.pipeline import scoring

    with rt.engine.begin() as conn:
        return scoring.score_batch(conn, rt.loaded, (first, last), now=T0)
