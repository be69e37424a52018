"""The Discord adapter end to end: real discord.py and the real Bot against the fake Discord."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from llamabot.adapters.discord import DiscordAdapter, DiscordStartError, MessageContentIntentError
from llamabot.app import Bot
from llamabot.config import Config, DiscordSection
from llamabot.errors import StartupError
from llamabot.events import ChannelRef
from llamabot.llm import ChatMessage, GenerationOptions
from llamabot.testing import ScriptedModel
from tests.conftest import World
from tests.fakes.discord import FakeDiscord, FakeMessage

MakeConfig = Callable[..., Config]
EDIT_INTERVAL = 0.2


def config_text(world: World, bindings: str = "", discord_extra: str = "") -> str:
    return f"""
[discord]
enabled = true
api_base = "{world.fake.api_base}"
gateway_url = "{world.fake.gateway_url}"
edit_interval = {EDIT_INTERVAL}
{discord_extra}

[personas.assistant]
prompt = "You are a helpful assistant."

[personas.pirate]
prompt = "You are a pirate."
{bindings}
"""


def binding(channel: str, persona: str = "pirate", respond: str = "mention") -> str:
    return f"""
[[bindings]]
platform = "discord"
channel = "{channel}"
persona = "{persona}"
respond = "{respond}"
"""


@asynccontextmanager
async def running(
    world: World,
    make_config: MakeConfig,
    model: ScriptedModel,
    tmp_path: Path,
    *,
    bindings: str = "",
    discord_extra: str = "",
) -> AsyncIterator[Bot]:
    config = make_config(config_text(world, bindings, discord_extra))
    adapter = DiscordAdapter(
        config.discord, token=world.fake.token, guild_ready_timeout=0.05, connect_timeout=10
    )
    async with Bot(
        config, config_path=tmp_path / "bot.toml", model=model, adapters=[adapter]
    ) as bot:
        yield bot


def shown(fake: FakeDiscord, channel_id: str) -> list[str]:
    """What the bot's messages in a channel read now, oldest first."""
    return [m.content for m in fake.bot_messages(channel_id)]


async def wait_shown(fake: FakeDiscord, channel_id: str, expected: list[str]) -> None:
    await fake.wait_for(lambda: shown(fake, channel_id) == expected)


def assert_no_pings(fake: FakeDiscord) -> None:
    bodies = [r.json for r in fake.requests if r.method in ("POST", "PATCH") and r.json]
    assert bodies, "no message was sent"
    for body in bodies:
        assert body["allowed_mentions"]["parse"] == []
        assert not body["allowed_mentions"].get("users")
        assert not body["allowed_mentions"].get("roles")
        assert not body["allowed_mentions"].get("replied_user")


# -- when the bot answers -------------------------------------------------------------


