"""mailbox sync: the messages read from the mailbox and a checkpoint per folder

``inbound_message.key`` is unique (a message's Message-ID, or a hash of its headers), which is
what makes a sync exactly-once across re-syncs, crashes and syncs running side by side.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    text = sqlmodel.sql.sqltypes.AutoString
    when = sqlmodel.sql.sqltypes.UTCDateTime
    op.create_table(
        "inbound_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", text(length=400), nullable=False),
        sa.Column("mailbox", text(length=300), nullable=False),
        sa.Column("folder", text(length=200), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("received_at", when(), nullable=False),
        sa.Column("synced_at", when(), nullable=False),
        sa.Column("kind", text(length=16), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("matched_by", text(length=16), nullable=True),
        sa.Column("from_email", text(length=320), nullable=True),
        sa.Column("subject", text(length=1000), nullable=True),
        sa.Column("snippet", text(length=2000), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index(
        "ix_inbound_lead_received", "inbound_message", ["lead_id", "received_at"], unique=False
    )
    op.create_index(
        "ix_inbound_kind_received", "inbound_message", ["kind", "received_at"], unique=False
    )
    op.create_table(
        "mailbox_checkpoint",
        sa.Column("mailbox", text(length=300), nullable=False),
        sa.Column("folder", text(length=200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("synced_at", when(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox", "folder", "uidvalidity"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_checkpoint")
    op.drop_index("ix_inbound_kind_received", table_name="inbound_message")
    op.drop_index("ix_inbound_lead_received", table_name="inbound_message")
    op.drop_table("inbound_message")
