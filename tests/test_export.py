"""Fine-tuning export: every format round-trips through json, in bounded memory."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import tracemalloc
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from llamabot.config import Config, parse_config
from llamabot.events import ChannelRef
from llamabot.export import ExportFilter, Format, Pseudonyms, export
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.storage.models import Message

CONFIG = """
[personas.assistant]
prompt = "SYSTEM-A"
[personas.pirate]
prompt = "SYSTEM-P"
"""

DM = ChannelRef("telegram", "42", is_private=True)
GROUP = ChannelRef("discord", "900", guild_id="1")


def said(text: str, who: str = "alice", persona: str = "assistant") -> NewMessage:
    return NewMessage(
        role="user",
        content=text,
        tokens=1,
        author_id=f"telegram:{who}",
        author_name=who.title(),
        persona=persona,
    )


def answered(text: str, status: str = "ok", persona: str = "assistant") -> NewMessage:
    return NewMessage(role="assistant", content=text, tokens=1, status=status, persona=persona)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[HistoryStore]:
    engine = create_engine(store_url)
    await upgrade(engine)
    history = HistoryStore(engine)
    dm = await history.conversation_id(DM)
    await history.append(
        dm,
        said("q1"),
        answered("a1"),
        said("q2"),
        answered("half", status="interrupted"),
        said("q3"),
        answered("a3"),
    )
    group = await history.conversation_id(GROUP)
    await history.append(
        group,
        said("hello all", "bob", "pirate"),
        said("hi bot", "carol", "pirate"),
        answered("ahoy", persona="pirate"),
    )
    yield history
    await history.aclose()
    await engine.dispose()


async def run(store: HistoryStore, fmt: Format, **kwargs: object) -> list[dict[str, object]]:
    config: Config = parse_config(CONFIG, Path("bot.toml"))
    out = io.StringIO()
    where = ExportFilter(**kwargs)  # type: ignore[arg-type]
    count = await export(
        store.engine, config, out, fmt=fmt, where=where, pseudonym=Pseudonyms(b"k" * 32)
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == count
    return [json.loads(line) for line in lines]


async def test_chatml_holds_the_persona_prompt_and_complete_exchanges(store: HistoryStore) -> None:
    dm, group = await run(store, "chatml")
    assert [(m["role"], m["content"]) for m in dm["messages"]] == [  # type: ignore[index]
        ("system", "SYSTEM-A"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q3"),
        ("assistant", "a3"),
    ]
    assert [m["content"] for m in group["messages"]] == [  # type: ignore[index]
        "SYSTEM-P",
        "Bob: hello all",
        "Carol: hi bot",
        "ahoy",
    ]


async def test_user_ids_become_stable_pseudonyms(store: HistoryStore) -> None:
    first = await run(store, "chatml")
    again = await run(store, "chatml")
    text = json.dumps(first)
    assert "telegram:alice" not in text and "telegram:42" not in text
    assert first == again
    users = {m.get("user") for m in first[1]["messages"] if m["role"] == "user"}  # type: ignore[union-attr, index]
    assert len(users) == 2 and all(str(u).startswith("user-") for u in users)


async def test_sharegpt(store: HistoryStore) -> None:
    dm, _ = await run(store, "sharegpt")
    assert [t["from"] for t in dm["conversations"]] == ["system", "human", "gpt", "human", "gpt"]  # type: ignore[index]


async def test_alpaca_has_one_record_per_exchange_with_history(store: HistoryStore) -> None:
    records = await run(store, "alpaca", conversation="telegram:42")
    assert [(r["instruction"], r["output"]) for r in records] == [("q1", "a1"), ("q3", "a3")]
    assert records[1]["history"] == [["q1", "a1"]]
    assert records[0]["system"] == "SYSTEM-A"


async def test_filter_by_persona(store: HistoryStore) -> None:
    [only] = await run(store, "chatml", persona="pirate")
    assert only["persona"] == "pirate"


async def test_export_of_100000_messages_runs_in_bounded_memory(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'big.db'}")
    await upgrade(engine)
    history = HistoryStore(engine)
    conversation = await history.conversation_id(DM)
    rows = []
    for i in range(50_000):
        rows.append({"role": "user", "content": f"question {i} " + "x" * 80, "status": "ok"})
        rows.append({"role": "assistant", "content": f"answer {i} " + "y" * 80, "status": "ok"})
    async with engine.begin() as conn:
        await conn.execute(
            insert(Message),
            [
                {
                    **row,
                    "conversation_id": conversation,
                    "tokens": 20,
                    "persona": "assistant",
                    "author_id": "telegram:alice" if row["role"] == "user" else None,
                    "created_at": datetime(2026, 1, 1),
                }
                for row in rows
            ],
        )
    del rows

    class Counting(io.TextIOBase):
        lines = 0

        def write(self, text: str) -> int:
            self.lines += text.count("\n")
            return len(text)

    sink = Counting()
    config = parse_config(CONFIG, Path("bot.toml"))
    tracemalloc.start()
    count = await export(
        engine, config, sink, fmt="chatml", where=ExportFilter(), pseudonym=Pseudonyms(b"k")
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    await engine.dispose()
    assert count == sink.lines == 50_000 * 2 // 40  # windows of max_messages = 40 turns
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_the_key_file_is_never_readable_by_others_nor_half_written(tmp_path: Path) -> None:
    key = tmp_path / ".llamabot-export-key"
    seen: list[tuple[int, int]] = []  # (mode, size) of the key file at every audited step
    watching = True

    def watch(event: str, args: tuple[object, ...]) -> None:
        if watching and event in ("open", "os.chmod", "os.link", "os.rename", "os.remove"):
            with contextlib.suppress(FileNotFoundError):
                info = os.stat(key)
                seen.append((stat.S_IMODE(info.st_mode), info.st_size))

    sys.addaudithook(watch)  # audit hooks cannot be removed; `watching` retires this one
    old_umask = os.umask(0o022)
    try:
        first = Pseudonyms.beside(tmp_path / "bot.toml")
        again = Pseudonyms.beside(tmp_path / "bot.toml")
    finally:
        os.umask(old_umask)
        watching = False
    assert seen, "the audit hook saw the key file"
    assert all(mode == 0o600 and size == 64 for mode, size in seen), seen
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert first("telegram:1") == again("telegram:1")  # the secret is read back, not remade
    assert [p.name for p in tmp_path.iterdir()] == [key.name]  # no temporary file left behind


async def test_a_tool_using_exchange_exports_the_question_and_the_final_answer(
    store: HistoryStore,
) -> None:
    other = await store.conversation_id(ChannelRef("telegram", "77", is_private=True))
    await store.append(
        other,
        said("what time is it?"),
        NewMessage(
            role="assistant",
            content="",
            tokens=1,
            persona="assistant",
            tool_calls='[{"id": "c1", "name": "time", "arguments": {}}]',
        ),
        NewMessage(role="tool", content="12:00", tokens=1, tool_name="time", tool_call_id="c1"),
        answered("It is noon."),
    )
    exported = await run(store, "chatml", conversation="telegram:77")
    assert [(m["role"], m["content"]) for m in exported[0]["messages"]] == [  # type: ignore[index]
        ("system", "SYSTEM-A"),
        ("user", "what time is it?"),
        ("assistant", "It is noon."),
    ]


async def test_pictures_are_exported_as_references(store: HistoryStore) -> None:
    chat = await store.conversation_id(ChannelRef("telegram", "88", is_private=True))
    refs = '[{"source": "AgAC-file-1", "mime": "image/jpeg", "sha256": "ab"}]'
    await store.append(
        chat,
        NewMessage("user", "what is this?", 1, author_id="telegram:a", images=refs),
        answered("A cat."),
    )
    [chatml] = await run(store, "chatml", conversation="telegram:88")
    assert chatml["messages"][1]["images"] == ["AgAC-file-1"]  # type: ignore[index]
    [sharegpt] = await run(store, "sharegpt", conversation="telegram:88")
    assert sharegpt["images"] == ["AgAC-file-1"]
    assert sharegpt["conversations"][1]["value"] == "<image>what is this?"  # type: ignore[index]
