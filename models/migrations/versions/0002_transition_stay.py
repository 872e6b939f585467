"""transition stay: stage_transition.from_entered_at, backfilled, and the report's index

Each transition row now also says when the lead entered ``from_stage``, so a row is one
completed stay and the report aggregates stays without a window function per lead.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 17:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lead's previous transition, in the order the history is replayed (``at``, then ``id``):
# its ``at`` is when the lead entered this row's ``from_stage``. A row without a from_stage
# (intake, revival from the callback list) left no stage and keeps NULL.
BACKFILL = """
UPDATE stage_transition SET from_entered_at = (
    SELECT max(prev.at) FROM stage_transition AS prev
    WHERE prev.lead_id = stage_transition.lead_id
      AND (prev.at < stage_transition.at
           OR (prev.at = stage_transition.at AND prev.id < stage_transition.id))
)
WHERE from_stage IS NOT NULL
"""


def upgrade() -> None:
    with op.batch_alter_table('stage_transition', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('from_entered_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    op.execute(BACKFILL)
    with op.batch_alter_table('stage_transition', schema=None) as batch_op:
        batch_op.create_index(
            'ix_transition_stay',
            ['pipeline', 'from_stage', 'to_stage', 'at', 'from_entered_at'],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table('stage_transition', schema=None) as batch_op:
        batch_op.drop_index('ix_transition_stay')
        batch_op.drop_column('from_entered_at')
