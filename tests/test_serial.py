"""The history's serial connection: units handed in while one runs share a transaction
(a group commit), and one unit's failure stays its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from llamabot.storage.serial import SerialConnection


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "serial.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    return path


async def test_a_failing_unit_in_a_group_fails_alone(database: Path) -> None:
    rollbacks: list[int] = []
    serial = SerialConnection(f"sqlite:///{database}", on_rollback=lambda: rollbacks.append(1))
    gate, started = threading.Event(), threading.Event()

    def insert(n: int):  # type: ignore[no-untyped-def]
        def work(conn: Connection) -> int:
            if n == 1:
                started.set()
                gate.wait(10)  # holds the thread: the next units wait and form one group
            if n == 3:
                conn.execute(text("INSERT INTO t VALUES (3)"))
                raise ValueError("unit 3 fails")
            conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
            return n

        return work

    try:
        first = asyncio.ensure_future(serial.run(insert(1)))
        await asyncio.to_thread(started.wait, 10)  # unit 1 is running in the thread
        rest = [asyncio.ensure_future(serial.run(insert(n))) for n in (2, 3, 4)]
        await asyncio.sleep(0)  # one turn of the loop: each hands its unit in, then waits
        assert len(serial._waiting) == 3  # behind unit 1, as one group
        gate.set()
        assert await first == 1
        results = await asyncio.gather(*rest, return_exceptions=True)
    finally:
        await serial.aclose()
    assert results[0] == 2 and results[2] == 4
    assert isinstance(results[1], ValueError)
    with sqlite3.connect(database) as db:
        assert [row[0] for row in db.execute("SELECT n FROM t ORDER BY n")] == [1, 2, 4]
    # The group was rolled back (and the cache told), then unit 3 alone failed again.
    assert len(rollbacks) == 2
