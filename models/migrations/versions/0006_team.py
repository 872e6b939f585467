"""team: a lead's owner, the history of owner changes, and each group's round robin

``lead.owner`` is a team member's id (``team.members`` in the YAML); ``ix_lead_owner`` puts it
first so a member's leads, an inactive member's leads and the unassigned ones are index ranges.
``owner_change`` is append-only, like ``stage_transition``. ``round_robin`` keeps where each
group's smooth weighted round robin stands, so consecutive and overlapping runs continue it.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    when = sqlmodel.sql.sqltypes.UTCDateTime
    # a plain ADD COLUMN (no batch rebuild of the table on SQLite, so its indexes stay)
    op.add_column("lead", sa.Column("owner", text(length=64), nullable=True))
    op.create_index("ix_lead_owner", "lead", ["owner", "status", "pipeline", "stage"], unique=False)
    op.create_table(
        "owner_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=False),
        sa.Column("from_owner", text(length=64), nullable=True),
        sa.Column("to_owner", text(length=64), nullable=True),
        sa.Column("at", when(), nullable=False),
        sa.Column("kind", text(length=16), nullable=False),
        sa.Column("rule", sa.Integer(), nullable=True),
        sa.Column("group_id", text(length=64), nullable=True),
        sa.Column("reason", text(length=500), nullable=False),
        sa.Column("actor", text(length=100), nullable=False),
        sa.Column("config_hash", text(length=64), nullable=True),
        sa.ForeignKeyConstraint(["lead_id"], ["lead.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_owner_change_lead_at", "owner_change", ["lead_id", "at"], unique=False)
    op.create_index("ix_owner_change_to_at", "owner_change", ["to_owner", "at"], unique=False)
    op.create_table(
        "round_robin",
        sa.Column("group_id", text(length=64), nullable=False),
        sa.Column("member_id", text(length=64), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("current", sa.BigInteger(), nullable=False),
        sa.Column("picks", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", when(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "member_id"),
    )


def downgrade() -> None:
    op.drop_table("round_robin")
    op.drop_index("ix_owner_change_to_at", table_name="owner_change")
    op.drop_index("ix_owner_change_lead_at", table_name="owner_change")
    op.drop_table("owner_change")
    op.drop_index("ix_lead_owner", table_name="lead")
    with op.batch_alter_table("lead") as batch:  # SQLite drops a column by rebuilding
        batch.drop_column("owner")
