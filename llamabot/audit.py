"""The audit log: every change made from the admin page or by an admin command, who
made it, when, and for bot.toml the diff. Kept in the bot's database (``audit_log``)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.storage.models import AuditEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Audited:
    id: int
    at: datetime
    who: str
    what: str
    diff: str


class AuditLog:
    """Writes and reads the audit log."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writing: set[asyncio.Task[None]] = set()

    async def record(self, who: str, what: str, diff: str = "") -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(AuditEntry).values(
                    at=datetime.now(UTC).replace(tzinfo=None), who=who, what=what, diff=diff
                )
            )
        log.info("audit: %s: %s", who, what)

    def record_soon(self, who: str, what: str, diff: str = "") -> None:
        """:meth:`record` from code that cannot wait (a bot.toml edit in a command)."""
        task = asyncio.get_running_loop().create_task(self.record(who, what, diff))
        self._writing.add(task)
        task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("audit: could not write an entry: %s", task.exception())

    async def settle(self) -> None:
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def recent(self, limit: int = 50, before: int | None = None) -> list[Audited]:
        """The newest entries (older than entry ``before``), newest first."""
        query = select(
            AuditEntry.id, AuditEntry.at, AuditEntry.who, AuditEntry.what, AuditEntry.diff
        ).order_by(AuditEntry.id.desc())
        if before is not None:
            query = query.where(AuditEntry.id < before)
        async with self.engine.connect() as conn:
            return [Audited(*row) for row in await conn.execute(query.limit(limit))]
