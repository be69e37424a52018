"""Live bot.toml: edits apply to the next message; bad edits never take the bot down."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from llamabot.app import Bot
from llamabot.config import load_config
from llamabot.plugin_host import PluginHost
from llamabot.plugins import Plugin
from llamabot.reload import ConfigWatcher, ReloadResult
from llamabot.testing import FakePlatform, ScriptedModel

TOML = """
[storage]
url = "sqlite+aiosqlite:///bot.db"

[personas.assistant]
prompt = "PROMPT-ONE"

[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
"""


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Bot, ConfigWatcher, Path]]:
    path = tmp_path / "bot.toml"
    path.write_text(TOML)
    adapter = FakePlatform()
    bot = Bot(
        load_config(path),
        config_path=path,
        model=ScriptedModel(),
        adapters=[adapter],
        plugins=PluginHost(),
        watch_config=True,
    )
    async with bot:
        assert bot.watcher is not None
        async with asyncio.timeout(10):
            await bot.watcher.ready.wait()
        yield bot, bot.watcher, path


async def next_result(watcher: ConfigWatcher, seen: int) -> ReloadResult:
    """Wait for the reload after the first ``seen`` ones that is not a no-op."""
    async with asyncio.timeout(15), watcher.reloaded:
        await watcher.reloaded.wait_for(
            lambda: any(r.outcome != "unchanged" for r in watcher.results[seen:])
        )
    return next(r for r in watcher.results[seen:] if r.outcome != "unchanged")


async def ask(bot: Bot) -> str:
    [adapter] = bot.adapters
    assert isinstance(adapter, FakePlatform)
    await adapter.say("hi")
    model = bot.model
    assert isinstance(model, ScriptedModel)
    return model.calls[-1].system


async def test_a_new_persona_prompt_reaches_the_next_message(
    running: tuple[Bot, ConfigWatcher, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bot, watcher, path = running
    assert await ask(bot) == "PROMPT-ONE"
    caplog.set_level(logging.INFO, logger="llamabot.reload")
    path.write_text(TOML.replace("PROMPT-ONE", "PROMPT-TWO"))
    result = await next_result(watcher, 0)
    assert result.outcome == "applied"
    assert result.changes.applied == ["persona 'assistant' edited (prompt)"]
    assert await ask(bot) == "PROMPT-TWO"
    assert "persona 'assistant' edited (prompt)" in caplog.text


async def test_an_invalid_edit_keeps_the_old_config_and_logs_the_line(
    running: tuple[Bot, ConfigWatcher, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bot, watcher, path = running
    path.write_text(TOML.replace('prompt = "PROMPT-ONE"', 'prompt = "PROMPT-TWO"\ntemprature = 1'))
    result = await next_result(watcher, 0)
    assert result.outcome == "rejected"
    assert f"{path.resolve()}:7: unknown key 'personas.assistant.temprature'" in result.problems[0]
    assert "did you mean 'temperature'" in caplog.text
    assert await ask(bot) == "PROMPT-ONE"


async def test_a_save_through_a_temporary_file_and_rename_reloads_once(
    running: tuple[Bot, ConfigWatcher, Path],
) -> None:
    bot, watcher, path = running
    temporary = path.with_name(".bot.toml.swp")
    temporary.write_text(TOML.replace("PROMPT-ONE", "PROMPT-TWO"))
    os.replace(temporary, path)
    first = await next_result(watcher, 0)
    assert first.outcome == "applied"
    seen = len(watcher.results)
    # A second, distinct edit: everything before it has been handled by then.
    path.write_text(TOML.replace("PROMPT-ONE", "PROMPT-THREE"))
    await next_result(watcher, seen)
    outcomes = [r.outcome for r in watcher.results if r.outcome != "unchanged"]
    assert outcomes == ["applied", "applied"]
    assert await ask(bot) == "PROMPT-THREE"


async def test_a_save_in_two_steps_is_read_once_whole(
    running: tuple[Bot, ConfigWatcher, Path],
) -> None:
    bot, watcher, path = running
    text = TOML.replace("PROMPT-ONE", "PROMPT-TWO")
    with path.open("w") as file:
        file.write(text[: len(text) // 2])  # cut mid-table: invalid on its own
        file.flush()
        os.fsync(file.fileno())
        file.write(text[len(text) // 2 :])
    result = await next_result(watcher, 0)
    assert result.outcome == "applied"
    assert [r.outcome for r in watcher.results if r.outcome == "rejected"] == []
    assert await ask(bot) == "PROMPT-TWO"


async def test_a_storage_change_is_reported_as_needing_a_restart(
    running: tuple[Bot, ConfigWatcher, Path], caplog: pytest.LogCaptureFixture
) -> None:
    bot, watcher, path = running
    before = bot.config.storage.url
    path.write_text(TOML.replace("bot.db", "other.db").replace("PROMPT-ONE", "PROMPT-TWO"))
    result = await next_result(watcher, 0)
    assert result.changes.need_restart == ["[storage] url"]
    assert "[storage] url changed; this takes effect after a restart" in caplog.text
    assert bot.config.storage.url == before
    assert await ask(bot) == "PROMPT-TWO"  # the rest of the edit applies


class DiceSettings(BaseModel):
    sides: int = 6


async def test_plugin_settings_reload_and_a_bad_slice_is_rejected_whole(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text(TOML + "[plugins.dice]\nsides = 6\n")
    config = load_config(path)
    dice = Plugin("dice", config=DiceSettings)
    host = PluginHost()
    host.add(dice, "test", config)
    bot = Bot(
        config,
        config_path=path,
        model=ScriptedModel(),
        adapters=[FakePlatform()],
        plugins=host,
        watch_config=True,
    )
    async with bot:
        assert bot.watcher is not None
        path.write_text(TOML.replace("PROMPT-ONE", "PROMPT-TWO") + "[plugins.dice]\nsides = 20\n")
        assert (await next_result(bot.watcher, 0)).outcome == "applied"
        assert host.config_for("dice") == DiceSettings(sides=20)
        seen = len(bot.watcher.results)
        path.write_text(TOML.replace("PROMPT-ONE", "PROMPT-3") + '[plugins.dice]\nsides = "x"\n')
        rejected = await next_result(bot.watcher, seen)
        assert rejected.outcome == "rejected"
        assert "[plugins.dice] is invalid: sides" in rejected.problems[0]
        assert host.config_for("dice") == DiceSettings(sides=20)
        assert await ask(bot) == "PROMPT-TWO"  # nothing of the bad edit applied


def test_a_changed_openai_server_waits_for_a_restart(tmp_path: Path) -> None:
    from llamabot.config import parse_config
    from llamabot.reload import compare, live_part

    def config(url: str) -> str:
        return f'[llm]\nbackend = "openai"\n[llm.openai]\nbase_url = "{url}"\n'

    old = parse_config(config("http://gpu-a:8000/v1"), tmp_path / "bot.toml")
    new = parse_config(config("http://gpu-b:8000/v1"), tmp_path / "bot.toml")
    assert compare(old, new).need_restart == ["[llm] openai"]
    assert live_part(old, new).llm.openai.base_url == "http://gpu-a:8000/v1"
