"""StateStore: small values the bot keeps across restarts, by key."""

from __future__ import annotations

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.storage.models import StateEntry


class StateStore:
    """Keys and text values in the ``bot_state`` table (not on any hot path)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, key: str) -> str | None:
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(StateEntry.value).where(StateEntry.key == key))
        return None if value is None else str(value)

    async def set(self, key: str, value: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(StateEntry).where(StateEntry.key == key))
            await conn.execute(insert(StateEntry).values(key=key, value=value))
