"""Routing and conversations through a running Bot, with an instant scripted model."""

from __future__ import annotations

import asyncio

import pytest

from llamabot.app import Bot
from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.events import ChannelRef
from llamabot.llm.errors import ModelNotFound, ModelUnavailable
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform, ScriptedModel, echo
from tests.conftest import BASE_TOML, MakeConfig

LOCAL = ChannelRef("console", "local", is_private=True)
KEY = LOCAL.key


def bot(config: Config, model: ScriptedModel, adapter: FakePlatform) -> Bot:
    return Bot(config, model=model, adapters=[adapter], plugins=PluginHost())


async def test_the_bound_persona_reaches_the_model(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    config = make_config(
        BASE_TOML + '[[bindings]]\nplatform = "console"\nchannel = "ship"\npersona = "pirate"\n'
    )
    async with bot(config, model, adapter):
        await adapter.say("hello", chat="ship")
        await adapter.say("hello")
    assert [c.system for c in model.calls] == ["You are a pirate.", "You are a helpful assistant."]
    assert adapter.messages_in("console:ship") == ["echo: hello"]


async def test_history_is_fed_back_to_the_model(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    async with bot(make_config(), model, adapter):
        await adapter.say("first")
        await adapter.say("second")
    roles = [(m.role, m.content) for m in model.calls[1].messages]
    assert roles == [
        ("system", "You are a helpful assistant."),
        ("user", "first"),
        ("assistant", "echo: first"),
        ("user", "second"),
    ]


async def test_history_survives_a_restart(
    make_store_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    config = make_store_config()
    async with bot(config, model, adapter):
        await adapter.say("before restart")
    async with bot(config, model, adapter) as running:
        await adapter.say("after restart")
        assert await running.store.count() == 4
    assert [m.content for m in model.calls[-1].messages[1:]] == [
        "before restart",
        "echo: before restart",
        "after restart",
    ]


async def test_messages_of_one_conversation_are_answered_in_order(
    make_config: MakeConfig, adapter: FakePlatform
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    async with bot(make_config(), model, adapter):
        futures = [adapter.say(f"m{i}") for i in range(3)]
        await model.call_started.wait()
        assert len(model.calls) == 1  # the next waits for this one
        gate.set()
        await asyncio.gather(*futures)
    assert [c.last_user for c in model.calls] == ["m0", "m1", "m2"]
    assert adapter.messages_in(KEY) == ["echo: m0", "echo: m1", "echo: m2"]


async def test_conversations_run_concurrently_up_to_max_concurrency(
    make_config: MakeConfig, adapter: FakePlatform
) -> None:
    gate = asyncio.Event()
    model = ScriptedModel(gate=gate)
    config = make_config(BASE_TOML.replace('backend = "embedded"', "max_concurrency = 2"))
    async with bot(config, model, adapter):
        futures = [adapter.say("hi", chat=name) for name in ("a", "b", "c")]
        while len(model.calls) < 2:
            model.call_started.clear()
            await model.call_started.wait()
        for _ in range(5):
            await asyncio.sleep(0)  # give a third call every chance to start, wrongly
        assert len(model.calls) == 2
        gate.set()
        await asyncio.gather(*futures)
    assert len(model.calls) == 3
    for name in ("a", "b", "c"):
        assert adapter.messages_in(f"console:{name}") == ["echo: hi"]


async def test_empty_messages_are_ignored(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    async with bot(make_config(), model, adapter) as running:
        await adapter.say("")
        await adapter.say("   \n ")
        assert await running.store.count() == 0
    assert model.calls == [] and adapter.calls == []


async def test_a_too_long_message_is_refused_with_a_notice(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    async with bot(make_config(), model, adapter) as running:
        await adapter.say("x" * 16_001)
        assert await running.store.count() == 0
    assert model.calls == []
    [notice] = adapter.messages_in(KEY)
    assert "16,001" in notice and "16,000" in notice


async def test_an_unknown_command_says_how_to_find_the_right_one(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    async with bot(make_config(), model, adapter):
        await adapter.say("/frobnicate now")
    assert adapter.messages_in(KEY) == ["Unknown command /frobnicate. Send /help for the list."]
    assert model.calls == []


async def test_in_groups_only_addressed_messages_are_answered_with_speaker_names(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    async with bot(make_config(), model, adapter) as running:
        await adapter.say("chatter", chat="g", private=False, user="bob")
        await adapter.say("/nope", chat="g", private=False, user="bob")
        assert adapter.calls == [] and await running.store.count() == 0
        await adapter.say("hi bot", chat="g", private=False, user="alice", addressed=True)
    assert model.calls[0].messages[-1].content == "Alice: hi bot"
    assert adapter.messages_in("console:g") == ["echo: Alice: hi bot"]


async def test_a_model_error_before_any_text_keeps_the_question_only(
    make_config: MakeConfig, adapter: FakePlatform
) -> None:
    model = ScriptedModel(error=ModelNotFound("llama3.2"))
    async with bot(make_config(), model, adapter) as running:
        await adapter.say("anyone there?")
        conversation = await running.store.conversation_id(LOCAL)
        turns = await running.store.window(conversation, 10, 1000)
    [notice] = adapter.messages_in(KEY)
    assert "ollama pull llama3.2" in notice
    assert [(t.role, t.content) for t in turns] == [("user", "anyone there?")]


async def test_an_interrupted_reply_stays_visible_marked_and_out_of_the_window(
    make_config: MakeConfig, adapter: FakePlatform
) -> None:
    model = ScriptedModel(error=ModelUnavailable("host down"), error_after=2, chunk=4)
    async with bot(make_config(), model, adapter):
        await adapter.say("tell me a story")
        model.error = None
        await adapter.say("again")
    first, second = adapter.messages_in(KEY)
    assert first.startswith("echo: te") and "[interrupted:" in first
    assert second == "echo: tell me a story\n\nagain"
    history = [(m.role, m.content) for m in model.calls[1].messages[1:]]
    # No assistant turn between them, and no two user turns in a row: one merged turn.
    assert history == [("user", "tell me a story\n\nagain")]


async def test_stopping_lets_a_reply_in_flight_finish(make_config: MakeConfig) -> None:
    class StopRecordingAdapter(FakePlatform):
        shown_at_stop: list[str] | None = None

        async def stop(self) -> None:
            self.shown_at_stop = self.messages_in(KEY)

    adapter = StopRecordingAdapter()
    # Two thousand one-character deltas, each yielding to the loop: still streaming when
    # the bot is told to stop.
    model = ScriptedModel(reply=lambda call: "x" * 2000, chunk=1)
    async with bot(make_config(), model, adapter):
        answered = adapter.say("finish me")
        await model.call_started.wait()
    await answered
    assert adapter.shown_at_stop == ["x" * 2000]


async def test_interrupting_a_reply_keeps_its_text_marked_and_the_lane_open(
    make_config: MakeConfig, adapter: FakePlatform
) -> None:
    model = ScriptedModel(reply=lambda call: "x" * 2000, chunk=1)
    async with bot(make_config(), model, adapter) as running:
        answered = adapter.say("go on and on")
        await model.call_started.wait()
        await adapter.changed.wait()  # something is on screen
        assert running.interrupt(KEY)
        await answered
        assert not running.interrupt(KEY)  # nothing left to stop
        model.reply = echo
        await adapter.say("next")  # the conversation still answers
    first, second = adapter.messages_in(KEY)
    assert first.startswith("x") and first.endswith("\n\n[interrupted]")
    assert "restarting" not in first
    assert second == "echo: go on and on\n\nnext"  # the cut reply is not in the window


async def test_a_second_bot_on_the_same_sqlite_file_is_refused_until_the_first_stops(
    make_config: MakeConfig, model: ScriptedModel, adapter: FakePlatform
) -> None:
    config = make_config()
    async with bot(config, model, adapter):
        with pytest.raises(StartupError, match="SQLite serves one bot process"):
            async with bot(config, model, FakePlatform()):
                pass
    async with bot(config, model, adapter):  # released at stop
        await adapter.say("after")
    assert adapter.messages_in(KEY) == ["echo: after"]
