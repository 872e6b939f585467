"""report activity indexes: covering indexes for the deals at risk, the funnel and first replies

Measured with ``python -m benchmarks.bench_report`` (1,000,000 leads, 5,000,000 transitions):

- ``ix_lead_report_stage`` gains ``next_action_at``, so the deals-at-risk pass over the open
  deals reads the index alone (it fetched every open lead's row for that one column).
- ``ix_event_occurred`` and ``ix_outbox_sent``: the leads with an event or a sent email in the
  idle window, read from the window's rows instead of one seek per open deal.
- ``ix_transition_lead_at`` gains ``pipeline, to_stage``: the funnel's furthest stage per lead
  is read from the index alone, in lead order.
- ``ix_event_type_at`` gains ``lead_id``: the leads that replied, for the first response.

The widened indexes keep their names and their leading columns, so every query that used
them still does.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAGE = ["pipeline", "stage", "status", "stage_entered_at", "stuck", "deal_value"]
# (table, name): (columns before, columns after); None: the index is new.
WIDENED: dict[tuple[str, str], tuple[list[str] | None, list[str]]] = {
    ("lead", "ix_lead_report_stage"): (STAGE, [*STAGE, "next_action_at"]),
    ("stage_transition", "ix_transition_lead_at"): (
        ["lead_id", "at"],
        ["lead_id", "at", "pipeline", "to_stage"],
    ),
    ("event", "ix_event_type_at"): (["type", "occurred_at"], ["type", "occurred_at", "lead_id"]),
    ("event", "ix_event_occurred"): (None, ["occurred_at", "lead_id"]),
    ("outbound_message", "ix_outbox_sent"): (None, ["sent_at", "lead_id"]),
}


def upgrade() -> None:
    for (table, name), (before, after) in WIDENED.items():
        if before is not None:
            op.drop_index(name, table_name=table)
        op.create_index(name, table, after, unique=False)


def downgrade() -> None:
    for (table, name), (before, _after) in reversed(WIDENED.items()):
        op.drop_index(name, table_name=table)
        if before is not None:
            op.create_index(name, table, before, unique=False)
