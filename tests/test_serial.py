"""The history's serial connection: units handed in during one turn of the loop share a
transaction (a group commit), one unit's failure stays its own, and a database locked by
another connection is waited for in a thread, never on the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from llamabot.storage.engine import create_engine
from llamabot.storage.pooled import PooledGroups
from llamabot.storage.serial import SerialConnection


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "serial.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    return path


def insert(n: int, fail: bool = False):  # type: ignore[no-untyped-def]
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
        if fail:
            raise ValueError(f"unit {n} fails")
        return n

    return work


def stored(database: Path) -> list[int]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT n FROM t ORDER BY n")]


async def test_a_failing_unit_in_a_group_fails_alone(database: Path) -> None:
    rollbacks: list[int] = []
    serial = SerialConnection(f"sqlite:///{database}", on_rollback=lambda: rollbacks.append(1))
    try:
        # Handed in during one turn of the loop: one group, one transaction.
        results = await asyncio.gather(
            *(serial.run(insert(n, fail=n == 3)) for n in (1, 2, 3, 4)),
            return_exceptions=True,
        )
    finally:
        await serial.aclose()
    assert results[0] == 1 and results[1] == 2 and results[3] == 4
    assert isinstance(results[2], ValueError)
    assert stored(database) == [1, 2, 4]
    # The group was rolled back (and the cache told), then unit 3 alone failed again.
    assert len(rollbacks) == 2


async def test_a_locked_database_is_waited_for_in_a_thread_not_on_the_loop(
    database: Path,
) -> None:
    forgotten: list[int] = []
    serial = SerialConnection(f"sqlite:///{database}", on_rollback=lambda: forgotten.append(1))
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    try:
        assert await serial.run(insert(1)) == 1  # on the loop's own connection
        holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock
        first = asyncio.ensure_future(serial.run(insert(2)))
        await asyncio.sleep(0.05)  # the loop turns while the unit waits for the lock
        later = asyncio.ensure_future(serial.run(insert(3)))
        ticks = 0
        started = time.monotonic()
        while time.monotonic() - started < 0.2:
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks >= 10  # the event loop kept running throughout
        assert not first.done() and not later.done()
        holder.execute("COMMIT")
        assert await asyncio.wait_for(first, 10) == 2
        assert await asyncio.wait_for(later, 10) == 3
        assert await serial.run(insert(4)) == 4  # and back on the loop
    finally:
        holder.close()
        await serial.aclose()
    assert stored(database) == [1, 2, 3, 4]
    # Moving to the thread's connection and back: a cache must not trust either's
    # data_version across the move.
    assert len(forgotten) >= 2


async def test_on_a_pool_the_units_of_one_loop_turn_share_a_transaction_and_fail_alone(
    store_url: str,
) -> None:
    # PostgreSQL's path (the SQLite file here runs the same code through aiosqlite's pool).
    engine = create_engine(store_url)
    groups = PooledGroups(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER PRIMARY KEY)"))
        transactions: list[int] = []

        def insert_noting(n: int, fail: bool = False):  # type: ignore[no-untyped-def]
            def work(conn: Connection) -> int:
                transactions.append(id(conn.get_transaction()))
                return insert(n, fail)(conn)  # type: ignore[no-any-return]

            return work

        results = await asyncio.gather(
            *(groups.run(insert_noting(n, fail=n == 3)) for n in (1, 2, 3, 4)),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[1] == 2 and results[3] == 4
        assert isinstance(results[2], ValueError)
        # One transaction until unit 3 failed in it; then each of the four in its own.
        assert len(set(transactions[:3])) == 1 and len(transactions) == 3 + 4
        async with engine.connect() as conn:
            kept = (await conn.execute(text("SELECT n FROM t ORDER BY n"))).scalars().all()
        assert list(kept) == [1, 2, 4]
    finally:
        await engine.dispose()
