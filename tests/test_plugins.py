"""The plugin API: discovery, isolation, duplicate names, permissions and usage errors."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from llamabot.app import Bot
from llamabot.cli import main
from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.plugin_host import PluginHost
from llamabot.plugin_loader import bundled_plugins_dir, load_plugins
from llamabot.plugins import Plugin, UsageError, crontab_weekdays
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import BASE_TOML, MakeConfig

FOLDERS = Path(__file__).parent / "fakes" / "plugins"
LOCAL = "console:local"


def with_dirs(make_config: MakeConfig, *folders: str, extra: str = "") -> Config:
    dirs = ", ".join(f'"{FOLDERS / folder}"' for folder in folders)
    return make_config(BASE_TOML + f"\n[plugins]\ndirs = [{dirs}]\n{extra}")


def running(config: Config, adapter: FakePlatform, tmp_path: Path) -> Bot:
    return Bot(config, config_path=tmp_path / "bot.toml", model=ScriptedModel(), adapters=[adapter])


async def test_plugins_are_discovered_in_a_folder(make_config: MakeConfig, tmp_path: Path) -> None:
    host = load_plugins(with_dirs(make_config, "good"), tmp_path, bundled=False)
    assert [loaded.plugin.name for loaded in host.loaded] == ["greeter", "ping"]
    assert host.failures == []
    assert host.source_of("ping") == str(FOLDERS / "good" / "ping.py")
    assert [c.name for c in host.commands()] == ["add", "greet", "ping", "shutdown"]


async def test_a_package_plugin_imports_its_own_modules_and_gets_its_config(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    config = with_dirs(make_config, "good", extra='[plugins.greeter]\ngreeting = "Ahoy"\n')
    async with running(config, adapter, tmp_path):
        await adapter.say("/greet")
        await adapter.say("/greet Bob")
    assert adapter.messages_in(LOCAL) == ["Ahoy, Alice!", "Ahoy, Bob!"]


async def test_an_invalid_plugin_config_slice_stops_the_start(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = with_dirs(make_config, "good", extra="[plugins.greeter]\ngreeting = 5\n")
    with pytest.raises(StartupError, match=r"\[plugins.greeter\].*greeting"):
        load_plugins(config, tmp_path, bundled=False)


async def test_plugins_are_discovered_from_an_entry_point(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "weather_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "weather_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: weather-plugin\nVersion: 1.0\n"
    )
    (site / "weather_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[llamabot.plugins]\nweather = weather_plugin:plugin\n"
    )
    (site / "weather_plugin.py").write_text(
        textwrap.dedent(
            """
            from llamabot import CommandContext, Plugin

            plugin = Plugin("weather")

            @plugin.command("weather", usage="<city>")
            async def weather(ctx: CommandContext, city: str) -> None:
                await ctx.reply(f"sunny in {city}")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    host = load_plugins(make_config(), tmp_path, bundled=False)
    sys.modules.pop("weather_plugin", None)
    assert [(p.plugin.name, p.source) for p in host.loaded] == [
        ("weather", "entry point weather_plugin:plugin")
    ]
    command = host.command("weather")
    assert command is not None and command.parse("Oslo") == ["Oslo"]


async def test_enabled_and_disabled_filter_plugins(make_config: MakeConfig, tmp_path: Path) -> None:
    only = with_dirs(make_config, "good", extra='enabled = ["ping"]\n')
    assert [p.plugin.name for p in load_plugins(only, tmp_path, bundled=False).loaded] == ["ping"]
    without = with_dirs(make_config, "good", extra='disabled = ["ping"]\n')
    names = [p.plugin.name for p in load_plugins(without, tmp_path, bundled=False).loaded]
    assert names == ["greeter"]


async def test_bundled_plugins_load_and_a_folder_plugin_replaces_one(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    bundled = bundled_plugins_dir()
    assert bundled is not None
    host = load_plugins(make_config(), tmp_path)
    names = {p.plugin.name for p in host.loaded}
    assert {"help", "reset", "forgetme", "persona", "remind", "stats", "models"} <= names
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "help.py").write_text(
        "from llamabot import Plugin\nplugin = Plugin('myhelp')\n"
        "@plugin.command('help')\nasync def h(ctx):\n    await ctx.reply('my help')\n"
    )
    config = make_config(BASE_TOML + f'[plugins]\ndirs = ["{mine}"]\n')
    host = load_plugins(config, tmp_path)
    assert host.source_of("myhelp") == str(mine / "help.py")
    assert host.source_of("help") is None


