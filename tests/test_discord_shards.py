"""Discord sharding: processes split the guilds by shard, and each message is answered once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamabot.adapters.discord import DiscordAdapter
from llamabot.app import Bot
from llamabot.config import ConfigError
from llamabot.testing import ScriptedModel
from tests.conftest import MakeConfig
from tests.fakes.discord import FakeChannel, FakeDiscord
from tests.fakes.ollama import FakeOllama


def config_text(fake: FakeDiscord, shards: str) -> str:
    return f"""
[discord]
enabled = true
api_base = "{fake.api_base}"
gateway_url = "{fake.gateway_url}"
{shards}
"""


@contextlib.asynccontextmanager
async def shard_bot(
    fake: FakeDiscord, make_config: MakeConfig, model: ScriptedModel, shards: str, db: str
) -> AsyncIterator[Bot]:
    config = make_config(config_text(fake, shards), db=db)
    adapter = DiscordAdapter(config.discord, token=fake.token, guild_ready_timeout=0.05)
    async with Bot(config, model=model, adapters=[adapter]) as bot:
        yield bot


async def channels_on_both_shards(fake: FakeDiscord) -> dict[int, FakeChannel]:
    """A server on shard 0 and one on shard 1 of 2 (ids decide: add until both exist)."""
    found: dict[int, FakeChannel] = {}
    while len(found) < 2:
        guild = await fake.add_guild(f"server {len(fake.guilds)}")
        shard = (int(guild.id) >> 22) % 2
        if shard not in found:
            found[shard] = await fake.add_channel(guild, "general")
    return found


async def test_two_processes_split_the_guilds_and_answer_each_message_once(
    make_config: MakeConfig,
) -> None:
    async with FakeDiscord() as fake:
        channels = await channels_on_both_shards(fake)
        alice = fake.add_user("alice")
        dm = fake.dm_channel(alice)
        me = fake.bot_user.mention
        first, second = ScriptedModel(), ScriptedModel()
        async with (
            shard_bot(fake, make_config, first, "shard_count = 2\nshard_ids = [0]", "a.db"),
            shard_bot(fake, make_config, second, "shard_count = 2\nshard_ids = [1]", "b.db"),
        ):
            asked = [
                await fake.send_message(channels[0].id, f"{me} to shard zero", author=alice),
                await fake.send_message(channels[1].id, f"{me} to shard one", author=alice),
                await fake.send_message(dm.id, "a direct message", author=alice),
            ]
            await fake.wait_for(lambda: all(m.id in fake.replies_to for m in asked))
        for message in asked:
            assert len([m for m in fake.bot_messages(message.channel_id)]) == 1
    assert [c.last_user.split(": ")[-1] for c in first.calls] == [
        "to shard zero",
        "a direct message",
    ]
    assert [c.last_user.split(": ")[-1] for c in second.calls] == ["to shard one"]


def test_shard_ids_must_fit_shard_count(make_config: MakeConfig) -> None:
    with pytest.raises(ConfigError, match="shard_ids needs shard_count"):
        make_config("[discord]\nshard_ids = [0]\n")
    with pytest.raises(ConfigError, match="from 0 to 1"):
        make_config("[discord]\nshard_count = 2\nshard_ids = [2]\n")


def test_the_readme_lines_load(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config("[discord]\nenabled = true\nshard_count = 4\nshard_ids = [0, 1]\n")
    assert (config.discord.shard_count, config.discord.shard_ids) == (4, [0, 1])


RUN_CONFIG = """
[llm]
backend = "ollama"
[llm.ollama]
host = "{ollama}"

[storage]
url = "sqlite+aiosqlite:///bot.db"

[discord]
enabled = true
api_base = "{api}"
gateway_url = "{gateway}"
shard_count = 2
shard_ids = [{shard}]

[web]
listen = "127.0.0.1:0"   # two processes on one machine: each its own admin page port
"""


async def test_two_llamabot_run_processes_each_answer_their_own_shard(tmp_path: Path) -> None:
    async with FakeDiscord() as fake, FakeOllama() as ollama:
        ollama.reply = "Answered."
        channels = await channels_on_both_shards(fake)
        alice = fake.add_user("alice")
        me = fake.bot_user.mention
        processes = []
        for shard in (0, 1):
            folder = tmp_path / f"shard{shard}"
            folder.mkdir()
            (folder / "bot.toml").write_text(
                RUN_CONFIG.format(
                    ollama=ollama.url, api=fake.api_base, gateway=fake.gateway_url, shard=shard
                )
            )
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "llamabot.cli",
                    "run",
                    "--config",
                    str(folder / "bot.toml"),
                    env={**os.environ, "DISCORD_TOKEN": fake.token},
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
            )
        try:
            await fake.wait_for(lambda: fake.shards_connected == {0, 1}, 60)
            asked = [
                await fake.send_message(channels[0].id, f"{me} zero", author=alice),
                await fake.send_message(channels[1].id, f"{me} one", author=alice),
                await fake.send_message(fake.dm_channel(alice).id, "dm", author=alice),
            ]
            await fake.wait_for(lambda: all(m.id in fake.replies_to for m in asked), 60)
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                async with asyncio.timeout(30):
                    await process.communicate()
    for message in asked:
        assert [m.content for m in fake.bot_messages(message.channel_id)] == ["Answered."]
    assert [p.returncode for p in processes] == [0, 0]
    # Each process stored only its own shard's conversations (DMs belong to shard 0).
    stored = [
        sorted(
            row[0]
            for row in sqlite3.connect(tmp_path / f"shard{n}" / "bot.db").execute(
                "SELECT chat_id FROM conversations"
            )
        )
        for n in (0, 1)
    ]
    assert stored == [sorted([channels[0].id, fake.dm_channel(alice).id]), [channels[1].id]]