async def test_dm_is_answered_as_a_reply(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    dm = world.fake.dm_channel(world.alice)
    async with running(world, make_config, model, tmp_path):
        asked = await world.fake.send_message(dm.id, "hello there", author=world.alice)
        await wait_shown(world.fake, dm.id, ["echo: hello there"])
    (sent,) = world.fake.bot_messages(dm.id)
    assert sent.reference_id == asked.id
    assert model.calls[0].system == "You are a helpful assistant."
    assert model.calls[0].last_user == "hello there"  # private: no speaker prefix
    assert_no_pings(world.fake)
    # discord.py asked for JSON over a zlib stream on API v10, and the fake spoke it.
    assert world.fake.connections[0] == "/?v=10&encoding=json&compress=zlib-stream"


async def test_dms_are_ignored_when_not_allowed(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    dm = world.fake.dm_channel(world.alice)
    async with running(
        world, make_config, model, tmp_path, discord_extra="allow_dms = false"
    ) as bot:
        await world.fake.send_message(dm.id, "hello?", author=world.alice)
        # The same message in a server, addressed, proves the DM went by first.
        mention = world.bot.mention
        await world.fake.send_message(world.general.id, f"{mention} hi", author=world.alice)
        await wait_shown(world.fake, world.general.id, ["echo: Ally: hi"])
        await bot.wait_idle()
    assert shown(world.fake, dm.id) == []
    assert len(model.calls) == 1


async def test_server_message_without_mention_is_ignored(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    other_bot = world.fake.add_user("helper", bot=True)
    async with running(world, make_config, model, tmp_path):
        channel = world.general.id
        await world.fake.send_message(channel, "just chatting", author=world.alice)
        await world.fake.send_message(channel, f"{world.bot.mention} ping", author=other_bot)
        # Messages of one channel are handled in order: once this one is answered, the
        # ones before it were seen and left alone.
        await world.fake.send_message(channel, f"{world.bot.mention} now you", author=world.bob)
        await wait_shown(world.fake, channel, ["echo: Bob: now you"])
    assert [c.last_user for c in model.calls] == ["Bob: now you"]


async def test_mention_is_answered_with_the_bound_persona(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    async with running(world, make_config, model, tmp_path, bindings=binding(world.general.id)):
        asked = await world.fake.send_message(
            world.general.id, f"<@!{world.bot.id}> ahoy, matey", author=world.alice
        )
        await wait_shown(world.fake, world.general.id, ["echo: Ally: ahoy, matey"])
    call = model.calls[0]
    assert call.system == "You are a pirate."
    assert call.last_user == "Ally: ahoy, matey"  # mention stripped, nickname as speaker
    # The conversation keeps the channel's name, for the admin page.
    with sqlite3.connect(tmp_path / "bot.db") as db:
        key = f"discord:{world.general.id}"
        [(title,)] = db.execute("SELECT title FROM conversations WHERE key = ?", (key,))
    assert title == f"#general ({world.guild.name})"
    (sent,) = world.fake.bot_messages(world.general.id)
    assert sent.reference_id == asked.id
    assert sent.payload["message_reference"]["message_id"] == asked.id
    post = world.fake.requests_to("POST", rf"/channels/{world.general.id}/messages")[0]
    assert post.json["message_reference"]["fail_if_not_exists"] is False


async def test_reply_to_the_bot_is_answered_without_mention(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    channel = world.random.id
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} one", author=world.bob)
        await wait_shown(world.fake, channel, ["echo: Bob: one"])
        (answer,) = world.fake.bot_messages(channel)
        await world.fake.send_message(
            channel, "and two?", author=world.bob, referenced_message=answer.id
        )
        await wait_shown(world.fake, channel, ["echo: Bob: one", "echo: Bob: and two?"])
    assert model.calls[1].system == "You are a helpful assistant."


async def test_thread_inherits_its_parent_persona(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    async with running(
        world, make_config, model, tmp_path, bindings=binding(world.general.id)
    ) as bot:
        await world.fake.send_message(
            world.thread.id, f"{world.bot.mention} in the thread", author=world.bob
        )
        await wait_shown(world.fake, world.thread.id, ["echo: Bob: in the thread"])
        await bot.wait_idle()  # the reply is stored after its last edit
        thread_ref = ChannelRef(
            "discord", world.general.id, world.thread.id, guild_id=world.guild.id
        )
        conversation = await bot.store.conversation_id(thread_ref)
        turns = await bot.store.window(conversation, 10, 10_000)
    assert model.calls[0].system == "You are a pirate."
    assert shown(world.fake, world.general.id) == []  # answered in the thread only
    assert [(t.role, t.author_name, t.content) for t in turns] == [
        ("user", "Bob", "in the thread"),
        ("assistant", None, "echo: Bob: in the thread"),
    ]


async def test_command_after_a_mention_goes_to_the_router(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(
            world.general.id, f"{world.bot.mention} /nosuchcommand", author=world.alice
        )
        await world.fake.wait_for(lambda: bool(world.fake.bot_messages(world.general.id)))
    (notice,) = shown(world.fake, world.general.id)
    assert notice.startswith("Unknown command /nosuchcommand")
    assert model.calls == []


# -- how replies are streamed -----------------------------------------------------------


def long_reply() -> str:
    """5,000 characters whose first message boundary falls inside a Python code block."""
    prose = " ".join(f"Sentence number {i} explains one more thing." for i in range(8))
    code = "".join(f"    total = total + {i}  # step {i}\n" for i in range(80))
    tail = " ".join(f"After the code, remark {i}." for i in range(200))
    text = f"{prose}\n\n```python\ndef add():\n    total = 0\n{code}    return total\n```\n\n{tail}"
    return text[:5000]


def unsplit(pieces: list[str], language: str) -> str:
    """Undo the close/reopen of a code block cut between two messages."""
    opener = f"```{language}\n"
    text = pieces[0]
    for piece in pieces[1:]:
        if text.endswith("```") and piece.startswith(opener):
            text = text[: -len("```")] + piece[len(opener) :]
        else:
            text += piece
    return text


async def test_long_reply_is_split_into_three_messages_with_the_code_block_reopened(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    reply = long_reply()
    assert len(reply) == 5000
    assert reply.index("```python") < 2000 < reply.index("```\n\n")  # the cut falls in code
    model = ScriptedModel(reply=lambda call: reply, chunk=64)
    channel = world.random.id
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} explain", author=world.bob)
        await world.fake.wait_for(
            lambda: (
                len(shown(world.fake, channel)) == 3
                and unsplit(shown(world.fake, channel), "python") == reply
            ),
            timeout=20,
        )
    pieces = shown(world.fake, channel)
    assert all(len(p) <= 2000 for p in pieces)
    assert pieces[0].endswith("```")
    assert pieces[1].startswith("```python\n")
    for piece in pieces:  # every message renders its own, closed code blocks
        fences = [line for line in piece.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, piece
    assert unsplit(pieces, "python") == reply
    assert_no_pings(world.fake)


class PacedModel(ScriptedModel):
    """A ScriptedModel that takes ``pause`` seconds per delta, like a model generating."""

    pause: float = 0.02

    async def stream_chat(  # type: ignore[override]
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> AsyncIterator[str]:
        async for delta in super().stream_chat(model, messages, options):
            await asyncio.sleep(self.pause)
            yield delta


def edit_times(fake: FakeDiscord, message: FakeMessage) -> list[float]:
    """When the message was posted and each time it was edited (as requests arrived)."""
    posts = [
        r.at
        for r in fake.requests_to("POST", rf"/channels/{message.channel_id}/messages")
        if r.status == 200
    ]
    patches = fake.requests_to("PATCH", rf"/channels/{message.channel_id}/messages/{message.id}")
    created = [t for t in posts if t <= message.versions[0][0]][-1]
    return [created, *(r.at for r in patches)]


async def test_edits_of_a_message_are_never_faster_than_edit_interval(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    reply = "word " * 120
    model = PacedModel(reply=lambda call: reply, chunk=6)
    channel = world.general.id
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} talk", author=world.alice)
        await wait_shown(world.fake, channel, [reply])
    (message,) = world.fake.bot_messages(channel)
    times = edit_times(world.fake, message)
    assert len(times) >= 4, "the reply should have been edited several times"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= EDIT_INTERVAL - 0.001, gaps
    assert_no_pings(world.fake)


async def test_typing_shows_only_while_a_slow_model_has_not_started(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    channel = world.general.id
    typing = rf"/channels/{channel}/typing"
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} slow", author=world.alice)
        await world.fake.wait_for(lambda: bool(world.fake.requests_to("POST", typing)))
        gate.set()
        await world.fake.wait_for(lambda: len(world.fake.bot_messages(channel)) == 1)
        shown_typing = len(world.fake.requests_to("POST", typing))
        await world.fake.send_message(channel, f"{world.bot.mention} quick", author=world.alice)
        await world.fake.wait_for(lambda: len(world.fake.bot_messages(channel)) == 2)
    # The quick reply went out in one request: no "is typing" before it.
    assert len(world.fake.requests_to("POST", typing)) == shown_typing == 1


async def test_rate_limited_send_is_retried_and_the_reply_is_complete(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    channel = world.general.id
    world.fake.fail_next_sends(1, 429, retry_after=0.3)
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} hurry", author=world.alice)
        await wait_shown(world.fake, channel, ["echo: Ally: hurry"])
    posts = world.fake.requests_to("POST", rf"/channels/{channel}/messages")
    assert [p.status for p in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 0.3
    assert posts[1].json == posts[0].json


async def test_failed_edit_continues_in_a_new_message_without_losing_text(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    reply = "Part of a long answer. " * 30
    model = PacedModel(reply=lambda call: reply, chunk=10)
    channel = world.general.id
    world.fake.fail_next_edits(1, 400)
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} go", author=world.alice)
        await world.fake.wait_for(lambda: "".join(shown(world.fake, channel)) == reply)
    assert len(shown(world.fake, channel)) == 2


async def test_a_6_s_outage_still_delivers_the_reply(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    channel = world.general.id
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} there?", author=world.alice)
        await model.call_started.wait()
        world.fake.outage(6, "close")
        gate.set()
        await world.fake.wait_for(lambda: shown(world.fake, channel) == ["echo: Ally: there?"], 30)
    posts = world.fake.requests_to("POST", rf"/channels/{channel}/messages")
    assert posts[-1].at - posts[0].at > 5  # it kept trying through the outage


async def test_a_send_whose_answer_was_lost_is_repeated_without_a_duplicate(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    world.fake.lost_answers = 1
    channel = world.general.id
    async with running(world, make_config, ScriptedModel(), tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} once", author=world.alice)
        await wait_shown(world.fake, channel, ["echo: Ally: once"])
    posts = world.fake.requests_to("POST", rf"/channels/{channel}/messages")
    assert len(posts) == 2
    assert posts[0].json["nonce"] == posts[1].json["nonce"]


class HeldModel(ScriptedModel):
    """Holds the answer to messages containing ``held`` until ``release`` is set."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held
        self.release = asyncio.Event()
        self.holding = asyncio.Event()

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> AsyncIterator[str]:
        if self.held in messages[-1].content and not self.release.is_set():
            self.holding.set()
            await self.release.wait()
        async for delta in super().stream_chat(model, messages, options):
            yield delta


async def test_a_follow_up_queued_at_stop_is_answered_at_the_next_start(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = HeldModel("first")
    dm = world.fake.dm_channel(world.alice)
    general = world.general.id
    grace = "[bot]\nstop_grace_s = 0.2\n"
    async with running(world, make_config, model, tmp_path, bindings=grace):
        await world.fake.send_message(dm.id, "first", author=world.alice)
        await model.holding.wait()
        await world.fake.send_message(dm.id, "follow-up", author=world.alice)
        # Messages are queued in the order they arrive: once this one is answered, the
        # follow-up waits in the inbox behind the reply in flight.
        await world.fake.send_message(general, f"{world.bot.mention} ping", author=world.bob)
        await wait_shown(world.fake, general, ["echo: Bob: ping"])
    assert shown(world.fake, dm.id) == ["[interrupted: the bot is restarting]"]
    model.release.set()
    async with running(world, make_config, model, tmp_path):
        # "first" was never answered, so the model sees it merged with the follow-up.
        await wait_shown(
            world.fake,
            dm.id,
            ["[interrupted: the bot is restarting]", "echo: first\n\nfollow-up"],
        )
    assert [c.last_user for c in model.calls] == ["Bob: ping", "first\n\nfollow-up"]


async def test_a_message_sent_while_the_bot_stops_is_answered_once(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = HeldModel("first")
    dm = world.fake.dm_channel(world.alice)
    general = world.general.id
    grace = "[bot]\nstop_grace_s = 1\n"
    bot = running(world, make_config, model, tmp_path, bindings=grace)
    await bot.__aenter__()
    await world.fake.send_message(dm.id, "first", author=world.alice)
    await model.holding.wait()
    stopping = asyncio.create_task(bot.__aexit__(None, None, None))
    # Discord never sends it again: it is answered before the bot exits or after it starts.
    await world.fake.send_message(general, f"{world.bot.mention} still there?", author=world.bob)
    await stopping
    model.release.set()
    async with running(world, make_config, model, tmp_path):
        await wait_shown(world.fake, general, ["echo: Bob: still there?"])
    assert [c.last_user for c in model.calls] == ["Bob: still there?"]


async def test_reply_to_a_deleted_message_is_posted_plainly(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    channel = world.general.id
    async with running(world, make_config, model, tmp_path):
        asked = await world.fake.send_message(
            channel, f"{world.bot.mention} never mind", author=world.alice
        )
        async with asyncio.timeout(10):
            await model.call_started.wait()
        await world.fake.delete_message(asked.id)
        gate.set()
        await wait_shown(world.fake, channel, ["echo: Ally: never mind"])
    (sent,) = world.fake.bot_messages(channel)
    assert sent.reference_id is None


async def test_model_output_cannot_ping_anyone(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    reply = f"@everyone @here <@{world.bob.id}> <@&{world.guild.id}> look!"
    model = ScriptedModel(reply=lambda call: reply)
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(world.general.id, f"{world.bot.mention} x", author=world.bob)
        await wait_shown(world.fake, world.general.id, [reply])
    assert_no_pings(world.fake)


# -- faults ---------------------------------------------------------------------------


async def test_next_message_is_answered_after_the_gateway_drops(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    channel = world.general.id
    async with running(world, make_config, model, tmp_path):
        await world.fake.send_message(channel, f"{world.bot.mention} before", author=world.bob)
        await wait_shown(world.fake, channel, ["echo: Bob: before"])
        await world.fake.drop_gateway(code=4000)
        # Sent while the bot is away: the resumed session replays it.
        await world.fake.send_message(channel, f"{world.bot.mention} after", author=world.bob)
        await wait_shown(world.fake, channel, ["echo: Bob: before", "echo: Bob: after"])
    assert world.fake.resumes == 1
    assert world.fake.identifies == 1  # resumed, not a new session
    assert world.fake.connections[-1].startswith("/resume?")


async def test_reconnect_request_resumes_the_session(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    channel = world.random.id
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    async with running(world, make_config, model, tmp_path, bindings=metrics) as bot:
        await world.fake.request_reconnect()  # op 7, as Discord sends before moving a session
        await world.fake.wait_for(lambda: world.fake.resumes == 1 and world.fake.connected)
        await world.fake.send_message(
            channel, f"{world.bot.mention} still there?", author=world.bob
        )
        await wait_shown(world.fake, channel, ["echo: Bob: still there?"])
        reconnects = bot.metrics.sample("llamabot_reconnects_total", platform="discord")
    assert world.fake.identifies == 1
    assert reconnects == 1


async def test_forbidden_channel_is_logged_once_and_not_retried(
    world: World, make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedModel()
    channel = world.random.id
    world.fake.forbidden_channels.add(channel)
    with caplog.at_level(logging.WARNING, logger="llamabot.adapters.discord"):
        async with running(world, make_config, model, tmp_path) as bot:
            for text in ("first", "second"):
                await world.fake.send_message(
                    channel, f"{world.bot.mention} {text}", author=world.alice
                )
            await world.fake.wait_for(
                lambda: len(world.fake.requests_to("POST", rf"/channels/{channel}/messages")) == 2
            )
            await bot.wait_idle()
    posts = world.fake.requests_to("POST", rf"/channels/{channel}/messages")
    assert [p.status for p in posts] == [403, 403]
    refusals = [r for r in caplog.records if "forbids the bot" in r.getMessage()]
    assert len(refusals) == 1
    assert "Send Messages" in refusals[0].getMessage()
    assert len(model.calls) == 2


# -- history ------------------------------------------------------------------------


async def test_history_is_stored_per_channel_with_speaker_names(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    channel = world.general.id
    bindings = binding(channel, persona="assistant", respond="always")
    async with running(world, make_config, model, tmp_path, bindings=bindings) as bot:
        await world.fake.send_message(channel, "I like tea", author=world.alice)
        await world.fake.send_message(channel, "I prefer coffee", author=world.bob)
        await wait_shown(
            world.fake, channel, ["echo: Ally: I like tea", "echo: Bob: I prefer coffee"]
        )
        await bot.wait_idle()  # the reply is stored after its last edit
        ref = ChannelRef("discord", channel, guild_id=world.guild.id)
        conversation = await bot.store.conversation_id(ref)
        turns = await bot.store.window(conversation, 10, 10_000)
    assert [(t.role, t.author_name, t.content) for t in turns] == [
        ("user", "Ally", "I like tea"),
        ("assistant", None, "echo: Ally: I like tea"),
        ("user", "Bob", "I prefer coffee"),
        ("assistant", None, "echo: Bob: I prefer coffee"),
    ]
    second = model.calls[1]
    assert [(m.role, m.content) for m in second.messages[1:]] == [
        ("user", "Ally: I like tea"),
        ("assistant", "echo: Ally: I like tea"),
        ("user", "Bob: I prefer coffee"),
    ]


# -- start-up errors ------------------------------------------------------------------


async def test_missing_message_content_intent_is_a_clear_start_error(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    async with FakeDiscord(message_content_intent_enabled=False) as fake:
        guild = await fake.add_guild("Llama Club")
        await fake.add_channel(guild, "general")
        config = make_config(
            f'[discord]\nenabled = true\napi_base = "{fake.api_base}"\n'
            f'gateway_url = "{fake.gateway_url}"\n'
        )
        adapter = DiscordAdapter(config.discord, token=fake.token, connect_timeout=10)
        with pytest.raises(MessageContentIntentError, match="Message Content Intent") as caught:
            async with Bot(
                config,
                config_path=tmp_path / "bot.toml",
                model=ScriptedModel(),
                adapters=[adapter],
            ):
                pass
    assert isinstance(caught.value, RuntimeError)
    assert "developer portal" in str(caught.value)


async def test_wrong_token_is_a_clear_start_error(make_config: MakeConfig, tmp_path: Path) -> None:
    async with FakeDiscord() as fake:
        config = make_config(
            f'[discord]\nenabled = true\napi_base = "{fake.api_base}"\n'
            f'gateway_url = "{fake.gateway_url}"\n'
        )
        adapter = DiscordAdapter(config.discord, token="not-the-token", connect_timeout=10)
        with pytest.raises(DiscordStartError, match="DISCORD_TOKEN") as caught:
            await adapter.start(_NoBot())
        assert "not-the-token" not in str(caught.value)


class _NoBot:
    def submit(self, inbound: object, adapter: object) -> asyncio.Future[None]:
        raise AssertionError("no message expected")

    async def accept(self, inbound: object, adapter: object) -> None:
        raise AssertionError("no message expected")

    def command_specs(self) -> list[object]:
        return []


@pytest.fixture
def no_token_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("LLAMABOT_TEST_DISCORD_TOKEN", raising=False)
    yield


def test_missing_token_variable_names_the_variable(no_token_env: None) -> None:
    section = DiscordSection(enabled=True, token_env="LLAMABOT_TEST_DISCORD_TOKEN")
    with pytest.raises(DiscordStartError, match="LLAMABOT_TEST_DISCORD_TOKEN") as caught:
        DiscordAdapter(section)
    assert isinstance(caught.value, StartupError)  # shown to the admin without a traceback


def test_token_is_read_from_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMABOT_TEST_DISCORD_TOKEN", "secret-value")
    section = DiscordSection(enabled=True, token_env="LLAMABOT_TEST_DISCORD_TOKEN")
    adapter = DiscordAdapter(section)
    assert adapter.limits.max_chars == 2000
    assert adapter.limits.edit_interval_s == section.edit_interval
    assert "secret-value" not in repr(vars(adapter).get("limits"))


async def test_a_mention_the_bot_writes_itself_pings_once_and_the_model_never(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    bob = f"<@{world.bob.id}>"
    said = f"{bob} echoed by the model"
    model = ScriptedModel(reply=lambda call: said)
    channel = world.general.id
    async with running(world, make_config, model, tmp_path) as bot:
        jobs = bot.contexts.for_job("remind")
        who = jobs.mention("discord", str(world.bob.id), "Bob")
        assert who == bob
        target = ChannelRef("discord", str(channel), guild_id=str(world.guild.id))
        await jobs.send(target, f"⏰ Reminder: stretch, {who}")
        await world.fake.send_message(channel, f"{world.bot.mention} hi", author=world.bob)
        await wait_shown(world.fake, channel, [f"⏰ Reminder: stretch, {bob}", said])
    reminder, answer = [r.json for r in world.fake.requests if r.method == "POST" and r.json]
    assert [str(u) for u in reminder["allowed_mentions"]["users"]] == [str(world.bob.id)]
    assert reminder["allowed_mentions"]["parse"] == []
    assert not answer["allowed_mentions"].get("users")
