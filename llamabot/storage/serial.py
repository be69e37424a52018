"""One synchronous connection, owned by one thread: a unit of work costs one thread hop.

Through aiosqlite every cursor call is its own trip to the driver's thread (a message's
insert and window read take eight). Here a whole unit of work runs in the thread that
owns the connection, and the event loop waits for it once.

Units handed in while another runs go into the next transaction together (a group
commit): under load many conversations' turns cost one commit, not one each. Results
are handed back only once their transaction committed. When a unit fails, the group is
rolled back and its units run again one by one, so one unit's failure is only its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import URL, Connection

from llamabot.storage.engine import create_sync_engine

T = TypeVar("T")
Unit = tuple[Callable[[Connection], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class SerialConnection:
    """Runs ``work(connection)`` in a transaction on a dedicated thread.

    ``on_rollback`` is called (in that thread) when a group is rolled back, so a cache
    filled by the units can forget what they did.
    """

    def __init__(self, url: str | URL, on_rollback: Callable[[], None] | None = None) -> None:
        self._engine = create_sync_engine(url)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llamabot-history")
        self._waiting: deque[Unit] = deque()
        self._lock = threading.Lock()
        self._draining = False
        self._on_rollback = on_rollback

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction; its result once that committed, or what it raised
        (nothing of it kept)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._waiting.append((work, future))
            start, self._draining = not self._draining, True
        if start:
            self._thread.submit(self._drain, loop)
        return await future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._draining = False
                    return
                group = list(self._waiting)
                self._waiting.clear()
            outcomes = self._run_group(group)
            loop.call_soon_threadsafe(_settle, outcomes)

    def _run_group(self, group: list[Unit]) -> list[Outcome]:
        if len(group) > 1:
            try:
                with self._engine.begin() as connection:
                    values = [work(connection) for work, _ in group]
                futures = [future for _, future in group]
                return [(f, value, None) for f, value in zip(futures, values, strict=True)]
            except BaseException:
                if self._on_rollback is not None:
                    self._on_rollback()
                # Again one by one: only the unit that fails fails.
        return [self._run_one(work, future) for work, future in group]

    def _run_one(self, work: Callable[[Connection], Any], future: asyncio.Future[Any]) -> Outcome:
        try:
            with self._engine.begin() as connection:
                return future, work(connection), None
        except BaseException as exc:
            if self._on_rollback is not None:
                self._on_rollback()
            return future, None, exc

    async def aclose(self) -> None:
        """Close the connection in its own thread, then the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


def _settle(outcomes: list[Outcome]) -> None:
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
