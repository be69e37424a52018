"""Alembic environment: llamabot passes a live connection; the CLI may pass a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from llamabot.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = config.get_main_option("sqlalchemy.url") or "sqlite:///llamabot.db"
    engine = create_engine(url.replace("+aiosqlite", ""))
    with engine.begin() as conn:
        _run(conn)
