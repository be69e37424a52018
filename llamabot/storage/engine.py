"""Database engine setup and migrations: SQLite in WAL mode, schema from Alembic only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import URL, Connection, Engine, event, inspect, make_url, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from llamabot.errors import StartupError
from llamabot.storage.failures import folder_problem, storage_error

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

log = logging.getLogger(__name__)

# The newest migration in migrations/versions (a test keeps the two equal). A database
# already there starts without importing Alembic, a third of a second on a small machine.
SCHEMA_REVISION = "0012"

# A writer waits this long for another writer's lock instead of failing "database is locked".
BUSY_TIMEOUT_MS = 10_000


def migrations_dir() -> Path:
    """Alembic's script folder: inside the installed wheel, or the checkout's migrations/."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if (packaged / "env.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent.parent / "migrations"
    if (checkout / "env.py").is_file():
        return checkout
    raise RuntimeError(
        "llamabot's migrations are missing from this installation; reinstall llamabot"
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Set before the first table exists (it is a no-op afterwards): deleted history then
    # gives its pages back with `PRAGMA incremental_vacuum` instead of a full VACUUM.
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # Deleted rows are overwritten, not merely unlinked: forgetting really forgets.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL is durable across application crashes in WAL mode and avoids an fsync a commit.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _driver_missing(url: str | URL, exc: ModuleNotFoundError) -> StartupError:
    backend = make_url(url).get_backend_name()
    extra = " (pip install 'llamabot[postgres]')" if backend == "postgresql" else ""
    return StartupError(
        f"[storage] url needs the Python package {exc.name!r}, which is not installed{extra}"
    )


def create_engine(url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        engine = create_async_engine(url)
    except ModuleNotFoundError as exc:
        raise _driver_missing(url, exc) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


# The synchronous drivers (APScheduler's job store, `llamabot db` tools), by backend.
_SYNC_DRIVERS = {"postgresql": "postgresql+psycopg"}


def sync_url(url: str | URL) -> URL:
    """The same database through its synchronous driver (``sqlite+aiosqlite`` -> ``sqlite``,
    ``postgresql+asyncpg`` -> ``postgresql+psycopg``)."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    return parsed.set(drivername=_SYNC_DRIVERS.get(backend, backend))


def is_in_memory(url: str | URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (one per connection)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def create_sync_engine(url: str | URL) -> Engine:
    """A synchronous engine on the same database, with the same SQLite settings."""
    try:
        engine = sa_create_engine(sync_url(url))
    except ModuleNotFoundError as exc:
        raise _driver_missing(url, exc) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def alembic_config() -> AlembicConfig:
    """An Alembic config pointing at llamabot's migrations, usable without alembic.ini."""
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    return cfg


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def _current(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    version = connection.scalar(text("SELECT version_num FROM alembic_version"))
    return str(version) if version is not None else None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` (the newest by default).

    Raises :class:`StartupError` saying what to fix when the database cannot be opened
    or written (a missing or read-only folder, a full disk).
    """
    _check_folder(engine)
    try:
        await _upgrade_to(engine, revision)
    except (DBAPIError, OSError) as exc:
        log.debug("opening the database failed", exc_info=True)
        raise storage_error(engine.url.render_as_string(), exc) from None


def _check_folder(engine: AsyncEngine) -> None:
    # Checked before connecting: aiosqlite's worker thread outlives a failed connect and
    # then reports to an event loop that may be closed by then (a second traceback).
    problem = folder_problem(engine.url.render_as_string(hide_password=False))
    if problem is not None:
        raise StartupError(problem)


async def _upgrade_to(engine: AsyncEngine, revision: str) -> None:
    if revision == "head":
        async with engine.connect() as connection:
            if await connection.run_sync(_current) == SCHEMA_REVISION:
                return
    async with engine.begin() as connection:
        before = await connection.run_sync(_current)
        await connection.run_sync(_upgrade, revision)
        after = await connection.run_sync(_current)
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None`` when never migrated)."""
    _check_folder(engine)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    except (DBAPIError, OSError) as exc:
        log.debug("opening the database failed", exc_info=True)
        raise storage_error(engine.url.render_as_string(), exc) from None


def head_revision() -> str | None:
    """The newest revision llamabot ships, as Alembic reads it from the migration files."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
