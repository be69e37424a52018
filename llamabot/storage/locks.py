"""Locks between bot processes that share a database.

SQLite is one process's database: a second ``llamabot run`` (or ``chat``) on the same
file would fire every reminder twice, so it is refused. The lock is an advisory
``flock`` on a file beside the database: the kernel drops it when the process dies,
even by ``kill -9``, so a crash never leaves the database locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

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
