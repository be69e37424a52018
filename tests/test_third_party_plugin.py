"""A plugin written from plugins/README.md alone (a dice roller with a slash command, a
cooldown and a tool) works on Discord, Telegram and the console.

``llamabot.testing`` runs it on the three fake platforms, as its author would test it;
then it runs under the real Discord and Telegram adapters against the fake servers.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from llamabot.adapters import telegram as telegram_adapter
from llamabot.adapters.discord import DiscordAdapter
from llamabot.adapters.telegram import TelegramAdapter
from llamabot.app import Bot
from llamabot.llm.base import ToolCall
from llamabot.plugin_loader import load_plugins
from llamabot.testing import BotHarness, ModelCall, ScriptedModel
from tests.conftest import MakeConfig, World
from tests.fakes.telegram import FakeTelegram, user
from tests.test_discord import config_text

DICE_FILE = Path(__file__).parent / "fakes" / "plugins" / "thirdparty" / "dice.py"
GUIDE = Path(__file__).parent.parent / "plugins" / "README.md"
ROLLED = re.compile(r"🎲 (\w+) rolled ((?:\d+ \+ )*\d+) = (\d+)")


def load_dice() -> ModuleType:
    spec = importlib.util.spec_from_file_location("thirdparty_dice", DICE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["thirdparty_dice"] = module
    spec.loader.exec_module(module)
    return module


dice = load_dice()


def check_roll(text: str, name: str, count: int, sides: int) -> None:
    match = ROLLED.fullmatch(text)
    assert match is not None, text
    assert match.group(1) == name
    faces = [int(n) for n in match.group(2).split(" + ")]
    assert len(faces) == count and all(1 <= n <= sides for n in faces)
    assert sum(faces) == int(match.group(3))


def test_the_guide_shows_the_plugin_that_is_tested() -> None:
    guide = GUIDE.read_text(encoding="utf-8")
    code = DICE_FILE.read_text(encoding="utf-8")
    assert f"```python\n{code}```" in guide


@pytest.mark.parametrize("platform", ["console", "discord", "telegram"])
async def test_roll_with_a_cooldown_and_the_plugins_settings(platform: str) -> None:
    async with BotHarness(dice.plugin, config="[plugins.dice]\nmax_dice = 3\n") as harness:
        [first] = await harness.say("/roll 2 20", platform=platform, group=True, user="ann")
        check_roll(first, "Ann", 2, 20)
        [wait] = await harness.say("/roll", platform=platform, group=True, user="ann")
        assert wait.startswith("Please wait ") and "/roll" in wait
        [too_many] = await harness.say("/roll 4", platform=platform, user="bob")
        assert too_many == "Usage: /roll [count] [sides] (roll 1 to 3 dice)"
        [other] = await harness.say("/roll", platform=platform, group=True, user="cid")
        check_roll(other, "Cid", 1, 6)


async def test_the_model_rolls_with_the_tool() -> None:
    def script(call: ModelCall) -> str | list[ToolCall]:
        if call.messages[-1].role == "tool":
            return f"The dice say: {call.messages[-1].content}"
        return [ToolCall("c1", "roll_dice", {"count": 3, "sides": 4})]

    config = '[personas.assistant]\nprompt = "Roll when asked."\ntools = ["roll_dice"]\n'
    async with BotHarness(dice.plugin, model=ScriptedModel(reply=script), config=config) as h:
        [answer] = await h.say("roll three d4 for me")
        assert re.fullmatch(r"The dice say: rolled \[\d, \d, \d\], total \d+", answer)
        assert [spec.name for spec in h.model.calls[0].tools] == ["roll_dice"]
        refused = await h.call_tool("roll_dice", {"count": 50})
        assert refused == "error: roll_dice failed: roll 1 to 10 dice"


def plugin_folder_config(text: str) -> str:
    return text + f'\n[plugins]\ndirs = ["{DICE_FILE.parent}"]\n'


async def test_on_discord_roll_is_a_slash_command(
    world: World, make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(plugin_folder_config(config_text(world)))
    adapter = DiscordAdapter(
        config.discord, token=world.fake.token, guild_ready_timeout=0.05, connect_timeout=10
    )
    plugins = load_plugins(config, tmp_path)
    async with Bot(config, model=ScriptedModel(), adapters=[adapter], plugins=plugins):
        [registered] = [c for c in world.fake.app_commands if c["name"] == "roll"]
        assert [(o["name"], o["type"]) for o in registered["options"]] == [
            ("count", 4),
            ("sides", 4),
        ]
        used = await world.fake.invoke_command(
            world.bob, world.general, "roll", {"count": 2, "sides": 8}
        )
        await world.fake.wait_for(lambda: bool(used.shown))
        typed = await world.fake.send_message(
            world.general.id, f"{world.bot.mention} /roll 1 12", author=world.alice
        )
        await world.fake.wait_for(lambda: typed.id in world.fake.replies_to)
    check_roll(used.shown[0], "Bob", 2, 8)
    check_roll(world.fake.replies_to[typed.id].content, "Ally", 1, 12)


async def test_on_telegram_roll_is_a_command(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telegram_adapter, "CONFLICT_PROBE_S", 0)
    alice = user(1001, "Alice")
    async with FakeTelegram(username="llama_bot") as fake:
        text = f'[telegram]\nenabled = true\nbase_url = "{fake.base_url}"\n'
        config = make_config(plugin_folder_config(text))
        adapter = TelegramAdapter(config.telegram, token=fake.token)
        plugins = load_plugins(config, tmp_path)
        async with Bot(config, model=ScriptedModel(), adapters=[adapter], plugins=plugins):
            asked = fake.push_message(1001, "/roll 3 6", from_user=alice)
            await fake.wait_for(lambda: bool(fake.replies_to(1001, asked.message_id)))
        [reply] = fake.replies_to(1001, asked.message_id)
        check_roll(reply.text, "Alice", 3, 6)
        assert "roll" in [c["command"] for c in fake.commands]
