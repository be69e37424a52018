"""HistoryStore: persistence, the window and its limits, and the schema's migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, inspect, text

from llamabot.events import ChannelRef
from llamabot.storage.engine import SCHEMA_REVISION, current_revision, head_revision, upgrade
from llamabot.storage.engine import create_engine as create_async_engine
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.storage.models import Base, is_modelled

CHANNEL = ChannelRef("console", "local", is_private=True)


async def open_store(where: Path | str) -> HistoryStore:
    """A migrated store: ``where`` is an SQLite file or a database URL."""
    url = f"sqlite+aiosqlite:///{where}" if isinstance(where, Path) else where
    engine = create_async_engine(url)
    await upgrade(engine)
    return HistoryStore(engine)


def user(text: str, tokens: int = 1) -> NewMessage:
    return NewMessage(role="user", content=text, tokens=tokens, author_id="console:alice")


async def test_migration_from_empty_creates_the_schema_at_head(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "h.db")
    assert await current_revision(store.engine) == head_revision()
    async with store.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
    assert {"conversations", "messages", "alembic_version"} <= tables
    assert mode == "wal"
    await store.engine.dispose()


def test_models_match_the_migrations(tmp_path: Path) -> None:
    import asyncio

    path = tmp_path / "m.db"

    async def migrate() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"include_name": is_modelled}), Base.metadata
        )
    engine.dispose()
    assert diff == []


async def test_history_survives_reopening_the_database(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(conversation, user("remember me"))
    await store.engine.dispose()

    again = await open_store(store_url)
    assert await again.conversation_id(CHANNEL) == conversation
    turns = await again.window(conversation, 10, 100)
    assert [t.content for t in turns] == ["remember me"]
    await again.engine.dispose()


async def test_window_keeps_the_newest_messages_by_count(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(conversation, *[user(f"m{i}") for i in range(10)])
    turns = await store.window(conversation, 4, 1000)
    assert [t.content for t in turns] == ["m6", "m7", "m8", "m9"]
    await store.engine.dispose()


async def test_window_drops_the_oldest_to_fit_the_token_budget(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(conversation, *[user(f"m{i}", tokens=10) for i in range(10)])
    turns = await store.window(conversation, 100, 35)
    assert [t.content for t in turns] == ["m7", "m8", "m9"]
    await store.engine.dispose()


async def test_the_newest_turn_is_kept_even_when_over_budget(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(conversation, user("old", 1), user("huge", 500))
    assert [t.content for t in await store.window(conversation, 10, 100)] == ["huge"]
    await store.engine.dispose()


async def test_failed_replies_never_enter_the_window(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(
        conversation,
        user("question"),
        NewMessage(role="assistant", content="half an ans", tokens=3, status="interrupted"),
    )
    assert [t.content for t in await store.window(conversation, 10, 100)] == ["question"]
    await store.engine.dispose()


async def test_conversations_are_kept_apart(store_url: str) -> None:
    store = await open_store(store_url)
    a = await store.conversation_id(ChannelRef("discord", "1"))
    b = await store.conversation_id(ChannelRef("discord", "1", thread_id="2"))
    assert a != b
    await store.append(a, user("in a"))
    assert await store.window(b, 10, 100) == []
    await store.engine.dispose()


async def test_window_reads_through_the_index(tmp_path: Path) -> None:
    """The window's cost must not grow with the history: SQLite has to use the index."""
    store = await open_store(tmp_path / "h.db")
    query = (
        "EXPLAIN QUERY PLAN SELECT role, content FROM messages "
        "WHERE conversation_id = 1 AND status = 'ok' ORDER BY id DESC LIMIT 40"
    )

    def plan(conn: Connection) -> str:
        return " ".join(str(row[-1]) for row in conn.execute(text(query)))

    async with store.engine.connect() as conn:
        detail = await conn.run_sync(plan)
    assert "ix_messages_conversation_id_id" in detail
    assert "TEMP B-TREE" not in detail  # no sort of the whole conversation
    await store.engine.dispose()


async def test_clear_and_forget_author(store_url: str) -> None:
    store = await open_store(store_url)
    a = await store.conversation_id(CHANNEL)
    b = await store.conversation_id(ChannelRef("console", "other", is_private=True))
    bob = NewMessage(role="user", content="bob", tokens=1, author_id="console:bob")
    await store.append(a, user("alice 1"), bob)
    await store.append(b, user("alice 2"))
    assert await store.forget_author("console:alice") == 2
    assert [t.content for t in await store.window(a, 10, 100)] == ["bob"]
    assert await store.clear(a) == 1
    assert await store.count() == 0
    await store.engine.dispose()


def test_the_schema_revision_constant_is_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_REVISION