async def test_a_broken_plugin_is_isolated_while_the_rest_serves(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    config = with_dirs(make_config, "broken", "good")
    async with running(config, adapter, tmp_path) as bot:
        failures = {f.name: f.reason for f in bot.plugins.failures}
        await adapter.say("/hello")
        await adapter.say("/boom")
        await adapter.say("/ping")
        await adapter.say("a plain question")  # the failing message hook lets it through
    assert failures == {
        "broken": "ZeroDivisionError: division by zero",
        "noplugin": f"ImportError: {FOLDERS / 'broken' / 'noplugin.py'} defines no "
        "`plugin = Plugin(...)`",
    }
    assert adapter.messages_in(LOCAL) == [
        "hello back",
        "Sorry, /boom failed. The admin log has details.",
        "pong",
        "echo: a plain question",
    ]


def test_the_plugins_command_lists_loaded_and_failed_plugins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text(f'[plugins]\ndirs = ["{FOLDERS / "broken"}"]\ndisabled = ["stats"]\n')
    assert main(["plugins", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "working      /boom, /hello" in out
    assert f"from {FOLDERS / 'broken' / 'working.py'}" in out
    assert "broken       ZeroDivisionError: division by zero" in out
    assert "help         /help" in out
    assert "stats" not in out


async def test_two_plugins_claiming_one_command_stop_the_start_naming_both(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    config = with_dirs(make_config, "dupes")
    with pytest.raises(StartupError) as caught:
        async with running(config, adapter, tmp_path):
            pass
    message = str(caught.value)
    assert "'same'" in message and "'first'" in message and "'second'" in message
    assert str(FOLDERS / "dupes" / "second.py") in message
    assert adapter.bot is None  # refused before any adapter started


async def test_admin_commands_answer_only_admins(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    async with running(with_dirs(make_config, "good"), adapter, tmp_path):
        await adapter.say("/shutdown", user="mallory")
        await adapter.say("/shutdown", user="admin")
    assert adapter.messages_in(LOCAL) == [
        "Only the bot's admins can use /shutdown.",
        "shutting down (not really)",
    ]


async def test_wrong_arguments_answer_with_the_usage_line(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    async with running(with_dirs(make_config, "good"), adapter, tmp_path):
        await adapter.say("/add 2")
        await adapter.say("/add 2 two")
        await adapter.say("/add 2 3 4")
        await adapter.say("/add 2 3")
    assert adapter.messages_in(LOCAL) == [
        "Usage: /add <a> <b> (missing b)",
        "Usage: /add <a> <b> ('two' is not a whole number)",
        "Usage: /add <a> <b> (too many arguments)",
        "5",
    ]


async def test_message_hooks_can_answer_and_reply_hooks_see_the_reply(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    model = ScriptedModel()
    config = with_dirs(make_config, "hooks")
    bot = Bot(config, config_path=tmp_path / "bot.toml", model=model, adapters=[adapter])
    async with bot:
        assert adapter.messages_in("console:log") == ["moderator started"]
        await adapter.say("my secret plan")
        await adapter.say("hi")
    assert [call.last_user for call in model.calls] == ["hi"]
    assert adapter.messages_in(LOCAL) == [
        "I won't pass that on to the model.",
        "echo: hi",
        "(the model said 8 characters)",
    ]
    assert adapter.messages_in("console:log") == ["moderator started", "moderator stopping"]


async def test_a_handler_raising_usage_error_gets_the_usage_line(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    plugin = Plugin("picky")

    @plugin.command("pick", usage="red | blue")
    async def pick(ctx: object, colour: str) -> None:
        raise UsageError(f"{colour} is neither")

    host = PluginHost()
    host.add(plugin, "test", make_config())
    bot = Bot(make_config(), model=ScriptedModel(), adapters=[adapter], plugins=host)
    async with bot:
        await asyncio.wait_for(adapter.say("/pick green"), 10)
    assert adapter.messages_in(LOCAL) == ["Usage: /pick red | blue (green is neither)"]


def test_two_plugins_with_one_name_are_refused(make_config: MakeConfig) -> None:
    host = PluginHost()
    host.add(Plugin("twin"), "a.py", make_config())
    with pytest.raises(StartupError, match=r"two plugins are named 'twin': a.py and b.py"):
        host.add(Plugin("twin"), "b.py", make_config())


def test_one_plugin_cannot_register_a_command_twice() -> None:
    plugin = Plugin("twice")

    @plugin.command("x")
    async def first(ctx: object) -> None: ...

    with pytest.raises(ValueError, match="twice"):

        @plugin.command("X")
        async def second(ctx: object) -> None: ...


def test_crontab_weekdays_count_from_sunday() -> None:
    # APScheduler 3 reads a bare 0 as Monday (its issue #286); crontab means Sunday.
    assert crontab_weekdays("0 9 * * 0") == "0 9 * * sun"
    assert crontab_weekdays("*/15 8-18 * * 1-5") == "*/15 8-18 * * mon-fri"
    assert crontab_weekdays("0 9 * * */2") == "0 9 * * */2"
    assert crontab_weekdays("0 9 * * 7,sat") == "0 9 * * sun,sat"
    with pytest.raises(ValueError):
        Plugin("bad").job(cron="every monday")


class _Collect(logging.Handler):
    """Keeps warnings and tells a waiting test (from the watchdog's thread) at once."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.arrived = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.arrived.set()


async def test_a_plugin_blocking_the_event_loop_is_named_in_a_warning(
    make_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    collect = _Collect()
    watchdog_log = logging.getLogger("llamabot.loop_lag")
    watchdog_log.addHandler(collect)
    try:
        async with running(with_dirs(make_config, "blocking"), adapter, tmp_path):
            await adapter.say("/nap")
            # The watchdog reports once the loop runs again, from its own thread.
            assert await asyncio.to_thread(collect.arrived.wait, 5)
    finally:
        watchdog_log.removeHandler(collect)
    (warning,) = collect.lines
    assert warning.startswith("plugin sleeper blocked the event loop for ")
    assert "sleeper.py" in warning and "in nap" in warning
