"""The Telegram adapter end to end: the real python-telegram-bot against the fake Bot API.

Every test runs a real ``Bot`` with the adapter pointed at ``tests/fakes/telegram.py``
and reads what crossed the wire: the messages a person would see, and every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp import ClientSession

from llamabot import CommandContext, Plugin
from llamabot.adapters import telegram as telegram_adapter
from llamabot.adapters.base import BotHandle, CommandSpec
from llamabot.adapters.telegram import TelegramAdapter
from llamabot.app import Bot
from llamabot.config import Config, TelegramSection
from llamabot.errors import StartupError
from llamabot.events import ChannelRef, Inbound
from llamabot.llm import ChatMessage, GenerationOptions
from llamabot.metrics import Metrics
from llamabot.plugin_host import PluginHost
from llamabot.testing import ScriptedModel
from tests.conftest import MakeConfig
from tests.fakes.telegram import CUT, FakeTelegram, Message, user

BOT = "llama_test_bot"
ALICE = user(1001, "Alice")
BOB = user(1002, "Bob", "Builder", username="bob")
GROUP = -100500
FORUM = -100777

TOML = """
[personas.assistant]
prompt = "You are a helpful assistant."

[personas.pirate]
prompt = "You are a pirate."

[personas.scholar]
prompt = "You are a scholar."

[telegram]
enabled = true
base_url = "{base_url}"
edit_interval = 0.2
{telegram_extra}

[[bindings]]
platform = "telegram"
channel = "*"
persona = "pirate"

