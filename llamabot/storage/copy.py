"""`llamabot db copy`: move a bot's database (history, inbox, pending jobs) to another one.

Rows keep their ids and are copied in id order, in batches that each commit: a copy cut
short resumes where the target stops, and a second run copies nothing twice. The copy
is checked by counting each table on both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.storage.engine import upgrade
from llamabot.storage.models import Conversation, InboxEntry, Message, SchedulerJob

log = logging.getLogger(__name__)

BATCH = 2_000
# Parents before children (messages refer to conversations).
_TABLES: list[Table] = [
    Conversation.__table__,  # type: ignore[list-item]
    Message.__table__,  # type: ignore[list-item]
    InboxEntry.__table__,  # type: ignore[list-item]
    SchedulerJob.__table__,  # type: ignore[list-item]
]


@dataclass(frozen=True, slots=True)
class Copied:
    """One table's rows: in the source, in the target after the copy, copied this run."""

    table: str
    source: int
    target: int
    copied: int

    @property
    def complete(self) -> bool:
        return self.target >= self.source


async def copy_database(
    source: AsyncEngine, target: AsyncEngine, progress: Callable[[str, int], None] | None = None
) -> list[Copied]:
    """Copy every llamabot table from ``source`` into ``target`` (migrated to head first)."""
    await upgrade(source)
    await upgrade(target)
    report = []
    for table in _TABLES:
        copied = await _copy_table(source, target, table, progress)
        if target.dialect.name == "postgresql" and table.name != SchedulerJob.__tablename__:
            async with target.begin() as conn:
                # Rows came with their ids: move the id sequence past them.
                await conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"
                    )
                )
        report.append(
            Copied(table.name, await _count(source, table), await _count(target, table), copied)
        )
    return report


async def _count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)) or 0)


async def _copy_table(
    source: AsyncEngine,
    target: AsyncEngine,
    table: Table,
    progress: Callable[[str, int], None] | None,
) -> int:
    key = next(iter(table.primary_key.columns))
    insert = (postgresql.insert if target.dialect.name == "postgresql" else sqlite.insert)(table)
    statement = insert.on_conflict_do_nothing()
    last = None
    if table.name != SchedulerJob.__tablename__:
        # Integer ids, copied in order: everything up to the target's newest is there.
        # (Job ids are text, ordered differently by each database: all are offered.)
        async with target.connect() as conn:
            last = await conn.scalar(select(func.max(key)))
    copied = 0
    while True:
        query = select(table).order_by(key).limit(BATCH)
        if last is not None:
            query = query.where(key > last)
        async with source.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
        if not rows:
            return copied
        async with target.begin() as conn:
            await conn.execute(statement, rows)
        copied += len(rows)
        last = rows[-1][key.name]
        if progress is not None:
            progress(table.name, copied)
