"""Inbox: messages taken in and not handled yet, kept across a restart."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from llamabot.events import Author, ChannelRef, Inbound
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore
from llamabot.storage.inbox import Inbox

TOPIC = ChannelRef("telegram", "-100777", thread_id="12", guild_id=None, is_private=False)


def inbound(text: str, message_id: str | None) -> Inbound:
    return Inbound(
        channel=TOPIC,
        author=Author(id="1001", name="Zoë ✨"),
        text=text,
        message_id=message_id,
        addressed=True,
    )


async def open_store(where: Path | str) -> HistoryStore:
    """A migrated store: ``where`` is an SQLite file or a database URL."""
    url = f"sqlite+aiosqlite:///{where}" if isinstance(where, Path) else where
    engine = create_engine(url)
    await upgrade(engine)
    return HistoryStore(engine)


async def test_what_is_not_done_is_there_after_a_restart_in_order(store_url: str) -> None:
    store = await open_store(store_url)
    inbox = Inbox(store)
    first, second, third = inbound("one", "1"), inbound("two ✓", "2"), inbound("three", "3")
    entries = [await inbox.put(message) for message in (first, second, third)]
    assert all(entries)
    assert entries[1] is not None
    await inbox.done(entries[1])
    await store.aclose()
    await store.engine.dispose()

    store = await open_store(store_url)
    pending = await Inbox(store).pending()
    assert [message for _, message in pending] == [first, third]  # whole, as taken
    await store.aclose()
    await store.engine.dispose()


async def test_a_message_taken_twice_is_kept_once(store_url: str) -> None:
    store = await open_store(store_url)
    inbox = Inbox(store)
    assert await inbox.put(inbound("hello", "5")) is not None
    assert await inbox.put(inbound("hello", "5")) is None  # the platform delivered it again
    assert await inbox.put(inbound("no id", None)) is not None
    assert await inbox.put(inbound("no id", None)) is not None  # nothing to tell them apart
    assert len(await inbox.pending()) == 3
    await store.aclose()
    await store.engine.dispose()


async def test_a_row_from_another_version_still_loads(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "i.db")
    row = {
        "channel": {"platform": "discord", "chat_id": "9", "shard": 3},  # no is_private
        "author": {"id": "7", "name": "Ann", "pronouns": "they"},
        "text": "from an older or newer llamabot",
        "message_id": "11",
        "addressed": False,
        "received_at": "2026-12-01T10:00:00+00:00",
        "flood_score": 0.5,
    }
    with sqlite3.connect(tmp_path / "i.db") as db:
        db.execute(
            "INSERT INTO inbox (conversation_key, platform_message_id, inbound, received_at) "
            "VALUES ('discord:9', '11', ?, '2026-12-01 10:00:00')",
            (json.dumps(row),),
        )
    ((_, message),) = await Inbox(store).pending()
    assert message.channel == ChannelRef("discord", "9")
    assert message.author == Author(id="7", name="Ann")
    assert message.text == "from an older or newer llamabot"
    await store.aclose()
    await store.engine.dispose()


async def test_messages_arriving_together_are_kept_in_one_write_in_arrival_order(
    store_url: str,
) -> None:
    store = await open_store(store_url)
    inbox = Inbox(store)
    units = 0
    run = store.run

    async def counted(work: Any) -> Any:
        nonlocal units
        units += 1
        return await run(work)

    store.run = counted  # type: ignore[method-assign]
    entries = await asyncio.gather(*(inbox.put(inbound(f"m{n}", str(n))) for n in range(20)))
    assert units == 1  # all twenty came before the write began: one transaction
    assert entries == sorted(entries) and None not in entries
    assert [m.text for _, m in await inbox.pending()] == [f"m{n}" for n in range(20)]
    await store.aclose()
    await store.engine.dispose()
