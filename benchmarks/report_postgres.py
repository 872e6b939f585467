"""``bench_report``'s rows written by PostgreSQL: the same leads, moves, emails and events, with
the same timestamps, as ``bench_report.fill`` writes on SQLite (``generate_series`` for the
recursive CTE, intervals for julian-day arithmetic)."""

from __future__ import annotations

from sqlalchemy import Connection, Index, text

from benchmarks.bench_report import BASE, _stage
from models.db import open_database
from models.tables import EVENTS, LEADS, OUTBOX, TRANSITIONS


def _entered(step: str) -> str:
    """PostgreSQL: the moment lead ``i`` entered the stage of ``step`` (``_entered``'s)."""
    return f"{CREATED} + ({step}) * (1 + i % 7) * interval '1 day' + ({step}) * interval '1 hour'"


CREATED = (
    f"(timestamptz '{BASE} 00:00:00+00' + ((i * 37) % 450) * interval '1 day' "
    "+ (i % 24) * interval '1 hour')"
)


def _pg_stage(step: str, last: str) -> str:
    return _stage(step, last).replace(f"min({step}, ", f"least({step}, ")


def fill_postgres(conn: Connection, leads: int, transitions: int) -> dict[str, int]:
    """The rows ``fill`` writes, written by PostgreSQL (the same values and timestamps)."""
    per = max(1, transitions // leads)
    total = min(transitions, leads * per)
    last = per - 1
    moved = f"{CREATED} + {last} * (1 + i % 7) * interval '1 day'"
    sent = f"{CREATED} + interval '1 day 9 hours'"
    seq = "FROM generate_series(1, :n) AS i"
    conn.execute(
        text(
            "INSERT INTO lead (id, email, company, source, deal_value, attributes, status, "
            "pipeline, stage, stage_entered_at, round, recycle_count, stuck, fit_score, "
            "engagement_score, score, won_at, closed_at, created_at, updated_at) "
            "SELECT i, 'lead' || i || '@bench.test', 'Company ' || (i % 5000), "
            "CASE i % 4 WHEN 0 THEN 'web' WHEN 1 THEN 'referral' WHEN 2 THEN 'event' END, "
            "(i % 50) * 500.0, '{}', "
            f"CASE WHEN i % 10 = 1 THEN 'closed' WHEN i % 10 = 2 AND {last} = 2 THEN 'callback' "
            "ELSE 'active' END, 'b2b', "
            f"{_pg_stage(str(last), str(last))}, {moved}, 0, 0, i % 13 = 0, 0, 0, 0, "
            f"CASE i % 10 WHEN 0 THEN {moved} END, CASE i % 10 WHEN 1 THEN {moved} END, "
            f"{CREATED}, {CREATED} {seq}"
        ),
        {"n": leads},
    )
    conn.execute(
        text(
            "INSERT INTO stage_transition (lead_id, pipeline, from_stage, from_entered_at, "
            "to_stage, at, kind, reason, actor) "
            "SELECT i, 'b2b', from_stage, "
            f"CASE WHEN from_stage IS NOT NULL THEN {_entered('s - 1')} END, "
            f"{_pg_stage('s', str(last))}, {_entered('s')}, "
            "CASE s WHEN 0 THEN 'intake' ELSE 'rule' END, '', 'bench' "
            "FROM (SELECT i, s, CASE WHEN s > 0 THEN "
            f"{_pg_stage('s - 1', str(last))} END AS from_stage "
            "FROM (SELECT j / :per + 1 AS i, j % :per AS s "
            "FROM generate_series(0, :last) AS j) AS steps) AS moves"
        ),
        {"per": per, "last": total - 1},
    )
    conn.execute(
        text(
            "INSERT INTO outbound_message (id, lead_id, cadence, step, round, kind, template, "
            "variant, to_email, status, due_at, sent_at, attempts, created_at, updated_at) "
            "SELECT i, i, 'outbound', 'intro', 0, 'cadence', "
            "CASE i % 3 WHEN 0 THEN 'welcome' ELSE 'followup_value' END, "
            "CASE i % 3 WHEN 1 THEN 'a' WHEN 2 THEN 'b' END, 'lead' || i || '@bench.test', "
            "CASE i % 20 WHEN 0 THEN 'bounced' WHEN 1 THEN 'pending' ELSE 'sent' END, "
            f"{sent}, CASE WHEN i % 20 > 1 THEN {sent} END, 1, {sent}, {sent} {seq}"
        ),
        {"n": leads},
    )
    conn.execute(
        text(
            "INSERT INTO event (lead_id, type, occurred_at, data, message_id) "
            "SELECT i, CASE i % 5 WHEN 0 THEN 'email_opened' WHEN 1 THEN 'email_clicked' "
            "WHEN 2 THEN 'replied' WHEN 3 THEN 'email_opened' ELSE 'unsubscribed' END, "
            f"{sent} + (i % 72) * interval '1 hour', '{{}}', i {seq}"
        ),
        {"n": leads},
    )
    for table in ("lead", "outbound_message"):  # ids were given: move the sequences on
        conn.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"), {"n": leads}
        )
    return {"leads": leads, "transitions": total, "messages": leads, "events": leads}


def build_postgres(url: str, leads: int, transitions: int) -> dict[str, int]:
    engine = open_database(url)
    indexes: list[Index] = [i for t in (LEADS, TRANSITIONS, OUTBOX, EVENTS) for i in t.indexes]
    with engine.begin() as conn:
        for table in ("event", "outbound_message", "stage_transition", "lead"):
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
        for index in indexes:
            index.drop(conn)
        counts = fill_postgres(conn, leads, transitions)
        for index in indexes:
            index.create(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()
    return counts
