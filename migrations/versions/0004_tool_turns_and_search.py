"""tool calls and results in the history; full-text search of a conversation's messages

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite: an FTS5 index over messages.content, kept in step by triggers. PostgreSQL: a
# GIN index over the text's tsvector ('simple': no language's stemming assumed).
_SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', "
    "content_rowid='id')",
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
    "INSERT INTO messages_fts(messages_fts, rowid, content) "
    "VALUES ('delete', old.id, old.content); "
    "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END",
    "INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("tool_calls", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tool_name", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("tool_call_id", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_SEARCH:
            op.execute(statement)
    else:
        op.execute(
            "CREATE INDEX ix_messages_content_search ON messages "
            "USING gin (to_tsvector('simple', content))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER messages_fts_{name}")
        op.execute("DROP TABLE messages_fts")
    else:
        op.execute("DROP INDEX ix_messages_content_search")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("tool_call_id")
        batch.drop_column("tool_name")
        batch.drop_column("tool_calls")
