"""One synchronous connection, owned by one thread: a unit of work costs one thread hop.

Through aiosqlite every cursor call is its own trip to the driver's thread (a message's
insert and window read take eight). Here a whole unit of work runs in the thread that
owns the connection, and the event loop waits for it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import URL, Connection

from llamabot.storage.engine import create_sync_engine

T = TypeVar("T")


class SerialConnection:
    """Runs ``work(connection)`` in a transaction on a dedicated thread."""

    def __init__(self, url: str | URL) -> None:
        self._engine = create_sync_engine(url)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llamabot-history")

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as connection:
            return work(connection)

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; commit when it returns, roll back if it raises."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._in_transaction, work)

    async def aclose(self) -> None:
        """Close the connection in its own thread, then the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)
