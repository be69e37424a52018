"""Locks between bot processes that share a database.

PostgreSQL serves several processes; one of them is the leader that runs the scheduled
jobs (:class:`LeaderLock`).

SQLite is one process's database: a second ``llamabot run`` (or ``chat``) on the same
file would fire every reminder twice, so it is refused. The lock is an advisory
``flock`` on a file beside the database: the kernel drops it when the process dies,
even by ``kill -9``, so a crash never leaves the database locked.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from llamabot.errors import StartupError


class ProcessLock:
    """Held while this process owns an SQLite database; ``release`` gives it back."""

    def __init__(self, path: Path, handle: int) -> None:
        self.path = path
        self._handle: int | None = handle

    def release(self) -> None:
        """Give the lock back (the file stays, empty of meaning)."""
        if self._handle is not None:
            os.close(self._handle)  # closing the descriptor drops the flock
            self._handle = None


def lock_path(database: Path) -> Path:
    """The file whose lock says "a llamabot process owns this database"."""
    return database.with_name(database.name + ".lock")


def claim_sqlite(url: str) -> ProcessLock | None:
    """Lock the SQLite file of ``url`` for this process; ``None`` for other databases.

    Raises :class:`StartupError` naming the other process when one holds it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    database = Path(str(parsed.database))
    path = lock_path(database)
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None  # a read-only folder: the database check that follows says so clearly
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(handle, 32, 0).decode(errors="replace").strip()
        os.close(handle)
        who = f" (pid {pid})" if pid else ""
        raise StartupError(
            f"another llamabot process{who} is using {database}; SQLite serves one "
            "bot process at a time (a second one would send every reminder twice). Stop it "
            "first, or move to PostgreSQL to run several processes ([storage] url)"
        ) from None
    os.ftruncate(handle, 0)
    os.pwrite(handle, str(os.getpid()).encode(), 0)
    return ProcessLock(path, handle)


class LeaderLock:
    """Leadership among processes sharing one PostgreSQL database: an advisory lock.

    The lock lives as long as its connection: when the leader dies (even by ``kill -9``)
    PostgreSQL drops it, and the next ``hold`` of another process takes it.
    """

    def __init__(self, url: str, name: str) -> None:
        parsed = make_url(url)
        self._dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        digest = hashlib.sha256(name.encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: Any = None
        self.held = False

    async def hold(self) -> bool:
        """Take the lock if free, or check that this process still has it."""
        import asyncpg

        try:
            if self._conn is None or self._conn.is_closed():
                self.held = False
                self._conn = await asyncpg.connect(self._dsn, timeout=5)
            if self.held:
                await self._conn.fetchval("SELECT 1")  # the connection, hence the lock, lives
            else:
                self.held = bool(
                    await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key)
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            self.held = False
            await self.release()
        return self.held

    async def release(self) -> None:
        """Give the lock up (by closing its connection)."""
        conn, self._conn = self._conn, None
        self.held = False
        if conn is not None and not conn.is_closed():
            conn.terminate()
