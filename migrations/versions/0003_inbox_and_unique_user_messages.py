"""the inbox of messages not handled yet; a platform message is stored once

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("conversation_key", sa.String(length=255), nullable=False),
        sa.Column("platform_message_id", sa.String(length=64), nullable=True),
        sa.Column("inbound", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("conversation_key", "platform_message_id"),
    )
    # Earlier versions could store one platform message twice (a replayed update): keep
    # the first row's link to the platform message, so the unique index can be built.
    op.execute(
        "UPDATE messages SET platform_message_id = NULL WHERE role = 'user' "
        "AND platform_message_id IS NOT NULL AND id NOT IN ("
        "SELECT MIN(id) FROM messages WHERE role = 'user' AND platform_message_id IS NOT NULL "
        "GROUP BY conversation_id, platform_message_id)"
    )
    op.create_index(
        "uq_messages_user_platform_message",
        "messages",
        ["conversation_id", "platform_message_id"],
        unique=True,
        sqlite_where=sa.text("role = 'user'"),
        postgresql_where=sa.text("role = 'user'"),
    )


def downgrade() -> None:
    op.drop_index("uq_messages_user_platform_message", table_name="messages")
    op.drop_table("inbox")
