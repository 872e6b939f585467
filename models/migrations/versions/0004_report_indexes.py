"""report indexes: covering indexes for ``leadflow report`` and the stays in length order

Every report metric then reads an index in its GROUP BY order (or a few index ranges) instead
of scanning and sorting the tables; see leadflow/reporting/ and docs/scaling.md.

``ix_transition_stay_days`` is an expression index: ``STAY_ORDER`` is what
``models.tables.stay_order`` renders on each database, written out so this file does not
change with the models. SQLite cannot reflect expression indexes, so a later
``batch_alter_table('stage_transition')`` (which rebuilds the table from reflection) must
create it again.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "lead": {
        "ix_lead_report_stage": [
            "pipeline", "stage", "status", "stage_entered_at", "stuck", "deal_value"
        ],
        "ix_lead_report_source": ["pipeline", "source", "created_at", "won_at"],
        "ix_lead_report_won": ["pipeline", "won_at", "created_at", "deal_value"],
        "ix_lead_report_closed": ["pipeline", "status", "closed_at"],
    },
    "event": {"ix_event_message": ["message_id", "type", "occurred_at"]},
    "outbound_message": {"ix_outbox_lead_sent": ["lead_id", "sent_at"]},
}
STAY_ORDER = {
    "sqlite": "(julianday(at) - 2440587.5) - (julianday(from_entered_at) - 2440587.5)",
    "postgresql": "(at - from_entered_at)",
}


def upgrade() -> None:
    for table, indexes in INDEXES.items():
        for name, columns in indexes.items():
            op.create_index(name, table, columns, unique=False)
    order = sa.text(STAY_ORDER[op.get_bind().dialect.name])
    op.create_index(
        "ix_transition_stay_days",
        "stage_transition",
        ["pipeline", "from_stage", order, "at", "from_entered_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_transition_stay_days", table_name="stage_transition")
    for table, indexes in INDEXES.items():
        for name in indexes:
            op.drop_index(name, table_name=table)
