"""Database failures an admin can fix (a missing or read-only folder, a full disk), in one line.

SQLite reports all of these as "unable to open database file" or similar; the admin
needs the path and what to do about it, not SQLAlchemy's traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import make_url

from llamabot.errors import StartupError

CHANGE_URL = "or point [storage] url in bot.toml elsewhere"


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names (``None`` for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):
        return None  # a URI filename; SQLite resolves it
    return Path(parsed.database)


def folder_problem(url: str) -> str | None:
    """What stops the database at ``url`` from being opened for writing, found cheaply."""
    database = sqlite_file(url)
    if database is None:
        return None
    folder = database.parent
    if not folder.exists():
        return (
            f"the database folder {folder} does not exist; create it (mkdir -p {folder}) "
            + CHANGE_URL
        )
    if not folder.is_dir():
        return f"the database folder {folder} is not a folder; {CHANGE_URL.removeprefix('or ')}"
    if database.exists() and not os.access(database, os.R_OK | os.W_OK):
        return (
            f"the database {database} is read-only for this user; make it writable "
            f"(chmod u+rw {database}) {CHANGE_URL}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"the database folder {folder} is read-only for this user; make it writable "
            f"(chmod u+w {folder}) {CHANGE_URL}"
        )
    return None


def storage_error(url: str, exc: Exception) -> StartupError:
    """The one-line error for a database that failed to open or to write."""
    reason = str(getattr(exc, "orig", None) or exc)
    database = sqlite_file(url)
    where = str(database) if database is not None else make_url(url).render_as_string()
    if "disk is full" in reason or "No space left" in reason:
        return StartupError(f"the disk holding {where} is full; free some space {CHANGE_URL}")
    found = folder_problem(url)
    if found is not None:
        return StartupError(found)
    if "readonly" in reason or "read-only" in reason:
        return StartupError(f"the database {where} is read-only: {reason}; make it writable")
    if database is not None and "unable to open" in reason:
        return StartupError(
            f"cannot create or open the database {where} ({reason}); check that this user "
            f"may write in {database.parent}, {CHANGE_URL}"
        )
    return StartupError(f"the database {where} failed: {reason}; check [storage] url in bot.toml")
