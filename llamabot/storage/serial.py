"""The history's own connection: the per-message units of work, run in group commits.

A unit is a few statements on indexed rows (store a turn, read a window, queue an inbox
entry); through aiosqlite every cursor call would be a trip to the driver's thread.

Units handed in during one turn of the event loop run together in one transaction (a
group commit): under load many conversations' turns cost one commit, not one each.
Results are handed back only once their transaction committed. When a unit fails, the
group is rolled back and its units run again one by one, so a failure is only its own.

Where a group runs: on the event loop itself, on a connection that never waits for a
lock. A unit takes tens of microseconds there, a hop to a thread and back about a hundred
and twenty, and a thread holding the GIL beside the loop slowed every platform call. When
the database is busy (another connection holds SQLite's write lock: the admin page, the
scheduler's job store, ``llamabot db`` in another process), the group goes to a thread
whose connection waits for the lock; the units handed in meanwhile wait for it to commit,
then go back to the loop, in order. The loop never waits for a lock, and the WAL
is folded into the database (a checkpoint, with its fsync) in that thread too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, Engine, event

from llamabot.storage.engine import create_sync_engine

log = logging.getLogger(__name__)

T = TypeVar("T")
Unit = tuple[Callable[[Connection], Any], "asyncio.Future[Any]"]
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]

# Inline commits between two checkpoints in the thread (SQLite's own default folds the
# WAL every 1,000 pages; a commit here writes a few).
CHECKPOINT_EVERY = 200


class SerialConnection:
    """Runs ``work(connection)`` in a transaction, in the order handed in.

    ``on_rollback`` is called when a group is rolled back, or the next group runs on the
    other connection, so a cache filled by the units can forget what it holds;
    ``on_begin(connection)`` at the start of every transaction, before its units.
    """

    def __init__(
        self,
        url: str | URL,
        on_rollback: Callable[[], None] | None = None,
        on_begin: Callable[[Connection], None] | None = None,
    ) -> None:
        self._engine = create_sync_engine(url)
        self._inline_engine = _never_waiting(create_sync_engine(url))
        self._inline: Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llamabot-history")
        # Touched on the loop only: the thread is handed a group, and hands back outcomes.
        self._waiting: list[Unit] = []
        self._in_thread = False  # a group waits for the lock there: new units queue behind
        self._last: str | None = None  # which connection ran the last group
        self._commits = 0
        self._on_rollback = on_rollback
        self._on_begin = on_begin

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in a transaction; its result once that committed, or what it raised
        (nothing of it kept)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not (self._waiting or self._in_thread):  # the first of this loop turn
            loop.call_soon(self._run_here, loop)
        self._waiting.append((work, future))
        return await future

    # -- on the loop ---------------------------------------------------------------------

    def _run_here(self, loop: asyncio.AbstractEventLoop) -> None:
        group, self._waiting = self._waiting, []
        if not group:
            return
        try:
            connection = self._inline_connection()
        except Exception as exc:  # the thread's connection says why, unit by unit
            log.debug("history: no connection on the loop (%s)", exc)
            left = group
        else:
            self._switch_to("loop")
            outcomes, left = self._run_group(connection, group, wait=False)
            settle(outcomes)
            if outcomes:
                self._commits += 1
                if self._commits % CHECKPOINT_EVERY == 0:
                    self._thread.submit(self._checkpoint)
        if left:  # the write lock is held elsewhere: a thread waits for it
            log.debug("history: the database is busy; %d units go to a thread", len(left))
            self._in_thread = True
            self._thread.submit(self._drain, loop, left)

    def _inline_connection(self) -> Connection:
        if self._inline is not None and (self._inline.invalidated or self._inline.closed):
            with contextlib.suppress(Exception):  # broken: replaced below
                self._inline.close()
            self._inline = None
        if self._inline is None:
            self._inline = self._inline_engine.connect()
        return self._inline

    def _back_on_loop(self, loop: asyncio.AbstractEventLoop, outcomes: list[Outcome]) -> None:
        settle(outcomes)
        self._in_thread = False
        if self._waiting:  # handed in while the thread waited: their turn now
            loop.call_soon(self._run_here, loop)

    # -- in the thread -------------------------------------------------------------------

    def _drain(self, loop: asyncio.AbstractEventLoop, group: list[Unit]) -> None:
        """Run ``group``, waiting for the lock; the units handed in meanwhile go back to
        the loop (in order: they wait until this group's outcomes are settled)."""
        self._switch_to("thread")
        try:
            with self._engine.connect() as connection:
                outcomes, _ = self._run_group(connection, group, wait=True)
        except Exception as exc:  # the database cannot be opened: each unit says so
            outcomes = [(future, None, exc) for _, future in group]
        loop.call_soon_threadsafe(self._back_on_loop, loop, outcomes)

    def _checkpoint(self) -> None:
        try:
            with self._engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # the next one folds what this one could not
            log.debug("history: WAL checkpoint skipped (%s)", exc)

    # -- either --------------------------------------------------------------------------

    def _switch_to(self, where: str) -> None:
        # Each connection sees its own data_version: a cache checked against one must not
        # be trusted on the other.
        if self._last is not None and self._last != where:
            self._forget_cache()
        self._last = where

    def _began(self, connection: Connection) -> None:
        if self._on_begin is not None:
            self._on_begin(connection)

    def _forget_cache(self) -> None:
        if self._on_rollback is not None:
            self._on_rollback()

    def _run_group(
        self, connection: Connection, group: list[Unit], *, wait: bool
    ) -> tuple[list[Outcome], list[Unit]]:
        return run_group(connection, group, wait=wait, began=self._began, forget=self._forget_cache)

    async def aclose(self) -> None:
        """Close both connections (the thread's in its thread), then the thread."""
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        self._inline_engine.dispose()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=True)


