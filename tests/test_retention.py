"""Retention and deletion: old history goes, and deleted text is really gone from disk."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update

from llamabot.events import ChannelRef
from llamabot.retention import parse_age, prune_older_than
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.storage.models import Message

CHANNEL = ChannelRef("console", "local", is_private=True)


async def store_at(where: Path | str) -> HistoryStore:
    """A migrated store: ``where`` is an SQLite file or a database URL."""
    url = f"sqlite+aiosqlite:///{where}" if isinstance(where, Path) else where
    engine = create_engine(url)
    await upgrade(engine)
    return HistoryStore(engine)


async def age_messages(store: HistoryStore, contents: list[str], days: int) -> None:
    then = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
    async with store.engine.begin() as conn:
        for content in contents:
            await conn.execute(
                update(Message).where(Message.content == content).values(created_at=then)
            )


def message(content: str) -> NewMessage:
    return NewMessage(role="user", content=content, tokens=1, author_id="console:alice")


def test_ages_are_read_as_the_admin_writes_them() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(ValueError, match="30d"):
        parse_age("a month")


async def test_prune_removes_only_the_old_rows(store_url: str) -> None:
    store = await store_at(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(conversation, message("ancient"), message("recent"), message("today"))
    await age_messages(store, ["ancient"], 40)
    await age_messages(store, ["recent"], 10)
    assert await prune_older_than(store, timedelta(days=30)) == 1
    turns = await store.window(conversation, 10, 100)
    assert [t.content for t in turns] == ["recent", "today"]
    await store.engine.dispose()


async def test_deleted_text_is_gone_from_the_files_and_space_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = await store_at(path)
    conversation = await store.conversation_id(CHANNEL)
    secret = "SECRET-" + "x" * 200
    await store.append(conversation, *[message(f"{secret}{i}") for i in range(2000)])
    await store.reclaim_space()
    size_full = path.stat().st_size
    assert await store.forget_author("console:alice") == 2000
    async with store.engine.connect() as conn:
        free_pages = (await conn.execute(text("PRAGMA freelist_count"))).scalar()
    await store.engine.dispose()
    assert free_pages == 0
    assert path.stat().st_size < size_full / 4
    for file in tmp_path.iterdir():
        assert b"SECRET-" not in file.read_bytes(), file.name


def test_db_prune_command_prints_what_it_removed(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[storage]\nurl = "sqlite+aiosqlite:///bot.db"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llamabot.cli",
            "db",
            "prune",
            "--older-than=30d",
            f"--config={config}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "deleted 0 message(s) older than 30d" in result.stdout
