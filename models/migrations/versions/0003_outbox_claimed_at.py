"""index outbound_message.claimed_at (daily and per-domain caps count today's claims)

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_claimed_at", "outbound_message", ["claimed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_outbox_claimed_at", table_name="outbound_message")