[[bindings]]
platform = "telegram"
channel = "{forum}"
persona = "scholar"
respond = "always"
"""


@pytest.fixture(autouse=True)
def short_conflict_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    # One second per start adds up; the test of the probe turns it back on.
    monkeypatch.setattr(telegram_adapter, "CONFLICT_PROBE_S", 0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(username=BOT) as server:
        yield server


def telegram_config(make_config: MakeConfig, fake: FakeTelegram, extra: str = "") -> Config:
    return make_config(TOML.format(base_url=fake.base_url, telegram_extra=extra, forum=FORUM))


@contextlib.asynccontextmanager
async def running(
    config: Config, model: ScriptedModel, fake: FakeTelegram, plugins: PluginHost | None = None
) -> AsyncIterator[Bot]:
    adapter = TelegramAdapter(config.telegram, token=fake.token)
    async with Bot(config, model=model, adapters=[adapter], plugins=plugins or PluginHost()) as bot:
        yield bot


async def answered(fake: FakeTelegram, bot: Bot, message: Message) -> list[Message]:
    """Wait until the bot replied to ``message`` and finished; its messages, in order."""
    await fake.wait_for(lambda: fake.replies_to(message.chat_id, message.message_id))
    await bot.wait_idle()
    first = fake.replies_to(message.chat_id, message.message_id)[0]
    later = [
        m
        for m in fake.bot_messages(message.chat_id)
        if m.message_id > first.message_id and m.reply_to is None
    ]
    return [first, *later]


class PacedModel(ScriptedModel):
    """Streams fixed deltas with a pause before each, like a model generating slowly."""

    def __init__(self, steps: list[tuple[float, str]]) -> None:
        super().__init__()
        self.steps = steps

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> AsyncIterator[str]:
        await anext(aiter(super().stream_chat(model, messages, options)))  # record the call
        for pause, delta in self.steps:
            await asyncio.sleep(pause)
            yield delta


# -- private chats ---------------------------------------------------------------------


async def test_dm_is_answered_with_the_bound_persona(
    make_config: MakeConfig, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the CLI, run in-process elsewhere, quiets it
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        asked = fake.push_message(1001, "hello there", from_user=ALICE)
        await fake.wait_for(lambda: fake.calls_of("sendChatAction"))
        gate.set()
        reply = await answered(fake, bot, asked)
    assert [m.text for m in reply] == ["echo: hello there"]
    assert model.calls[0].system == "You are a pirate."
    assert model.calls[0].last_user == "hello there"
    typing = fake.calls_of("sendChatAction")[0]
    assert typing.params == {"chat_id": 1001, "action": "typing"}
    assert typing.at < fake.calls_of("sendMessage")[0].at
    send = fake.calls_of("sendMessage")[0]
    assert send.params["parse_mode"] == "HTML"
    assert send.params["reply_parameters"] == {
        "message_id": asked.message_id,
        "allow_sending_without_reply": True,
    }
    assert fake.token not in caplog.text  # httpx logs every URL, and the URL holds the token
    assert "HTTP Request: POST" in caplog.text


async def test_polling_uses_deletewebhook_then_long_polls_for_messages(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    async with running(telegram_config(make_config, fake), ScriptedModel(), fake):
        await fake.wait_for(lambda: fake.calls_of("getUpdates"))
    methods = [c.method for c in fake.calls]
    assert methods[:2] == ["getMe", "setMyCommands"]
    assert methods.index("deleteWebhook") < methods.index("getUpdates")
    poll = fake.calls_of("getUpdates")[0]
    assert poll.params["timeout"] == 10
    assert poll.params["allowed_updates"] == ["message"]


async def test_markdown_reply_is_sent_as_telegram_html(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    model = ScriptedModel(reply=lambda call: "Use **bold** and `a < b`:\n```py\nx = 1\n```")
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        (shown,) = await answered(fake, bot, fake.push_message(1001, "format", from_user=ALICE))
    assert shown.text == "Use bold and a < b:\nx = 1"
    assert {e["type"] for e in shown.entities} == {"bold", "code", "pre"}
    assert fake.not_modified_errors() == []


async def test_users_outside_allowed_users_get_one_polite_refusal(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    config = telegram_config(make_config, fake, 'allowed_users = ["1001", "@bob"]')
    model = ScriptedModel()
    stranger = user(666, "Mallory")
    async with running(config, model, fake) as bot:
        fake.push_message(666, "let me in", from_user=stranger)
        await fake.wait_for(lambda: fake.bot_messages(666))
        fake.push_message(666, "please?", from_user=stranger)
        await answered(fake, bot, fake.push_message(1001, "hi", from_user=ALICE))
        await answered(fake, bot, fake.push_message(1002, "hi", from_user=BOB))
    (refusal,) = fake.bot_messages(666)
    assert "telegram:666" in refusal.text and "admin" in refusal.text
    assert [c.last_user for c in model.calls] == ["hi", "hi"]


# -- groups and forum topics ---------------------------------------------------------------


async def test_group_message_is_answered_only_when_the_bot_is_addressed(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    model = ScriptedModel()
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        ignored = fake.push_message(GROUP, "nice weather", from_user=BOB, chat_type="group")
        asked = fake.push_message(GROUP, f"@{BOT}, what is up?", from_user=BOB, chat_type="group")
        (first,) = await answered(fake, bot, asked)
        followup = fake.push_message(
            GROUP, "and then?", from_user=ALICE, chat_type="group", reply_to_message=first
        )
        await answered(fake, bot, followup)
        other = fake.push_message(GROUP, "@someone_else hi", from_user=ALICE, chat_type="group")
        await answered(
            fake, bot, fake.push_message(GROUP, f"bye @{BOT}", from_user=ALICE, chat_type="group")
        )
        async with bot.store.engine.connect() as conn:  # the group's name, for the admin page
            query = sa.text("SELECT title FROM conversations WHERE key = :key")
            title = (await conn.execute(query, {"key": f"telegram:{GROUP}"})).scalar()
    assert title == f"Group {GROUP}"
    assert fake.replies_to(GROUP, ignored.message_id) == []
    assert fake.replies_to(GROUP, other.message_id) == []
    assert first.text == "echo: Bob Builder: what is up?"
    assert [c.last_user for c in model.calls] == [
        "Bob Builder: what is up?",
        "Alice: and then?",
        "Alice: bye",
    ]
    assert model.calls[0].system == "You are a helpful assistant."  # "*" binds DMs only


async def test_forum_topic_is_its_own_conversation_and_inherits_the_chat_persona(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    model = ScriptedModel()
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        in_topic = fake.push_message(
            FORUM,
            "question in a topic",
            from_user=ALICE,
            chat_type="supergroup",
            message_thread_id=7,
            is_topic_message=True,
        )
        (topic_reply,) = await answered(fake, bot, in_topic)
        in_general = fake.push_message(
            FORUM, "question in general", from_user=ALICE, chat_type="supergroup"
        )
        (general_reply,) = await answered(fake, bot, in_general)
        topic_id = await bot.store.conversation_id(ChannelRef("telegram", str(FORUM), "7"))
        chat_id = await bot.store.conversation_id(ChannelRef("telegram", str(FORUM)))
        counts = (await bot.store.count(topic_id), await bot.store.count(chat_id))
    assert topic_reply.thread_id == 7
    assert fake.calls_of("sendMessage")[0].params["message_thread_id"] == 7
    assert general_reply.thread_id is None
    assert [c.system for c in model.calls] == ["You are a scholar.", "You are a scholar."]
    assert [len(c.messages) for c in model.calls] == [2, 2]  # no shared history
    assert topic_id != chat_id
    assert counts == (2, 2)


# -- commands -------------------------------------------------------------------------


def memory_plugin(seen: list[str]) -> PluginHost:
    plugin = Plugin("memory")

    @plugin.command("reset", description="Forget this conversation.")
    async def reset(ctx: CommandContext, *words: str) -> None:
        seen.append(ctx.message.text)
        await ctx.reply("History cleared.")

    host = PluginHost()
    host.add(plugin, "tests", Config())
    return host


async def test_command_addressed_to_the_bot_reaches_the_command_router(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    seen: list[str] = []
    model = ScriptedModel()
    config = telegram_config(make_config, fake)
    async with running(config, model, fake, memory_plugin(seen)) as bot:
        other = fake.push_message(GROUP, "/reset@other_bot", from_user=BOB, chat_type="group")
        mine = fake.push_message(GROUP, f"/reset@{BOT} now", from_user=BOB, chat_type="group")
        (reply,) = await answered(fake, bot, mine)
    assert seen == ["/reset now"]
    assert reply.text == "History cleared."
    assert fake.replies_to(GROUP, other.message_id) == []
    assert model.calls == []


async def test_plugin_commands_are_published_with_setmycommands(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    config = telegram_config(make_config, fake)
    async with running(config, ScriptedModel(), fake, memory_plugin([])):
        assert fake.commands == [{"command": "reset", "description": "Forget this conversation."}]


# -- streaming ----------------------------------------------------------------------------


LONG_REPLY = " ".join(f"Sentence number {i} says something about llamas." for i in range(200))


async def test_a_9000_character_reply_arrives_as_three_messages(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    reply_text = (LONG_REPLY + " " + LONG_REPLY)[:9000]
    model = ScriptedModel(reply=lambda call: reply_text, chunk=700)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        messages = await answered(fake, bot, fake.push_message(1001, "long", from_user=ALICE))
    assert len(messages) == 3
    assert all(len(m.text) <= 4096 for m in messages)
    assert "".join(m.raw for m in messages) == reply_text
    assert " ".join(m.text for m in messages).split() == reply_text.split()
    assert fake.not_modified_errors() == []


async def test_edits_are_throttled_and_never_unchanged(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    steps = [(0.0, "Hel"), (0.05, "lo **wor")]
    steps += [(0.05, "ld**")] + [(0.05, " ") for _ in range(8)] + [(0.05, "\n\n")]
    steps += [(0.05, f"word{i} ") for i in range(12)] + [(0.3, "   "), (0.3, "end.")]
    model = PacedModel(steps)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        (shown,) = await answered(fake, bot, fake.push_message(1001, "go", from_user=ALICE))
    full = "".join(delta for _, delta in steps)
    assert shown.raw == full.replace("**world**", "<b>world</b>")
    assert shown.text == full.replace("**", "").strip()
    calls = [
        c for c in fake.calls if c.method in ("sendMessage", "editMessageText") and c.status == 200
    ]
    assert len(calls) >= 4  # it did stream
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.2 * 0.8, gaps  # edit_interval 0.2 s, less loopback jitter
    assert fake.not_modified_errors() == []


# PTB itself warns when it builds a RetryAfter (its retry_after is becoming a timedelta).
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")
async def test_rate_limited_send_waits_as_asked_and_completes(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    fake.rate_limit_next(1, "sendMessage", retry_after=1)
    async with running(telegram_config(make_config, fake), ScriptedModel(), fake) as bot:
        (shown,) = await answered(fake, bot, fake.push_message(1001, "quick", from_user=ALICE))
    assert shown.text == "echo: quick"
    limited, accepted = fake.calls_of("sendMessage")[:2]
    assert (limited.status, accepted.status) == (429, 200)
    assert accepted.at - limited.at >= 0.95
    assert len(fake.bot_messages(1001)) == 1


async def test_refused_html_falls_back_to_plain_text(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    fake.reject_html = lambda text: "<b>" in text
    model = ScriptedModel(reply=lambda call: "A **bold** claim, then more words.", chunk=6)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        (shown,) = await answered(fake, bot, fake.push_message(1001, "claim", from_user=ALICE))
    assert shown.text == "A **bold** claim, then more words."
    assert shown.parse_mode is None
    refused = [c for c in fake.calls if c.error and "can't parse entities" in c.error]
    assert len(refused) == 1  # once refused, that message stays plain text


async def test_blocked_user_is_not_retried(make_config: MakeConfig, fake: FakeTelegram) -> None:
    fake.blocked_chats.add(1001)
    async with running(telegram_config(make_config, fake), ScriptedModel(), fake) as bot:
        fake.push_message(1001, "hi", from_user=ALICE)
        await fake.wait_for(lambda: [c for c in fake.calls_of("sendMessage") if c.status == 403])
        await bot.wait_idle()
        await answered(fake, bot, fake.push_message(1002, "still here?", from_user=BOB))
    assert [c.status for c in fake.calls_of("sendMessage")] == [403, 200]


# -- faults of the Bot API server ------------------------------------------------------------


async def test_server_restart_mid_poll_loses_and_repeats_no_update(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    model = ScriptedModel()
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        first = fake.push_message(1001, "one", from_user=ALICE)
        await answered(fake, bot, first)
        await fake.wait_for(lambda: fake.polls_held)
        await fake.stop()
        during = fake.push_message(1001, "two", from_user=ALICE)
        await fake.start()
        after = fake.push_message(1001, "three", from_user=ALICE)
        await answered(fake, bot, during)
        await answered(fake, bot, after)
    for message in (first, during, after):
        assert len(fake.replies_to(1001, message.message_id)) == 1
    assert [c.last_user for c in model.calls] == ["one", "two", "three"]
    assert fake.pending_updates == []
    assert any(c.error == CUT for c in fake.calls_of("getUpdates"))


async def test_a_batch_the_inbox_refused_is_fetched_again_and_answered_once_in_order(
    make_config: MakeConfig, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The updates of one getUpdates answer are taken together (one inbox write). When that
    # write fails, none of them is confirmed: they come again and are answered once each.
    from llamabot.storage.inbox import Inbox

    put = Inbox.put
    refused: list[str] = []

    async def refuse_the_first_write(self: Inbox, inbound: Inbound) -> int | None:
        if len(refused) < 3:
            refused.append(inbound.text)
            raise sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("disk I/O"))
        return await put(self, inbound)

    monkeypatch.setattr(Inbox, "put", refuse_the_first_write)
    monkeypatch.setattr(telegram_adapter, "_backoff", lambda failures: 0)
    sent = [fake.push_message(1001, text, from_user=ALICE) for text in ("one", "two", "three")]
    model = ScriptedModel()
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        for message in sent:
            await answered(fake, bot, message)
    assert refused == ["one", "two", "three"]  # the batch came in one answer
    for message in sent:
        assert len(fake.replies_to(1001, message.message_id)) == 1
    assert [c.last_user for c in model.calls] == ["one", "two", "three"]
    assert fake.pending_updates == []


def stored(tmp_path: Path) -> list[tuple[str, str, str]]:
    """(role, status, content) of every stored message, oldest first."""
    with sqlite3.connect(tmp_path / "bot.db") as db:
        return list(db.execute("SELECT role, status, content FROM messages ORDER BY id"))


async def test_a_6_s_outage_still_delivers_the_reply(
    make_config: MakeConfig, fake: FakeTelegram, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        asked = fake.push_message(1001, "are you there?", from_user=ALICE)
        await model.call_started.wait()
        fake.outage(6)
        gate.set()
        (reply,) = await asyncio.wait_for(answered(fake, bot, asked), 30)
    assert reply.text == "echo: are you there?"
    sends = fake.calls_of("sendMessage")
    assert [c.status for c in sends][-1] == 200
    assert sends[-1].at - sends[0].at > 5  # it kept trying through the outage
    assert len(fake.bot_messages(1001)) == 1
    assert stored(tmp_path)[-1][:2] == ("assistant", "ok")


async def test_server_errors_and_cut_connections_are_retried(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    fake.fail_next(2, "sendMessage", "500")
    fake.fail_next(1, "sendMessage", "close")
    fake.fail_next(2, "editMessageText", "close")
    model = ScriptedModel(reply=lambda call: "A reply long enough to be edited " * 4, chunk=4)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        (reply,) = await answered(fake, bot, fake.push_message(1001, "go", from_user=ALICE))
    assert reply.text == ("A reply long enough to be edited " * 4).strip()
    assert [c.status for c in fake.calls_of("sendMessage")] == [500, 500, 0, 200]
    assert len(fake.bot_messages(1001)) == 1


async def test_a_reply_is_given_up_after_delivery_retry_s_and_logged_once(
    make_config: MakeConfig,
    fake: FakeTelegram,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    config = telegram_config(make_config, fake, "delivery_retry_s = 1.5")
    async with running(config, model, fake) as bot:
        fake.push_message(1001, "anyone?", from_user=ALICE)
        await model.call_started.wait()
        fake.outage(30)
        gate.set()
        await bot.wait_idle()
        fake.outage_until = 0
    attempts = fake.calls_of("sendMessage")
    assert len(attempts) >= 2
    assert attempts[-1].at - attempts[0].at < 3
    # (A poll that starts during the outage fails too, and says so in its own words.)
    gave_up = [
        r
        for r in caplog.records
        if r.levelno >= logging.WARNING and "polling failed" not in r.getMessage()
    ]
    assert len(gave_up) == 1, [r.getMessage() for r in gave_up]
    assert stored(tmp_path)[-1][:2] == ("assistant", "undelivered")


async def test_group_limits_are_kept_ahead_instead_of_drawing_429(
    make_config: MakeConfig, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Telegram's 20 a minute, scaled down: the adapter allows 2 a second with a burst
    # of 2, so never more than 4 in any second; the fake refuses a fifth.
    monkeypatch.setattr(telegram_adapter, "GROUP_RATE", 2)
    monkeypatch.setattr(telegram_adapter, "GROUP_PERIOD_S", 1.0)
    fake.group_limit = (4, 1.0)
    model = ScriptedModel(reply=lambda call: f"answer to {call.last_user}")
    # One person asks all six: flood control must let them through to reach the limit.
    config = telegram_config(make_config, fake, "[limits]\nmax_queued_per_person = 6\nburst = 6")
    async with running(config, model, fake) as bot:
        asked = [
            fake.push_message(GROUP, f"@{BOT} question {i}", from_user=ALICE, chat_type="group")
            for i in range(6)
        ]
        for message in asked:
            await answered(fake, bot, message)
    assert [c for c in fake.calls if c.status == 429] == []
    assert len(fake.bot_messages(GROUP)) == 6


async def test_code_block_streamed_line_by_line_draws_no_not_modified(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    # Each step lands in its own edit; the whitespace ones change nothing Telegram shows.
    steps = [(0.0, "Code:\n\n```python\ndef f(x):"), (0.3, "\n"), (0.3, "    "), (0.3, "return")]
    steps += [(0.3, " "), (0.3, "x"), (0.3, "\n"), (0.3, "\n```")]
    model = PacedModel(steps)
    async with running(telegram_config(make_config, fake), model, fake) as bot:
        (shown,) = await answered(fake, bot, fake.push_message(1001, "code", from_user=ALICE))
    assert shown.text == "Code:\n\ndef f(x):\n    return x"
    assert fake.not_modified_errors() == []


async def test_a_replayed_update_is_not_answered_twice(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    model = ScriptedModel()
    config = telegram_config(make_config, fake)
    async with running(config, model, fake) as bot:
        asked = fake.push_message(1001, "only once", from_user=ALICE)
        await answered(fake, bot, asked)
    # The confirmation never reached Telegram (a crash, say): it sends the update again.
    assert asked.update_id is not None
    fake.replay(asked.update_id)
    async with running(config, model, fake) as bot:
        later = fake.push_message(1001, "and this", from_user=ALICE)
        await answered(fake, bot, later)
    assert sum(asked.update_id in batch for batch in fake.deliveries) == 2  # it came again
    assert len(fake.replies_to(1001, asked.message_id)) == 1
    assert [c.last_user for c in model.calls] == ["only once", "and this"]


async def test_messages_taken_at_stop_are_answered_at_the_next_start(
    make_config: MakeConfig, fake: FakeTelegram, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    config = make_config(
        "[bot]\nstop_grace_s = 0.5\n"
        + TOML.format(base_url=fake.base_url, telegram_extra="", forum=FORUM)
    )
    async with running(config, model, fake):
        first = fake.push_message(1001, "first", from_user=ALICE)
        await model.call_started.wait()
        # Queued behind the reply in flight, and in another chat while the model is busy.
        follow_up = fake.push_message(1001, "follow-up", from_user=ALICE)
        await fake.wait_for(lambda: fake.pending_updates == [])  # taken and confirmed
        # Stop with the first reply still being written: it is cut with a notice.
    assert [m.text for m in fake.replies_to(1001, first.message_id)] == [
        "[interrupted: the bot is restarting]"
    ]
    gate.set()
    async with running(config, model, fake) as bot:
        await answered(fake, bot, follow_up)
    # "first" was cut by the stop, unanswered: the follow-up's answer covers both.
    assert [m.text for m in fake.replies_to(1001, follow_up.message_id)] == [
        "echo: first\n\nfollow-up"
    ]
    assert len(fake.replies_to(1001, first.message_id)) == 1  # not answered again
    statuses = [(role, status) for role, status, _ in stored(tmp_path)]
    assert ("assistant", "interrupted") in statuses


# -- webhook mode ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_checks_the_secret_token(
    make_config: MakeConfig, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret-token_1")
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    extra = f'mode = "webhook"\nwebhook_url = "{url}"\nport = {port}'
    model = ScriptedModel()
    async with running(telegram_config(make_config, fake, extra), model, fake) as bot:
        (registered,) = fake.calls_of("setWebhook")
        assert registered.params["url"] == url
        assert registered.params["secret_token"] == "s3cret-token_1"
        (reply,) = await answered(fake, bot, fake.push_message(1001, "via hook", from_user=ALICE))
        async with ClientSession() as session:
            update = {
                "update_id": 9,
                "message": {
                    "message_id": 99,
                    "date": 0,
                    "chat": {"id": 1001, "type": "private"},
                    "from": ALICE,
                    "text": "forged",
                },
            }
            statuses: list[int] = []
            for headers in ({"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {}):
                async with session.post(url, json=update, headers=headers) as response:
                    statuses.append(response.status)
        await answered(fake, bot, fake.push_message(1001, "again", from_user=ALICE))
    assert reply.text == "echo: via hook"
    assert statuses == [403, 403]
    assert [c.last_user for c in model.calls] == ["via hook", "again"]
    assert [status for _, status in fake.webhook_deliveries] == [200, 200]
    assert fake.calls_of("getUpdates") == []


async def test_webhook_updates_answered_200_survive_a_stop(
    make_config: MakeConfig, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret")
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    extra = f'mode = "webhook"\nwebhook_url = "{url}"\nport = {port}'
    config = make_config(
        "[bot]\nstop_grace_s = 0.2\n"
        + TOML.format(base_url=fake.base_url, telegram_extra=extra, forum=FORUM)
    )
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    async with running(config, model, fake):
        fake.push_message(1001, "first", from_user=ALICE)
        await model.call_started.wait()
        follow_up = fake.push_message(1001, "follow-up", from_user=ALICE)
        await fake.wait_for(lambda: (follow_up.update_id, 200) in fake.webhook_deliveries)
    gate.set()
    down = fake.push_message(1001, "while down", from_user=ALICE)
    await fake.wait_for(lambda: (down.update_id, 0) in fake.webhook_deliveries)
    async with running(config, model, fake) as bot:
        await answered(fake, bot, follow_up)
        await answered(fake, bot, down)
    # "first" was cut by the stop, unanswered: the model sees it merged with the follow-up.
    assert [c.last_user for c in model.calls[1:]] == ["first\n\nfollow-up", "while down"]


# -- set-up errors --------------------------------------------------------------------------


def test_a_missing_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_TG_TOKEN", raising=False)
    with pytest.raises(StartupError, match="MY_TG_TOKEN"):
        TelegramAdapter(TelegramSection(token_env="MY_TG_TOKEN"))


def test_webhook_mode_needs_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    section = TelegramSection(
        mode="webhook", webhook_url="https://example.org/hook", secret_token_env="HOOK_SECRET"
    )
    with pytest.raises(StartupError, match="HOOK_SECRET"):
        TelegramAdapter(section, token="1:x")


async def test_wrong_token_fails_start_with_advice(
    make_config: MakeConfig, fake: FakeTelegram, tmp_path: Path
) -> None:
    config = telegram_config(make_config, fake)
    adapter = TelegramAdapter(config.telegram, token="42:not-the-token")
    with pytest.raises(StartupError, match="TELEGRAM_TOKEN"):
        async with Bot(config, model=ScriptedModel(), adapters=[adapter], plugins=PluginHost()):
            pass


# -- normalisation, with a stub bot -----------------------------------------------------------


@dataclass
class StubHandle:
    """A BotHandle that records what the adapter submits."""

    inbound: list[Inbound] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    metrics: Metrics = field(default_factory=lambda: Metrics(""))

    def submit(self, inbound: Inbound, adapter: object) -> asyncio.Future[None]:
        self.inbound.append(inbound)
        self.arrived.set()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def accept(self, inbound: Inbound, adapter: object) -> None:
        self.submit(inbound, adapter)

    def command_specs(self) -> list[CommandSpec]:
        return [CommandSpec("Not-Valid!", "skipped"), CommandSpec("help", "")]


async def test_normalised_inbound(fake: FakeTelegram) -> None:
    section = TelegramSection(base_url=fake.base_url)
    adapter = TelegramAdapter(section, token=fake.token)
    handle = StubHandle()
    stub: BotHandle = handle
    await adapter.start(stub)
    try:
        assert fake.commands == [{"command": "help", "description": "help"}]
        fake.push_message(GROUP, f"@{BOT}: hi 👋 there", from_user=BOB, chat_type="supergroup")
        fake.push_message(GROUP, f"hello @{BOT}", from_user=BOB, chat_type="supergroup")
        fake.push_message(GROUP, "/help@other_bot", from_user=BOB, chat_type="supergroup")
        fake.push_message(GROUP, f"/help@{BOT}", from_user=BOB, chat_type="supergroup")
        fake.push_message(1001, "/help", from_user=ALICE)
        wanted: Callable[[], bool] = lambda: len(handle.inbound) == 4  # noqa: E731
        await fake.wait_for(wanted)
    finally:
        await adapter.stop()
    first, second, command, private = handle.inbound
    assert (first.text, first.addressed) == ("hi 👋 there", True)
    assert first.author.name == "Bob Builder" and first.author.id == "1002"
    assert first.channel == ChannelRef("telegram", str(GROUP))
    assert (second.text, second.addressed) == ("hello", True)
    assert (command.text, command.addressed) == ("/help", True)
    assert private.channel.is_private and private.text == "/help"


def test_a_mention_the_bot_writes_becomes_a_notifying_text_mention() -> None:
    from llamabot.adapters.telegram_html import markdown_to_html

    adapter = TelegramAdapter(TelegramSection(), token="123:abc")
    mention = adapter.mention("1001", "Alice [admin]")
    assert markdown_to_html(f"Reminder, {mention}") == (
        'Reminder, <a href="tg://user?id=1001">Alice admin</a>'
    )


async def test_allowed_users_gate_groups_too_and_a_stranger_cannot_reset_a_group(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    config = telegram_config(make_config, fake, 'allowed_users = ["1001", "@bob"]')
    model = ScriptedModel()
    stranger = user(666, "Mallory")
    async with running(config, model, fake) as bot:
        fake.push_message(GROUP, f"@{BOT} answer me", from_user=stranger, chat_type="group")
        await fake.wait_for(lambda: fake.bot_messages(GROUP))
        fake.push_message(GROUP, f"@{BOT} again", from_user=stranger, chat_type="group")
        asked = fake.push_message(GROUP, f"@{BOT} hi", from_user=ALICE, chat_type="group")
        await answered(fake, bot, asked)
    (refusal, answer) = fake.bot_messages(GROUP)
    assert "telegram:666" in refusal.text
    assert answer.reply_to == asked.message_id
    assert [c.last_user for c in model.calls] == ["Alice: hi"]


async def test_reset_in_a_group_asks_telegram_whether_the_person_is_a_group_admin(
    make_config: MakeConfig, fake: FakeTelegram
) -> None:
    plugin = Plugin("reset")

    @plugin.command("reset", permission="moderator")
    async def reset(ctx: CommandContext) -> None:
        await ctx.reply("forgot")

    config = telegram_config(make_config, fake)
    host = PluginHost()
    host.add(plugin, "test", config)
    fake.chat_admins[GROUP] = {1002}
    async with running(config, ScriptedModel(), fake, host) as bot:
        for sender in (ALICE, BOB):
            await answered(
                fake, bot, fake.push_message(GROUP, "/reset", from_user=sender, chat_type="group")
            )
    texts = [m.text for m in fake.bot_messages(GROUP)]
    assert texts == ["In a group, only its admins (and the bot's admins) can use /reset.", "forgot"]
    asked = [c.params["user_id"] for c in fake.calls if c.method == "getChatMember"]
    assert sorted(asked) == ["1001", "1002"]


async def test_a_second_poller_of_one_token_is_refused_at_start_and_the_first_goes_on(
    make_config: MakeConfig, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram_adapter, "CONFLICT_PROBE_S", 1)
    first_model = ScriptedModel()
    async with running(telegram_config(make_config, fake), first_model, fake) as first:
        await fake.wait_for(lambda: fake.polls_held == 1)
        toml = TOML.format(base_url=fake.base_url, telegram_extra="", forum=FORUM)
        with pytest.raises(StartupError, match="409 Conflict"):
            async with running(make_config(toml, db="second.db"), ScriptedModel(), fake):
                pass
        await answered(fake, first, fake.push_message(1001, "still there?", from_user=ALICE))
    assert [c.last_user for c in first_model.calls] == ["still there?"]
