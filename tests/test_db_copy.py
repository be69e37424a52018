"""`llamabot db copy`: a bot's history, inbox and pending jobs move to another database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert

from llamabot.events import ChannelRef
from llamabot.storage import copy as db_copy
from llamabot.storage.copy import copy_database
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.storage.inbox import Inbox
from llamabot.storage.models import SchedulerJob
from tests.test_inbox import inbound


async def seed(url: str) -> None:
    engine = create_engine(url)
    await upgrade(engine)
    store = HistoryStore(engine)
    for chat in ("a", "b", "c"):
        cid = await store.conversation_id(ChannelRef("telegram", chat))
        for n in range(5):
            await store.append(
                cid, NewMessage(role="user", content=f"{chat}{n}", tokens=1, author_id="t:1")
            )
    await Inbox(store).put(inbound("waiting", "77"))
    async with engine.begin() as conn:
        await conn.execute(
            insert(SchedulerJob).values(id="remind-1", next_run_time=1.9e9, job_state=b"\x80state")
        )
    await store.aclose()
    await engine.dispose()


async def test_a_copy_cut_short_resumes_and_copies_nothing_twice(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source_url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await seed(source_url)
    source, target = create_engine(source_url), create_engine(store_url)
    monkeypatch.setattr(db_copy, "BATCH", 4)

    def cut(table: str, copied: int) -> None:
        if table == "messages" and copied >= 8:
            raise ConnectionError("the network went away")

    with pytest.raises(ConnectionError):
        await copy_database(source, target, progress=cut)
    report = {t.table: t for t in await copy_database(source, target)}
    assert {name: (t.source, t.target) for name, t in report.items()} == {
        "conversations": (3, 3),
        "messages": (15, 15),
        "inbox": (1, 1),
        "apscheduler_jobs": (1, 1),
    }
    assert report["messages"].copied == 7  # the 8 of the first run stayed
    # The copy is a working database: new rows get fresh ids after the copied ones.
    store = HistoryStore(target)
    cid = await store.conversation_id(ChannelRef("telegram", "a"))
    await store.append(cid, NewMessage(role="user", content="new", tokens=1))
    window = await store.window(cid, 10, 100)
    assert [t.content for t in window] == ["a0", "a1", "a2", "a3", "a4", "new"]
    assert [m.text for _, m in await Inbox(store).pending()] == ["waiting"]
    await store.aclose()
    await source.dispose()
    await target.dispose()


def test_the_command_copies_and_says_what_it_did(tmp_path: Path) -> None:
    import asyncio

    config = tmp_path / "bot.toml"
    config.write_text('[storage]\nurl = "sqlite+aiosqlite:///old.db"\n')
    asyncio.run(seed(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"))
    command = [sys.executable, "-m", "llamabot.cli", "db", "copy", "--config", str(config)]
    done = subprocess.run(
        [*command, "--to", "sqlite+aiosqlite:///new.db"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "messages" in done.stdout and "15 in the target" in done.stdout
    assert (tmp_path / "new.db").exists()  # relative to bot.toml, as [storage] url is
    again = subprocess.run(
        [*command, "--to", "sqlite+aiosqlite:///new.db"], capture_output=True, text=True
    )
    assert "(0 copied now)" in again.stdout
