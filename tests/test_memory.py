"""Memory: rolling summaries, facts kept about people, and erasing them; the real Bot
against the fake Ollama, which answers summary and fact requests by what they ask."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import llamabot.memory as memory_module
from llamabot.app import Bot
from llamabot.config import Config, parse_config
from llamabot.memory.prompts import FACTS_INSTRUCTIONS, SUMMARY_INSTRUCTIONS
from llamabot.plugin_loader import load_plugins
from llamabot.testing import FakePlatform
from tests.fakes.ollama import FakeOllama

KEY = "console:local"
SUMMARY = "SUMMARY: Sam said his name is Sam and he likes green tea."


def asks(request: dict[str, Any], instructions: str) -> bool:
    return request["messages"][0]["content"] == instructions


def system(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


@pytest.fixture(autouse=True)
def fold_every_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    # The bot folds dropped turns once they add up to FOLD_MIN_TOKENS; these tests'
    # turns are a few words, so here every dropped turn is folded at once.
    monkeypatch.setattr(memory_module, "FOLD_MIN_TOKENS", 0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:

        def route(body: dict[str, Any]) -> str | None:
            if asks(body, SUMMARY_INSTRUCTIONS):
                return SUMMARY
            if asks(body, FACTS_INSTRUCTIONS):
                return "- likes green tea\n- NONE"
            return None

        server.route = route
        yield server


def replies(fake: FakeOllama) -> list[dict[str, Any]]:
    """The chat requests that answer people (not memory's own)."""
    return [
        r
        for r in fake.chat_requests
        if not asks(r, SUMMARY_INSTRUCTIONS) and not asks(r, FACTS_INSTRUCTIONS)
    ]


def toml(url: str, tmp_path: Path, memory: str, binding: str = "") -> str:
    return f"""
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"
[history]
max_messages = 4
[personas.assistant]
prompt = "MEMORY-PERSONA"
[personas.assistant.memory]
{memory}
[[bindings]]
platform = "console"
channel = "*"
persona = "assistant"
respond = "always"
[[bindings]]
platform = "console"
channel = "group"
persona = "assistant"
respond = "always"
{binding}
[plugins]
dirs = []
"""


def config_for(url: str, tmp_path: Path, memory: str = "summaries = true", **kw: str) -> Config:
    return parse_config(toml(url, tmp_path, memory, **kw), tmp_path / "bot.toml")


def bot(config: Config, adapter: FakePlatform, tmp_path: Path) -> Bot:
    return Bot(config, adapters=[adapter], plugins=load_plugins(config, tmp_path))


async def settled(b: Bot) -> None:
    assert b.memory is not None
    await b.memory.settled()


async def ask(adapter: FakePlatform, text: str, chat: str = "local", **kw: Any) -> list[str]:
    """Say ``text`` and return what the bot sent in answer."""
    key = f"console:{chat}"
    before = len(adapter.messages_in(key))
    await adapter.say(text, chat=chat, **kw)
    return adapter.messages_in(key)[before:]


def database_text(tmp_path: Path) -> bytes:
    """Every byte of the database, its WAL included."""
    return b"".join(p.read_bytes() for p in tmp_path.glob("bot.db*"))


# -- rolling summaries -----------------------------------------------------------------


async def test_a_summary_replaces_dropped_turns_and_survives_a_restart(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path)
    async with bot(config, adapter, tmp_path) as b:
        await adapter.say("my name is Sam and I like green tea")
        await adapter.say("what is the weather like?")
        await settled(b)  # nothing left the window of 4 yet
        assert not [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]
        await adapter.say("tell me a joke")
        await settled(b)
        [summarised] = [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]
        # The turns that left the window, and only those, were summarised.
        assert "Alice: my name is Sam" in summarised["messages"][1]["content"]
        assert "tell me a joke" not in summarised["messages"][1]["content"]
        await adapter.say("what do I like?")
        assert (await ask(adapter, "/summary"))[-1].endswith(SUMMARY)
    latest = replies(fake)[-1]
    assert SUMMARY in system(latest) and system(latest).startswith("MEMORY-PERSONA")
    assert all("green tea" not in m["content"] for m in latest["messages"][1:])

    fresh = FakePlatform()
    async with bot(config, fresh, tmp_path):
        await fresh.say("and what is my name?")
    assert SUMMARY in system(replies(fake)[-1])


async def test_a_few_short_dropped_turns_wait_for_more_before_a_summary(
    fake: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_module, "FOLD_MIN_TOKENS", 300)
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        for text in ("one", "two", "three", "four"):
            await adapter.say(text)
        await settled(b)
        assert not [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]
        await adapter.say("five " * 400)  # enough text to fold, once it leaves the window
        for text in ("six", "seven"):
            await adapter.say(text)
        await settled(b)
    [summarised] = [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]
    assert "Alice: one" in summarised["messages"][1]["content"]
    assert "five five" in summarised["messages"][1]["content"]


async def test_a_reply_is_not_delayed_while_a_summary_is_made(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.hold = lambda body: asks(body, SUMMARY_INSTRUCTIONS)
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        for text in ("one", "two", "three"):
            await adapter.say(text)
        await fake.wait_for(lambda: fake.held == 1)  # the summary call is held open
        answer = await ask(adapter, "four")  # answered all the same
        assert answer == [fake.reply]
        fake.hold = None
        fake.release()
        await settled(b)
        assert (await ask(adapter, "/summary"))[-1].endswith(SUMMARY)


async def test_a_failing_summary_leaves_the_previous_one(
    fake: FakeOllama, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        for text in ("one", "two", "three"):
            await adapter.say(text)
        await settled(b)
        fake.route = lambda body: 500 if asks(body, SUMMARY_INSTRUCTIONS) else None
        await adapter.say("four")
        await settled(b)
        assert len([r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]) == 2
        assert (await ask(adapter, "/summary"))[-1].endswith(SUMMARY)
    assert "what was kept before stays" in caplog.text


async def test_summaries_are_off_when_the_persona_or_the_binding_says_so(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path, binding="memory = false")
    async with bot(config, adapter, tmp_path) as b:
        for text in ("one", "two", "three", "four"):
            await adapter.say(text, chat="group", private=False)
        await settled(b)
    assert not [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]

    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path, memory="summaries = false")
    async with bot(config, adapter, tmp_path) as b:
        for text in ("one", "two", "three", "four"):
            await adapter.say(text, chat="other")
        await settled(b)
    assert not [r for r in fake.chat_requests if asks(r, SUMMARY_INSTRUCTIONS)]


# -- facts about people ----------------------------------------------------------------

FACTS = 'facts = true\nidle_after = "1s"'


async def test_the_model_remembers_a_fact_for_that_person_only(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [
        [{"name": "remember", "arguments": {"fact": "is called Sam"}}],
        "Nice to meet you, Sam.",
    ]
    async with bot(config_for(fake.url, tmp_path, FACTS), adapter, tmp_path):
        await adapter.say("I am Sam", user="sam", chat="dm-sam")
        await adapter.say("hello", user="sam", chat="dm-sam")
        await adapter.say("hello", user="kim", chat="dm-kim")
        await adapter.say("hello all", user="sam", chat="group", private=False)
        shown = await ask(adapter, "/memory", user="sam", chat="dm-sam")
        nothing = await ask(adapter, "/memory", user="kim", chat="dm-kim")
    first, *_ = replies(fake)
    assert "remember" in [t["function"]["name"] for t in first["tools"]]
    sam_dm, kim_dm, sam_group = replies(fake)[-3:]
    assert "What you remember about Sam:\n- is called Sam" in system(sam_dm)
    assert "is called Sam" not in system(kim_dm)
    # Learned in a DM, so not used in a group (share_dm_memory is off).
    assert "is called Sam" not in system(sam_group)
    assert shown[-1].startswith("What I remember about you:\n1. is called Sam")
    assert nothing == ["I remember nothing about you."]


async def test_facts_are_taken_from_a_conversation_once_it_is_idle(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path, FACTS), adapter, tmp_path) as b:
        await adapter.say("I drink green tea every morning", user="sam", chat="dm-sam")
        await fake.wait_for(lambda: any(asks(r, FACTS_INSTRUCTIONS) for r in fake.chat_requests))
        await settled(b)
        shown = await ask(adapter, "/memory", user="sam", chat="dm-sam")
    [asked] = [r for r in fake.chat_requests if asks(r, FACTS_INSTRUCTIONS)]
    assert "I drink green tea every morning" in asked["messages"][1]["content"]
    assert shown[-1].startswith("What I remember about you:\n1. likes green tea\n")
    assert "NONE" not in shown[-1]


async def test_forgetting_leaves_no_trace_in_the_database(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    remember = [{"name": "remember", "arguments": {"fact": "owns a PURPLE-OKAPI"}}]
    remember_too = [{"name": "remember", "arguments": {"fact": "plays the OBOE-X"}}]
    fake.script = [remember, "Noted.", remember_too, "Noted too."]
    memory = "summaries = true\nfacts = true"
    async with bot(config_for(fake.url, tmp_path, memory), adapter, tmp_path) as b:
        await adapter.say("I own a purple okapi")
        await adapter.say("I play the oboe")
        await adapter.say("three")
        await settled(b)
        assert (await ask(adapter, "/memory forget 2")) == ["Forgot: plays the OBOE-X"]
        await settled(b)
        assert b"OBOE-X" not in database_text(tmp_path)
        assert b"PURPLE-OKAPI" in database_text(tmp_path)
        assert b"SUMMARY: Sam" in database_text(tmp_path)
        answer = await ask(adapter, "/forgetme")
        assert answer[-1].startswith("Deleted")
        assert (await ask(adapter, "/memory")) == ["I remember nothing about you."]
        assert (await ask(adapter, "/summary")) == ["There is no summary of this conversation yet."]
    with sqlite3.connect(tmp_path / "bot.db") as db:
        assert db.execute("SELECT count(*) FROM person_facts").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM summaries").fetchone() == (0,)
    text = database_text(tmp_path)
    assert b"PURPLE-OKAPI" not in text and b"SUMMARY: Sam" not in text


async def test_memory_forget_all_and_reset(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "remember", "arguments": {"fact": "is called Sam"}}], "Hi Sam."]
    memory = "summaries = true\nfacts = true"
    async with bot(config_for(fake.url, tmp_path, memory), adapter, tmp_path) as b:
        for text in ("I am Sam", "two", "three"):
            await adapter.say(text)
        await settled(b)
        assert (await ask(adapter, "/memory forget 9"))[0].startswith("There is no number 9")
        assert (await ask(adapter, "/memory forget all")) == [
            "Forgot all 1 thing(s) I remembered about you."
        ]
        await adapter.say("/reset")
        assert (await ask(adapter, "/summary")) == ["There is no summary of this conversation yet."]


# -- recall by meaning -----------------------------------------------------------------


@pytest.fixture
async def embedding_fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama(["llama3.2", "nomic-embed-text"]) as server:
        yield server


def recall_toml(url: str, tmp_path: Path, embed: str = "nomic-embed-text") -> Config:
    text = toml(url, tmp_path, "summaries = false").replace(
        'prompt = "MEMORY-PERSONA"', 'prompt = "MEMORY-PERSONA"\ntools = ["recall"]'
    )
    text += f'[memory]\nembed_model = "{embed}"\n'
    return parse_config(text, tmp_path / "bot.toml")


async def test_recall_finds_a_message_by_meaning_and_forgets_with_it(
    embedding_fake: FakeOllama, tmp_path: Path
) -> None:
    fake = embedding_fake
    adapter = FakePlatform()
    fake.script = [
        "Lovely.",
        "Noted.",
        [{"name": "recall", "arguments": {"about": "pets"}}],
        "You have a puppy.",
    ]
    async with bot(recall_toml(fake.url, tmp_path), adapter, tmp_path) as b:
        await adapter.say("I walked my puppy Biscuit by the river")
        await adapter.say("the weather was grey all day")
        await settled(b)  # both messages (and replies) embedded in the background
        await adapter.say("what do you know about my pets?")
        await settled(b)
        with sqlite3.connect(tmp_path / "bot.db") as db:
            embedded = db.execute("SELECT count(*) FROM message_embeddings").fetchone()[0]
        assert embedded >= 4
        result = fake.chat_requests[3]["messages"][-1]["content"]
        # No word is shared with "pets": found by meaning, closest first.
        assert result.splitlines()[0].endswith("Alice: I walked my puppy Biscuit by the river")
        await adapter.say("/forgetme")
    with sqlite3.connect(tmp_path / "bot.db") as db:
        left = db.execute(
            "SELECT count(*) FROM message_embeddings e JOIN messages m ON m.id = e.message_id "
            "WHERE m.role = 'user'"
        ).fetchone()[0]
        assert left == 0
        orphans = db.execute(
            "SELECT count(*) FROM message_embeddings "
            "WHERE message_id NOT IN (SELECT id FROM messages)"
        ).fetchone()[0]
        assert orphans == 0


async def test_recall_falls_back_to_words_without_an_embedding_model(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [
        "Lovely.",
        [{"name": "recall", "arguments": {"about": "puppy"}}],
        "A puppy.",
    ]
    config = recall_toml(fake.url, tmp_path, embed="")
    async with bot(config, adapter, tmp_path):
        await adapter.say("I walked my puppy Biscuit")
        await adapter.say("what about the puppy?")
    assert "I walked my puppy Biscuit" in fake.chat_requests[2]["messages"][-1]["content"]
    assert fake.embed_requests == []


async def test_facts_are_still_taken_after_a_restart_lost_the_idle_timer(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path, 'facts = true\nidle_after = "1h"')
    async with bot(config, adapter, tmp_path):
        await adapter.say("I drink green tea every morning", user="sam", chat="dm-sam")
    assert not [r for r in fake.chat_requests if asks(r, FACTS_INSTRUCTIONS)]  # not idle yet

    # Restarted after the conversation went quiet: the facts are taken at start.
    quick = config_for(fake.url, tmp_path, 'facts = true\nidle_after = "1s"')
    adapter = FakePlatform()
    async with bot(quick, adapter, tmp_path) as b:
        await fake.wait_for(lambda: any(asks(r, FACTS_INSTRUCTIONS) for r in fake.chat_requests))
        await settled(b)
        shown = await ask(adapter, "/memory", user="sam", chat="dm-sam")
    assert shown[-1].startswith("What I remember about you:\n1. likes green tea")
