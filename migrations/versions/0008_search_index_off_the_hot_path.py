"""SQLite: the full-text index is filled in batches, not by a trigger on every insert

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

The insert trigger more than doubled the cost of storing a message (27 -> 71 us with a
commit each). Now ``messages_fts_progress`` remembers the last message indexed; a search
(and the bot, every minute) indexes the rows after it in one statement. Deletes and
updates of indexed rows still reach the index at once, through triggers that skip rows
not indexed yet (telling FTS5 to delete a row it never had would corrupt it).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_INDEXED = "(SELECT indexed FROM messages_fts_progress WHERE id = 1)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER messages_fts_{name}")
    op.execute(
        "CREATE TABLE messages_fts_progress (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "indexed INTEGER NOT NULL)"
    )
    # Every message so far is in the index (0004 built it, the trigger kept it up).
    op.execute(
        "INSERT INTO messages_fts_progress (id, indexed) "
        "SELECT 1, COALESCE(MAX(id), 0) FROM messages"
    )
    op.execute(
        f"CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages "
        f"WHEN old.id <= {_INDEXED} BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.id, old.content); END"
    )
    op.execute(
        f"CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages "
        f"WHEN old.id <= {_INDEXED} BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.id, old.content); "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP TRIGGER messages_fts_delete")
    op.execute("DROP TRIGGER messages_fts_update")
    op.execute(
        "INSERT INTO messages_fts(rowid, content) SELECT id, content FROM messages "
        f"WHERE id > {_INDEXED}"
    )
    op.execute("DROP TABLE messages_fts_progress")
    op.execute(
        "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.id, old.content); END"
    )
    op.execute(
        "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN "
        "INSERT INTO messages_fts(messages_fts, rowid, content) "
        "VALUES ('delete', old.id, old.content); "
        "INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content); END"
    )
