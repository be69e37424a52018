"""memory: rolling summaries per conversation, and facts kept about people

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "summaries",
        sa.Column(
            "conversation_id",
            sa.Integer(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        sa.Column("covers_through", sa.Integer(), nullable=False),
        sa.Column("facts_through", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "person_facts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("person", sa.String(length=64), nullable=False),
        sa.Column("persona", sa.String(length=128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_person_facts_person_persona", "person_facts", ["person", "persona"])


def downgrade() -> None:
    op.drop_index("ix_person_facts_person_persona", "person_facts")
    op.drop_table("person_facts")
    op.drop_table("summaries")
