"""A database that cannot be opened or written stops the start with one line and its fix."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from llamabot.errors import StartupError
from llamabot.storage.engine import create_engine, current_revision, upgrade


async def test_a_missing_folder_is_named_with_the_command_that_creates_it(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    engine = create_engine(f"sqlite+aiosqlite:///{folder / 'bot.db'}")
    with pytest.raises(StartupError) as caught:
        await upgrade(engine)
    await engine.dispose()
    assert f"mkdir -p {folder}" in str(caught.value)
    assert not folder.exists()


async def test_a_read_only_database_file_is_named(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await upgrade(engine)
    await engine.dispose()
    database.chmod(0o444)
    if os.access(database, os.W_OK):
        pytest.skip("this user (root) may write a read-only file")
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    with pytest.raises(StartupError) as caught:
        await current_revision(engine)
    await engine.dispose()
    assert f"chmod u+rw {database}" in str(caught.value)


async def test_a_full_disk_is_said_so(tmp_path: Path) -> None:
    database = tmp_path / "bot.db"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")

    def two_pages_left(dbapi_connection: Any, _record: Any) -> None:
        # SQLite's own way to run out of room: writes past the page limit fail with
        # SQLITE_FULL, exactly as on a full disk.
        dbapi_connection.cursor().execute("PRAGMA max_page_count=2")

    event.listen(engine.sync_engine, "connect", two_pages_left)
    with pytest.raises(StartupError) as caught:
        await upgrade(engine)
    await engine.dispose()
    assert "full" in str(caught.value) and str(database) in str(caught.value)
