"""bot.toml validation and persona resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llamabot.config import ConfigError, load_config, parse_config, resolve_storage_url
from llamabot.events import ChannelRef

REPO = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("bot.toml"))
    return caught.value.problems


def test_the_shipped_bot_toml_is_valid() -> None:
    config = load_config(REPO / "bot.toml")
    assert config.bot.default_persona in config.personas


def test_syntax_error_names_line_and_column() -> None:
    [problem] = problems('[bot]\nname = "Llama"\nadmins = ["console:a"\n[llm]\n')
    assert problem.startswith("bot.toml:3:10: missing `]`")


def test_unknown_key_names_line_and_suggests_the_close_one() -> None:
    text = '[bot]\nname = "x"\n\n[llm]\nbackend = "auto"\nmax_concurency = 2\n'
    [problem] = problems(text)
    assert problem.startswith("bot.toml:6:")
    assert "max_concurency" in problem and "did you mean 'max_concurrency'" in problem


def test_unknown_key_in_a_binding_points_at_that_binding() -> None:
    text = (
        '[personas.a]\nprompt = "p"\n[bot]\ndefault_persona = "a"\n'
        '[[bindings]]\nplatform = "console"\npersona = "a"\n'
        '[[bindings]]\nplatform = "console"\npersonna = "a"\n'
    )
    found = problems(text)
    assert any(p.startswith("bot.toml:10:") and "did you mean 'persona'" in p for p in found)


def test_binding_naming_a_missing_persona_is_an_error() -> None:
    text = '[[bindings]]\nplatform = "discord"\nchannel = "1"\npersona = "asistant"\n'
    [problem] = problems(text)
    assert "'asistant'" in problem and "did you mean 'assistant'" in problem


def test_missing_default_persona_is_an_error() -> None:
    [problem] = problems('[bot]\ndefault_persona = "ghost"\n')
    assert "ghost" in problem and "[personas.ghost]" in problem


def test_every_error_is_reported_at_once() -> None:
    found = problems('[bot]\nnme = "x"\n[llm]\nbackend = "gpu"\nmax_concurrency = 0\n')
    assert len(found) == 3


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.toml")
    assert "--config" in caught.value.problems[0]


def test_numeric_ids_are_accepted_as_text() -> None:
    config = parse_config(
        '[[bindings]]\nplatform = "discord"\nchannel = 123456789012345678\npersona = "assistant"\n',
        Path("bot.toml"),
    )
    assert config.bindings[0].channel == "123456789012345678"


RESOLUTION = """
[personas.assistant]
prompt = "default"
[personas.dm]
prompt = "dm"
[personas.guild]
prompt = "guild"
[personas.channel]
prompt = "channel"
[personas.thread]
prompt = "thread"
[personas.topic]
prompt = "topic"

[[bindings]]
platform = "discord"
channel = "*"
persona = "dm"
[[bindings]]
platform = "discord"
guild = "G"
persona = "guild"
[[bindings]]
platform = "discord"
channel = "C"
persona = "channel"
respond = "always"
[[bindings]]
platform = "discord"
channel = "T"
persona = "thread"
[[bindings]]
platform = "telegram"
channel = "-100:7"
persona = "topic"
"""


@pytest.mark.parametrize(
    ("channel", "persona", "respond"),
    [
        (ChannelRef("discord", "C", thread_id="T", guild_id="G"), "thread", "mention"),
        (ChannelRef("discord", "C", thread_id="other", guild_id="G"), "channel", "always"),
        (ChannelRef("discord", "C", guild_id="G"), "channel", "always"),
        (ChannelRef("discord", "X", guild_id="G"), "guild", "mention"),
        (ChannelRef("discord", "D", is_private=True), "dm", "mention"),
        (ChannelRef("discord", "X", guild_id="other"), "assistant", "mention"),
        (ChannelRef("telegram", "D", is_private=True), "assistant", "always"),
        (ChannelRef("telegram", "-100", thread_id="7"), "topic", "mention"),
        (ChannelRef("telegram", "-100", thread_id="8"), "assistant", "mention"),
    ],
)
def test_persona_resolution_order(channel: ChannelRef, persona: str, respond: str) -> None:
    resolved = parse_config(RESOLUTION, Path("bot.toml")).persona_for(channel)
    assert (resolved.name, resolved.respond) == (persona, respond)


def test_relative_sqlite_path_is_relative_to_bot_toml(tmp_path: Path) -> None:
    url = resolve_storage_url("sqlite+aiosqlite:///data/bot.db", tmp_path / "bot.toml")
    assert url == f"sqlite+aiosqlite:///{tmp_path / 'data' / 'bot.db'}"
    assert resolve_storage_url("sqlite+aiosqlite:////abs.db", tmp_path / "x") == (
        "sqlite+aiosqlite:////abs.db"
    )


def run_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamabot.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_prints_a_summary_and_exits_0() -> None:
    result = run_check(REPO / "bot.toml")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and len(result.stdout.strip().splitlines()) == 1


def test_check_prints_every_error_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[bot]\nnme = "x"\n[[bindings]]\nplatform = "console"\npersona = "x"\n')
    result = run_check(path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "nme" in result.stderr and "'x'" in result.stderr
