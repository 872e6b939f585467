"""alerts: raised alerts (unique kind, subject, period), their deliveries per channel, and the
sending pauses the guard or a person sets (at most one holds: ``active`` is unique)

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    when = sqlmodel.sql.sqltypes.UTCDateTime
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", text(length=32), nullable=False),
        sa.Column("subject", text(length=200), nullable=False),
        sa.Column("period", text(length=100), nullable=False),
        sa.Column("title", text(length=500), nullable=False),
        sa.Column("detail", text(length=2000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("since", when(), nullable=True),
        sa.Column("raised_at", when(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "subject", "period", name="uq_alert_key"),
    )
    op.create_index("ix_alert_kind_lead_since", "alert", ["kind", "lead_id", "since"], unique=False)
    op.create_index("ix_alert_raised", "alert", ["raised_at"], unique=False)
    op.create_table(
        "alert_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("channel", text(length=64), nullable=False),
        sa.Column("status", text(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("due_at", when(), nullable=False),
        sa.Column("claim_token", text(length=64), nullable=True),
        sa.Column("claimed_at", when(), nullable=True),
        sa.Column("sent_at", when(), nullable=True),
        sa.Column("last_error", text(length=1000), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "channel", name="uq_alert_delivery"),
    )
    op.create_index(
        "ix_alert_delivery_status_due", "alert_delivery", ["status", "due_at"], unique=False
    )
    op.create_table(
        "sending_pause",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=True),
        sa.Column("paused_at", when(), nullable=False),
        sa.Column("paused_by", text(length=100), nullable=False),
        sa.Column("reason", text(length=500), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.Column("resumed_at", when(), nullable=True),
        sa.Column("resumed_by", text(length=100), nullable=True),
        sa.Column("resume_reason", text(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active"),
    )


def downgrade() -> None:
    op.drop_table("sending_pause")
    op.drop_index("ix_alert_delivery_status_due", table_name="alert_delivery")
    op.drop_table("alert_delivery")
    op.drop_index("ix_alert_raised", table_name="alert")
    op.drop_index("ix_alert_kind_lead_since", table_name="alert")
    op.drop_table("alert")
