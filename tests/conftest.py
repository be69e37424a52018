"""Shared fixtures: configs on a temporary SQLite file, an in-process model and adapter."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import make_url

from llamabot.config import Config, parse_config
from llamabot.testing import FakePlatform, ScriptedModel
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeGuild, FakeUser

# httpx reads proxy variables; the fakes live on loopback.
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"

BASE_TOML = """
[bot]
admins = ["console:admin"]

[llm]
backend = "embedded"

[personas.assistant]
prompt = "You are a helpful assistant."

[personas.pirate]
prompt = "You are a pirate."

[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
"""

MakeConfig = Callable[..., Config]


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """Build a Config from TOML text, storing history in a file under tmp_path."""

    def make(text: str = BASE_TOML, *, db: str = "bot.db") -> Config:
        body = f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / db}"\n' + text
        return parse_config(body, tmp_path / "bot.toml")

    return make


@pytest.fixture
def model() -> ScriptedModel:
    return ScriptedModel()


@pytest.fixture
def adapter() -> FakePlatform:
    return FakePlatform()


# The PostgreSQL half of the storage suites runs where a server is given:
#   eval "$(.ci/postgres start)"   (CI does this)
PG_URL = os.environ.get("LLAMABOT_TEST_PG_URL", "")
PG_SKIP = (
    'PostgreSQL half: no server; run `eval "$(.ci/postgres start)"` (sets '
    "LLAMABOT_TEST_PG_URL) to include it"
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: an SQLite file, then a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
        return
    if not PG_URL:
        pytest.skip(PG_SKIP)
    import asyncpg

    base = make_url(PG_URL)
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield base.set(database=name).render_as_string(hide_password=False)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def make_store_config(store_url: str, tmp_path: Path) -> MakeConfig:
    """Like ``make_config``, on ``store_url``: the test runs on SQLite and on PostgreSQL."""

    def make(text: str = BASE_TOML) -> Config:
        body = f'[storage]\nurl = "{store_url}"\n' + text
        return parse_config(body, tmp_path / "bot.toml")

    return make


# -- a Discord server on the fake Discord ------------------------------------------------


@dataclass
class World:
    """A server with two channels and a thread, two people, and a DM."""

    fake: FakeDiscord
    guild: FakeGuild
    general: FakeChannel
    random: FakeChannel
    thread: FakeChannel
    alice: FakeUser
    bob: FakeUser

    @property
    def bot(self) -> FakeUser:
        return self.fake.bot_user


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord() as fake:
        guild = await fake.add_guild("Llama Club")
        general = await fake.add_channel(guild, "general")
        random = await fake.add_channel(guild, "random")
        thread = await fake.add_thread(general, "long talk")
        alice = fake.add_user("alice", global_name="Alice", nick="Ally")
        bob = fake.add_user("bob", global_name="Bob")
        yield World(fake, guild, general, random, thread, alice, bob)