async def test_a_platform_message_is_stored_once(store_url: str) -> None:
    store = await open_store(store_url)
    cid = await store.conversation_id(CHANNEL)
    first = NewMessage(role="user", content="hi", tokens=1, platform_message_id="42")
    assert await store.append_and_window(cid, first, 10, 100) is not None
    assert await store.append_and_window(cid, first, 10, 100) is None  # a replayed update
    other = NewMessage(role="user", content="hi again", tokens=1, platform_message_id="43")
    assert await store.append_and_window(cid, other, 10, 100) is not None
    assert await store.count(cid) == 2
    await store.engine.dispose()


async def test_migrating_a_history_with_replayed_messages_keeps_them_all(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    await upgrade(engine, "0002")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO conversations (key, platform, chat_id, is_private, created_at) "
                "VALUES ('telegram:1', 'telegram', '1', 1, '2026-12-01 00:00:00')"
            )
        )
        for content in ("asked", "asked again by a replay"):
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, role, content, tokens, status, "
                    "platform_message_id, created_at) "
                    "VALUES (1, 'user', :content, 1, 'ok', '7', '2026-12-01 00:00:00')"
                ),
                {"content": content},
            )
    await upgrade(engine)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT content, platform_message_id FROM messages ORDER BY id")
            )
        ).all()
    assert [tuple(r) for r in rows] == [("asked", "7"), ("asked again by a replay", None)]
    await engine.dispose()


async def test_models_match_the_migrations_on_both_dialects(store_url: str) -> None:
    engine = create_async_engine(store_url)
    await upgrade(engine)

    def compare(conn: Connection) -> list[object]:
        return list(
            compare_metadata(
                MigrationContext.configure(conn, opts={"include_name": is_modelled}), Base.metadata
            )
        )

    async with engine.connect() as conn:
        diff = await conn.run_sync(compare)
    await engine.dispose()
    assert diff == []


async def test_search_finds_words_in_one_conversation_best_first(store_url: str) -> None:
    store = await open_store(store_url)
    here = await store.conversation_id(CHANNEL)
    there = await store.conversation_id(ChannelRef("console", "elsewhere"))
    await store.append(
        here,
        user("the train leaves at nine"),
        user("lunch: soup"),
        user("train train: the night train is late"),
        NewMessage(role="assistant", content="a train reply cut off", tokens=3, status="failed"),
    )
    await store.append(there, user("another chat's train"))
    found = await store.search(here, "Train?")
    assert [f.content for f in found] == [
        "train train: the night train is late",
        "the train leaves at nine",
    ]
    assert await store.search(here, "  !!  ") == []
    assert await store.search(here, 'quote" OR *') == []  # not FTS syntax: just words
    await store.engine.dispose()


async def test_forgotten_messages_are_not_found_any_more(store_url: str) -> None:
    store = await open_store(store_url)
    conversation = await store.conversation_id(CHANNEL)
    await store.append(
        conversation, NewMessage("user", "my secret is 4711", 4, author_id="console:a")
    )
    await store.forget_author("console:a")
    assert await store.search(conversation, "secret 4711") == []
    await store.engine.dispose()


async def test_the_search_index_stays_sound_when_indexed_and_new_messages_go(
    tmp_path: Path,
) -> None:
    store = await open_store(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    conversation = await store.conversation_id(CHANNEL)
    said = [NewMessage("user", f"llama fact {i}", 3, author_id="console:a") for i in range(3)]
    await store.append(conversation, *said[:2])
    assert [f.content for f in await store.search(conversation, "fact")]  # indexed now
    await store.append(conversation, said[2], user("another llama"))  # not indexed yet
    assert await store.forget_author("console:a") == 3
    assert [f.content for f in await store.search(conversation, "llama")] == ["another llama"]
    async with store.engine.begin() as conn:
        # FTS5 raises "database disk image is malformed" if the index lost its way.
        await conn.exec_driver_sql(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)"
        )
    assert await store.index_for_search() == 0  # nothing left to index
    await store.engine.dispose()


async def test_the_remembered_window_never_shows_what_another_connection_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "h.db"
    store = await open_store(f"sqlite+aiosqlite:///{path}")
    conversation = await store.conversation_id(CHANNEL)

    async def window_after(text: str, count: int = 10) -> list[str]:
        turns = await store.append_and_window(conversation, user(text), count, 1000)
        assert turns is not None
        return [t.content for t in turns]

    assert await window_after("one") == ["one"]
    await store.append(
        conversation,
        NewMessage("assistant", "reply", 1),
        NewMessage("assistant", "cut off", 1, status="interrupted"),
    )
    assert await window_after("two") == ["one", "reply", "two"]  # from memory, same answer
    with sqlite3.connect(path) as other:  # e.g. `llamabot db prune` in another process
        other.execute("DELETE FROM messages WHERE content = 'one'")
    assert await window_after("three") == ["reply", "two", "three"]
    await store.clear(conversation)
    assert await window_after("four") == ["four"]
    assert await window_after("five", count=1) == ["five"]
    assert await window_after("six", count=3) == ["four", "five", "six"]  # more than kept
    await store.engine.dispose()
