"""Tools the model calls: schemas from signatures, the round trip through Ollama's tool
calling (the real client against the fake server), and every way a call can go wrong."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamabot import CommandContext, Plugin
from llamabot.app import Bot
from llamabot.config import Config, parse_config
from llamabot.plugin_host import PluginHost
from llamabot.plugin_loader import load_plugins
from llamabot.testing import FakePlatform
from llamabot.tools import describe_call, tool_from_function
from tests.fakes.ollama import FakeModel, FakeOllama

KEY = "console:local"
ADMIN_KEY = "console:den"


def toml(url: str, tmp_path: Path, *, tools: str = '["time", "dice"]', extra: str = "") -> str:
    return f"""
[bot]
admins = ["console:root"]
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"
[tools]
timeout_s = 0.5
{extra}
[personas.assistant]
prompt = "TOOL-PERSONA"
model = "llama3.2"
tools = {tools}
[[bindings]]
platform = "console"
channel = "*"
persona = "assistant"
respond = "always"
[plugins]
dirs = []
"""


def config_for(url: str, tmp_path: Path, **kwargs: str) -> Config:
    return parse_config(toml(url, tmp_path, **kwargs), tmp_path / "bot.toml")


dice = Plugin("dice")
rolled: list[tuple[int, int]] = []
never = asyncio.Event()
slow_started = asyncio.Event()
slow_release = asyncio.Event()


@pytest.fixture(autouse=True)
def fresh_events() -> None:
    # An asyncio.Event belongs to the loop it was first awaited on: new ones per test.
    global never, slow_started, slow_release
    never, slow_started, slow_release = asyncio.Event(), asyncio.Event(), asyncio.Event()


@dice.tool("dice")
async def roll(ctx: CommandContext[None], sides: int, count: int = 1) -> str:
    """Roll dice and give their total.

    Args:
        sides: How many sides each die has.
        count: How many dice to roll.
    """
    rolled.append((sides, count))
    return f"rolled {count}d{sides}: {sides * count}"


@dice.tool("stall")
async def stall(ctx: CommandContext[None]) -> str:
    """Never finish (for the timeout)."""
    await never.wait()
    return "unreachable"


@dice.tool("slow")
async def slow(ctx: CommandContext[None]) -> str:
    """Finish when the test says so."""
    slow_started.set()
    await slow_release.wait()
    return "slow result"


@dice.tool("secret", permission="admin")
async def secret(ctx: CommandContext[None]) -> str:
    """An admin-only tool."""
    return "the secret"


def host(config: Config, tmp_path: Path) -> PluginHost:
    plugins = load_plugins(config, tmp_path)  # the bundled ones: time, remind, history_search
    plugins.add(dice, "test", config)
    return plugins


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    rolled.clear()
    async with FakeOllama() as server:
        yield server


def bot(config: Config, adapter: FakePlatform, tmp_path: Path) -> Bot:
    return Bot(config, adapters=[adapter], plugins=host(config, tmp_path))


def offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools") or []]


def turns(request: dict[str, Any]) -> list[tuple[str, str]]:
    # The client leaves out an empty content (an assistant turn that only calls tools).
    return [
        (m["role"], m.get("tool_name") or m.get("content", "")) for m in request["messages"][1:]
    ]


def stored(tmp_path: Path) -> list[tuple[str, str, str | None, str | None]]:
    with sqlite3.connect(tmp_path / "bot.db") as db:
        return list(
            db.execute("SELECT role, status, tool_name, tool_calls FROM messages ORDER BY id")
        )


# -- what the model is told of a tool ---------------------------------------------------


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    [tool] = [t for t in dice.tools if t.name == "dice"]
    spec = tool.spec
    assert spec.description == "Roll dice and give their total."
    assert spec.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "sides": {"type": "integer", "description": "How many sides each die has."},
            "count": {"type": "integer", "default": 1, "description": "How many dice to roll."},
        },
        "required": ["sides"],
    }


def test_a_tool_must_be_async_and_well_named() -> None:
    def sync(ctx: object) -> str:
        return ""

    with pytest.raises(TypeError, match="async"):
        tool_from_function(sync, name=None, description=None, permission="everyone", plugin="p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tool name"):
        tool_from_function(
            roll, name="two words", description=None, permission="everyone", plugin="p"
        )


def test_the_line_shown_while_a_tool_runs_is_short() -> None:
    assert describe_call("time", {}) == "🔧 time()"
    line = describe_call("remind", {"when": "10m", "text": "x" * 100})
    assert line.startswith("🔧 remind(when='10m', text='xx") and line.endswith("…)")
    assert len(line) < 70


# -- the round trip -------------------------------------------------------------------


async def test_a_tool_call_round_trip_is_answered_stored_and_shown_later(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "dice", "arguments": {"sides": 6, "count": 2}}], "You rolled 12."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path):
        await adapter.say("roll two dice")
        fake.reply = "Yes, 12."
        await adapter.say("what did I roll?")
    assert rolled == [(6, 2)]
    first, second, later = fake.chat_requests
    assert offered(first) == ["time", "dice"]  # the persona's list, in its order
    assert second["messages"][-2]["tool_calls"] == [
        {"function": {"name": "dice", "arguments": {"sides": 6, "count": 2}}}
    ]
    assert second["messages"][-1] == {
        "role": "tool",
        "content": "rolled 2d6: 12",
        "tool_name": "dice",
    }
    assert adapter.messages_in(KEY) == ["You rolled 12.", "Yes, 12."]
    # The next window shows the model its earlier call and result, in order.
    assert turns(later) == [
        ("user", "roll two dice"),
        ("assistant", ""),
        ("tool", "dice"),
        ("assistant", "You rolled 12."),
        ("user", "what did I roll?"),
    ]
    assert [(role, status, name) for role, status, name, _ in stored(tmp_path)] == [
        ("user", "ok", None),
        ("assistant", "ok", None),
        ("tool", "ok", "dice"),
        ("assistant", "ok", None),
        ("user", "ok", None),
        ("assistant", "ok", None),
    ]


async def test_the_person_sees_a_line_while_the_tool_runs_and_not_after(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "slow", "arguments": {}}], "Done waiting."]
    async with bot(config_for(fake.url, tmp_path, tools='["slow"]'), adapter, tmp_path):
        answered = adapter.say("take your time")
        await slow_started.wait()
        while adapter.messages_in(KEY) != ["🔧 slow()"]:
            adapter.changed.clear()
            await adapter.changed.wait()
        slow_release.set()
        await answered
    assert adapter.messages_in(KEY) == ["Done waiting."]  # the same message, edited


async def test_the_time_tool_tells_the_bots_time_zone(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "time", "arguments": {}}], "It is late."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path):
        await adapter.say("what time is it?")
    result = fake.chat_requests[1]["messages"][-1]["content"]
    assert "(UTC, UTC+0000)" in result  # [bot] timezone defaults to UTC


async def test_kept_tool_lines_stay_in_the_reply_but_not_in_the_history(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "time", "arguments": {}}], "It is late."]
    config = config_for(fake.url, tmp_path, extra='show_calls = "keep"')
    async with bot(config, adapter, tmp_path):
        await adapter.say("what time is it?")
        fake.reply = "ok"
        await adapter.say("thanks")
    assert adapter.messages_in(KEY)[0] == "🔧 time()\nIt is late."
    assert ("assistant", "It is late.") in turns(fake.chat_requests[-1])


# -- when a call goes wrong ------------------------------------------------------------


async def test_an_invalid_argument_goes_back_to_the_model_as_the_result(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "dice", "arguments": {"sides": "many"}}], "Sorry."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path):
        await adapter.say("roll")
    assert rolled == []
    result = fake.chat_requests[1]["messages"][-1]
    assert result["tool_name"] == "dice"
    assert result["content"].startswith("error: invalid arguments for dice: sides:")
    assert adapter.messages_in(KEY) == ["Sorry."]


async def test_a_tool_that_hangs_is_stopped_and_the_model_told(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "stall", "arguments": {}}], "It took too long."]
    config = config_for(fake.url, tmp_path, tools='["stall"]')
    async with bot(config, adapter, tmp_path):
        await adapter.say("wait for it")
    result = fake.chat_requests[1]["messages"][-1]["content"]
    assert result == "error: stall took longer than 0.5 s and was stopped"
    assert adapter.messages_in(KEY) == ["It took too long."]


async def test_a_tool_the_persona_may_not_use_is_neither_offered_nor_run(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "dice", "arguments": {"sides": 6}}], "No dice."]
    config = config_for(fake.url, tmp_path, tools='["time"]')
    async with bot(config, adapter, tmp_path):
        await adapter.say("roll")
    assert offered(fake.chat_requests[0]) == ["time"]
    assert rolled == []
    assert fake.chat_requests[1]["messages"][-1]["content"] == (
        "error: there is no tool 'dice' here; the tools are: time"
    )


async def test_admin_only_tools_are_offered_on_admins_turns_only(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path, tools='["time", "secret"]')
    async with bot(config, adapter, tmp_path):
        await adapter.say("hi", user="guest")
        await adapter.say("hi", user="root", chat="den")
    assert offered(fake.chat_requests[0]) == ["time"]
    assert offered(fake.chat_requests[1]) == ["time", "secret"]


async def test_the_round_limit_makes_the_model_answer_in_words(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    call = [{"name": "dice", "arguments": {"sides": 2}}]
    fake.script = [call, call, call, "Enough rolling."]
    config = config_for(fake.url, tmp_path, extra="max_rounds = 2")
    async with bot(config, adapter, tmp_path):
        await adapter.say("roll forever")
    assert len(rolled) == 2
    assert [bool(offered(r)) for r in fake.chat_requests] == [True, True, False]
    # The third request offered no tools, so the fake's script answered with its call;
    # Ollama would have answered in words. Either way the bot stops calling.
    assert len(fake.chat_requests) == 3


async def test_a_model_without_tool_support_is_never_sent_tools(tmp_path: Path) -> None:
    adapter = FakePlatform()
    async with FakeOllama([FakeModel("llama3.2", capabilities=("completion",))]) as fake:
        fake.reply = "Plain answer."
        async with bot(config_for(fake.url, tmp_path), adapter, tmp_path):
            await adapter.say("hi")
        assert not fake.chat_requests[0].get("tools")
    assert adapter.messages_in(KEY) == ["Plain answer."]


async def test_a_persona_without_tools_sends_none(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path, tools="[]"), adapter, tmp_path):
        await adapter.say("hi")
    assert not fake.chat_requests[0].get("tools")
    assert fake.show_requests == [] or all(  # no capability probe for a tool-less persona
        r.get("model") == "llama3.2" for r in fake.show_requests
    )


# -- the bundled tools ------------------------------------------------------------------


async def test_the_remind_tool_sets_a_reminder_for_the_asker(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "remind", "arguments": {"when": "2h", "text": "stretch"}}], "Done."]
    config = config_for(fake.url, tmp_path, tools='["remind"]')
    async with bot(config, adapter, tmp_path) as running:
        await adapter.say("remind me to stretch in two hours")
        scheduler = running.contexts.for_job("remind").scheduler
        import sys

        from llamabot.plugin_loader import MODULE_PREFIX

        deliver = sys.modules[f"{MODULE_PREFIX}.remind"].deliver
        [job] = await scheduler.pending(deliver)
    assert job.data["author"] == "console:alice" and job.data["text"] == "stretch"
    assert fake.chat_requests[1]["messages"][-1]["content"].startswith("OK, I'll remind you at ")


async def test_the_remind_tool_refuses_a_time_it_cannot_read(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [[{"name": "remind", "arguments": {"when": "soonish", "text": "x"}}], "Hm."]
    async with bot(config_for(fake.url, tmp_path, tools='["remind"]'), adapter, tmp_path):
        await adapter.say("remind me")
    assert fake.chat_requests[1]["messages"][-1]["content"].startswith("error: say when")


async def test_history_search_finds_this_conversations_words_only(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    config = config_for(fake.url, tmp_path, tools='["history_search"]')
    async with bot(config, adapter, tmp_path):
        fake.reply = "noted"
        await adapter.say("my locker code is 4711")
        await adapter.say("the zebra code is 9999", chat="other")
        fake.script = [
            [{"name": "history_search", "arguments": {"query": "code"}}],
            "It was 4711.",
        ]
        await adapter.say("what was my code?")
    result = fake.chat_requests[-1]["messages"][-1]["content"]
    assert "my locker code is 4711" in result
    assert "zebra" not in result