def run_group(
    connection: Connection,
    group: list[Unit],
    *,
    wait: bool,
    began: Callable[[Connection], None],
    forget: Callable[[], None],
) -> tuple[list[Outcome], list[Unit]]:
    """(outcomes, units left): the group in one transaction, or, when a unit fails, each
    unit in its own. Without ``wait``, units that cannot get the write lock are left, unrun,
    for the caller to hand to a connection that waits. ``began(connection)`` runs at the
    start of every transaction; ``forget()`` after every rollback."""
    if len(group) > 1:
        try:
            transaction = connection.begin()  # the loop's: BEGIN IMMEDIATE
        except Exception:
            if not wait:
                return [], group
        else:
            try:
                began(connection)
                values = [work(connection) for work, _ in group]
                transaction.commit()
                futures = [future for _, future in group]
                done: list[Outcome] = [(f, v, None) for f, v in zip(futures, values, strict=True)]
                return done, []
            except BaseException:
                _roll_back(transaction)
                forget()
                # Again one by one: only the unit that fails fails.
    outcomes: list[Outcome] = []
    for index, (work, future) in enumerate(group):
        try:
            transaction = connection.begin()
        except Exception as exc:
            if not wait:
                return outcomes, group[index:]
            outcomes.append((future, None, exc))
            continue
        try:
            began(connection)
            value = work(connection)
            transaction.commit()
            outcomes.append((future, value, None))
        except BaseException as exc:
            _roll_back(transaction)
            forget()
            outcomes.append((future, None, exc))
    return outcomes, []


def _roll_back(transaction: Any) -> None:
    if transaction.is_active:
        with contextlib.suppress(Exception):  # a broken connection is replaced when next used
            transaction.rollback()


def _never_waiting(engine: Engine) -> Engine:
    """The loop's connection: transactions take the write lock first (BEGIN IMMEDIATE),
    and a lock held elsewhere fails at once instead of blocking the event loop."""

    @event.listens_for(engine, "connect")
    def no_waiting(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions begin where we say
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run in the thread
        cursor.close()

    @event.listens_for(engine, "begin")
    def immediately(connection: Connection) -> None:
        # On the driver itself: SQLAlchemy's execution path costs more than the statement.
        connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]

    return engine


def settle(outcomes: list[Outcome]) -> None:
    """Hand each unit's result (or failure) to whoever waits for it."""
    for future, value, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)
