"""Shared fixtures: configs on a temporary SQLite file, an in-process model and adapter."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from llamabot.config import Config, parse_config
from tests.fakes.chat import RecordingAdapter
from tests.fakes.model import ScriptedModel

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
def adapter() -> RecordingAdapter:
    return RecordingAdapter()
