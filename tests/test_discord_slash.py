"""Plugin commands as Discord slash commands: registration, interaction responses,
deferral, ephemeral answers and autocomplete — real discord.py against the fake Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from llamabot import ChannelRef, CommandContext, Plugin
from llamabot.adapters import discord_commands
from llamabot.adapters.discord import DiscordAdapter
from llamabot.app import Bot
from llamabot.plugin_loader import load_plugins
from llamabot.testing import ScriptedModel
from tests.conftest import MakeConfig, World
from tests.fakes.discord import FakeDiscord
from tests.test_discord import config_text, shown

slow = Plugin("slow")
release = asyncio.Event()


@pytest.fixture(autouse=True)
def fresh_release() -> None:
    # An asyncio.Event belongs to the loop it was first awaited on: one per test.
    global release
    release = asyncio.Event()


@slow.command("ponder", usage="<topic>")
async def ponder(ctx: CommandContext[None], topic: str, rounds: int = 1) -> None:
    """Think about a topic for a while.

    Args:
        topic: What to think about.
        rounds: How many rounds of thought.
    """
    await release.wait()
    await ctx.reply(f"thought {rounds}x about {topic}")


@slow.command("hush", usage="[wait]")
async def hush(ctx: CommandContext[None], wait: int = 0) -> None:
    """Answer nothing (after waiting for the test, when asked to)."""
    if wait:
        await release.wait()


@slow.command("secret", permission="admin")
async def secret(ctx: CommandContext[None]) -> None:
    """Admins only."""
    await ctx.reply("the secret")


@asynccontextmanager
async def running(
    world: World,
    make_config: MakeConfig,
    tmp_path: Path,
    *,
    extra: str = "",
    discord_extra: str = "",
    plugins: tuple[Plugin[Any], ...] = (slow,),
) -> AsyncIterator[Bot]:
    text = config_text(world, discord_extra=discord_extra) + extra
    text = text.replace("[discord]", f'[bot]\nadmins = ["discord:{world.alice.id}"]\n\n[discord]')
    config = make_config(text)
    (tmp_path / "bot.toml").write_text(text)
    host = load_plugins(config, tmp_path)
    for plugin in plugins:
        host.add(plugin, "test", config)
    adapter = DiscordAdapter(
        config.discord, token=world.fake.token, guild_ready_timeout=0.05, connect_timeout=10
    )
    async with Bot(
        config,
        config_path=tmp_path / "bot.toml",
        model=ScriptedModel(),
        adapters=[adapter],
        plugins=host,
    ) as bot:
        yield bot


def registered(fake: FakeDiscord, name: str) -> dict[str, Any]:
    return next(c for c in fake.app_commands if c["name"] == name)


async def test_commands_are_registered_once_and_again_only_when_they_change(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    fake = world.fake
    async with running(world, make_config, tmp_path):
        pass
    assert fake.command_syncs == 1
    ponder_command = registered(fake, "ponder")
    assert ponder_command["description"] == "Think about a topic for a while."
    assert ponder_command["options"] == [
        {"type": 3, "name": "topic", "description": "What to think about.", "required": True},
        {
            "type": 4,
            "name": "rounds",
            "description": "How many rounds of thought.",
            "required": False,
        },
    ]
    assert ponder_command["default_member_permissions"] is None
    assert registered(fake, "secret")["default_member_permissions"] == "8"  # Administrator
    assert registered(fake, "reset")["default_member_permissions"] == "32"  # Manage Server
    persona = registered(fake, "persona")
    assert [o.get("choices") for o in persona["options"]] == [
        [{"name": "list", "value": "list"}, {"name": "set", "value": "set"}],
        None,
    ]
    assert persona["options"][1]["autocomplete"] is True
    async with running(world, make_config, tmp_path):
        pass
    assert fake.command_syncs == 1  # the same set: nothing sent
    async with running(world, make_config, tmp_path, plugins=()):
        pass
    assert fake.command_syncs == 2
    assert "ponder" not in [c["name"] for c in fake.app_commands]


async def test_a_slash_command_is_answered_in_its_interaction(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    release.set()
    async with running(world, make_config, tmp_path):
        used = await world.fake.invoke_command(
            world.bob, world.general, "ponder", {"topic": "llamas", "rounds": 3}
        )
        await world.fake.wait_for(lambda: used.shown == ["thought 3x about llamas"])
    assert used.responses == [4] and used.ephemeral is False
    assert shown(world.fake, world.general.id) == ["thought 3x about llamas"]


async def test_a_slow_command_is_deferred_then_answered(
    world: World, make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_commands, "DEFER_AFTER_S", 0.05)
    async with running(world, make_config, tmp_path):
        used = await world.fake.invoke_command(
            world.bob, world.general, "ponder", {"topic": "time"}
        )
        await world.fake.wait_for(lambda: used.deferred)
        assert used.shown == []  # "thinking…"
        release.set()
        await world.fake.wait_for(lambda: used.shown == ["thought 1x about time"])
    assert used.responses == [5]
    assert len(used.followups) == 0  # the "thinking…" message became the answer


async def test_a_command_waiting_behind_a_reply_is_acknowledged_in_time(
    world: World, make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Discord forgets an interaction not answered within its window; the deferral must
    # come first even when the command waits in its conversation's lane.
    monkeypatch.setattr(discord_commands, "DEFER_AFTER_S", 0.05)
    world.fake.initial_response_window_s = 0.5
    async with running(world, make_config, tmp_path):
        first = await world.fake.invoke_command(world.bob, world.general, "ponder", {"topic": "a"})
        second = await world.fake.invoke_command(world.bob, world.general, "ponder", {"topic": "b"})
        await world.fake.wait_for(lambda: first.deferred and second.deferred)
        release.set()
        await world.fake.wait_for(lambda: bool(first.shown and second.shown))
    assert first.shown == ["thought 1x about a"] and second.shown == ["thought 1x about b"]


async def test_admin_commands_and_refusals_are_ephemeral(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    async with running(world, make_config, tmp_path):
        mine = await world.fake.invoke_command(world.alice, world.general, "secret")
        theirs = await world.fake.invoke_command(world.bob, world.general, "secret")
        await world.fake.wait_for(lambda: bool(mine.shown and theirs.shown))
    assert mine.shown == ["the secret"] and mine.ephemeral is True
    assert theirs.shown == ["Only the bot's admins can use /secret."]
    assert theirs.ephemeral is True
    assert shown(world.fake, world.general.id) == []  # nobody else sees either


async def test_persona_names_are_suggested_and_persona_set_works(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    async with running(world, make_config, tmp_path) as bot:
        suggested = await world.fake.autocomplete(
            world.alice, world.general, "persona", "name", "p", {"action": "set"}
        )
        assert [c["value"] for c in suggested] == ["pirate"]
        used = await world.fake.invoke_command(
            world.alice, world.general, "persona", {"action": "set", "name": "pirate"}
        )
        await world.fake.wait_for(lambda: bool(used.shown))
        channel = ChannelRef("discord", world.general.id, guild_id=world.guild.id)
        assert bot.config.persona_for(channel).name == "pirate"
    assert used.shown == [
        "This conversation now uses the persona pirate; bot.toml keeps the binding."
    ]


async def test_remind_works_as_a_slash_command(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    async with running(world, make_config, tmp_path):
        used = await world.fake.invoke_command(
            world.bob, world.general, "remind", {"words": "2h stretch your legs"}
        )
        await world.fake.wait_for(lambda: bool(used.shown))
        listed = await world.fake.invoke_command(world.bob, world.general, "reminders")
        await world.fake.wait_for(lambda: bool(listed.shown))
    assert used.shown[0].startswith("OK, I'll remind you at ")
    assert listed.shown[0].endswith("stretch your legs")


async def test_prefix_mode_registers_nothing_and_slash_mode_ignores_typed_commands(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    fake = world.fake
    async with running(world, make_config, tmp_path, discord_extra='commands = "prefix"'):
        pass
    assert fake.command_syncs == 0
    dm = fake.dm_channel(world.bob)
    async with running(world, make_config, tmp_path, discord_extra='commands = "slash"'):
        await fake.send_message(dm.id, "/help", author=world.bob)
        await fake.send_message(dm.id, "hello", author=world.bob)
        await fake.wait_for(lambda: shown(fake, dm.id) == ["echo: hello"])
    assert fake.command_syncs == 1


async def test_a_slash_command_works_in_a_dm(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    dm = world.fake.dm_channel(world.bob)
    async with running(world, make_config, tmp_path):
        used = await world.fake.invoke_command(world.bob, dm, "help", {"command": "ponder"})
        await world.fake.wait_for(lambda: bool(used.shown))
    assert used.shown == ["/ponder <topic>\nThink about a topic for a while."]


async def test_a_command_that_answers_nothing_still_ends_its_interaction(
    world: World, make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_commands, "DEFER_AFTER_S", 0.05)
    async with running(world, make_config, tmp_path):
        quick = await world.fake.invoke_command(world.bob, world.general, "hush")
        await world.fake.wait_for(lambda: bool(quick.shown))
        slow_one = await world.fake.invoke_command(world.bob, world.general, "hush", {"wait": 1})
        await world.fake.wait_for(lambda: slow_one.deferred)
        release.set()
        await world.fake.wait_for(lambda: bool(slow_one.shown))
    assert quick.shown == ["Done."] and quick.ephemeral
    assert slow_one.shown == ["Done."]  # "thinking…" ended
