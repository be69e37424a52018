"""The fake Discord's application commands and interactions, driven by unmodified
discord.py: a plain ``discord.Client`` with an ``app_commands.CommandTree`` (no llamabot
code) syncs its commands to the fake, and the fake plays the person who uses them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands

from tests.conftest import World


@pytest.fixture(autouse=True)
def pointed_at_the_fake(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", world.fake.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(world.fake.gateway_url)
    )


@dataclass
class TreeBot:
    """A plain discord.py client with a command tree, and what its commands saw."""

    client: discord.Client
    tree: app_commands.CommandTree[discord.Client]
    seen: list[Any] = field(default_factory=list)


def new_bot() -> TreeBot:
    intents = discord.Intents.none()
    intents.guilds = True
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    return TreeBot(client, app_commands.CommandTree(client))


@asynccontextmanager
async def connected(world: World, bot: TreeBot) -> AsyncIterator[TreeBot]:
    await bot.client.login(world.fake.token)
    runner = asyncio.create_task(bot.client.connect(reconnect=False))
    try:
        async with asyncio.timeout(10):
            await bot.client.wait_until_ready()
        yield bot
    finally:
        await bot.client.close()
        await runner


def add_greet(bot: TreeBot) -> None:
    @bot.tree.command(description="Say hello")
    @app_commands.describe(name="Who to greet", times="How often", mood="In what mood")
    @app_commands.choices(
        mood=[
            app_commands.Choice(name="Happy", value="happy"),
            app_commands.Choice(name="Grumpy", value="grumpy"),
        ]
    )
    async def greet(
        interaction: discord.Interaction, name: str, times: int = 1, mood: str = "happy"
    ) -> None:
        bot.seen.append((interaction.user.id, interaction.guild_id, name, times, mood))
        await interaction.response.send_message(f"{'hi ' * times}{name} ({mood})", ephemeral=True)


async def test_sync_registers_the_commands_as_the_signatures_say(world: World) -> None:
    fake = world.fake
    bot = new_bot()
    add_greet(bot)

    @bot.tree.command(description="Forget everything")
    @app_commands.default_permissions(administrator=True)
    async def reset(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("forgotten")

    async with connected(world, bot):
        synced = await bot.tree.sync()
        fetched = await bot.tree.fetch_commands()
        again = await bot.tree.sync()
    by_name = {c["name"]: c for c in fake.app_commands}
    greet = by_name["greet"]
    assert [(o["name"], o["type"], o["required"]) for o in greet["options"]] == [
        ("name", 3, True),
        ("times", 4, False),
        ("mood", 3, False),
    ]
    assert greet["options"][0]["description"] == "Who to greet"
    assert greet["options"][2]["choices"] == [
        {"name": "Happy", "value": "happy"},
        {"name": "Grumpy", "value": "grumpy"},
    ]
    admin = str(discord.Permissions(administrator=True).value)
    assert by_name["reset"]["default_member_permissions"] == admin
    assert {c.name: c.id for c in synced} == {c["name"]: int(c["id"]) for c in fake.app_commands}
    assert {c.name: c.id for c in fetched} == {c.name: c.id for c in synced}
    assert [c.id for c in again] == [c.id for c in synced]  # the ids stay with the names
    assert fake.command_syncs == 2


async def test_a_command_runs_with_typed_options_and_answers_ephemerally(world: World) -> None:
    fake = world.fake
    bot = new_bot()
    add_greet(bot)
    async with connected(world, bot):
        await bot.tree.sync()
        used = await fake.invoke_command(
            world.alice, world.general, "greet", {"name": "Bo", "times": 2, "mood": "grumpy"}
        )
        await fake.wait_for(lambda: used.original is not None)
    assert bot.seen == [(int(world.alice.id), int(world.guild.id), "Bo", 2, "grumpy")]
    assert used.payload["member"]["user"]["id"] == world.alice.id
    assert used.responses == [4] and used.ephemeral
    assert used.shown == ["hi hi Bo (grumpy)"]
    assert fake.bot_messages(world.general.id) == []  # only Alice sees it
    assert not any(f[2].get("t") == "MESSAGE_CREATE" for f in fake.gateway_log)
    [callback] = fake.requests_to("POST", rf"/interactions/{used.id}/.+/callback")
    assert callback.status == 200 and "Authorization" not in callback.headers


async def test_a_command_in_a_dm_carries_the_user_instead_of_a_member(world: World) -> None:
    fake = world.fake
    bot = new_bot()
    add_greet(bot)
    dm = fake.dm_channel(world.alice)
    async with connected(world, bot):
        await bot.tree.sync()
        used = await fake.invoke_command(world.alice, dm, "greet", {"name": "Bo"})
        await fake.wait_for(lambda: used.original is not None)
    assert "member" not in used.payload and "guild_id" not in used.payload
    assert used.payload["user"]["id"] == world.alice.id
    assert bot.seen == [(int(world.alice.id), None, "Bo", 1, "happy")]


async def test_a_deferred_answer_is_filled_in_by_the_followup_then_edited(world: World) -> None:
    fake = world.fake
    bot = new_bot()

    @bot.tree.command(description="Think first")
    async def slow(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        await interaction.followup.send("late", wait=True)
        await interaction.edit_original_response(content="edited")
        fetched = await interaction.original_response()
        bot.seen.append(fetched.content)
        await interaction.followup.send("more")

    async with connected(world, bot):
        await bot.tree.sync()
        used = await fake.invoke_command(world.alice, world.general, "slow")
        await fake.wait_for(lambda: len(used.followups) == 1)
    assert used.responses == [5] and used.deferred
    assert used.original is not None
    assert [v for _, v in used.original.versions] == ["", "late", "edited"]
    assert used.shown == ["edited", "more"]
    assert bot.seen == ["edited"]
    assert [m.content for m in fake.bot_messages(world.general.id)] == ["edited", "more"]


async def test_autocomplete_returns_the_choices_of_the_callback(world: World) -> None:
    fake = world.fake
    bot = new_bot()

    @bot.tree.command(description="Pick a persona")
    async def persona(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f"now {name}")

    @persona.autocomplete("name")
    async def names(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=p, value=p)
            for p in ("assistant", "pirate", "pilot")
            if p.startswith(current)
        ]

    async with connected(world, bot):
        await bot.tree.sync()
        choices = await fake.autocomplete(world.alice, world.general, "persona", "name", "pi")
    assert choices == [{"name": "pirate", "value": "pirate"}, {"name": "pilot", "value": "pilot"}]
    assert fake.app_commands[0]["options"][0]["autocomplete"] is True


async def test_an_interaction_is_answered_once(world: World) -> None:
    fake = world.fake
    bot = new_bot()
    handled = asyncio.Event()

    @bot.tree.command(description="Twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("first")
        try:
            await interaction.response.send_message("second")
        except discord.InteractionResponded:
            bot.seen.append("refused by discord.py")
        handled.set()

    async with connected(world, bot):
        await bot.tree.sync()
        used = await fake.invoke_command(world.alice, world.general, "twice")
        async with asyncio.timeout(10):
            await handled.wait()
        async with aiohttp.ClientSession() as session:
            url = f"{fake.api_base}/interactions/{used.id}/{used.token}/callback"
            async with session.post(url, json={"type": 4, "data": {"content": "x"}}) as answer:
                raw = (answer.status, await answer.json())
    assert bot.seen == ["refused by discord.py"]
    assert raw == (400, {"message": "Interaction has already been acknowledged.", "code": 40060})
    assert used.shown == ["first"]
