"""TOML syntax errors read like every other config error: file:line:column: what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabot.config import ConfigError, parse_config


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, Path("bot.toml"))
    [only] = caught.value.problems
    return only


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ('[bot]\nname = "Llama\nadmins = []\n', "bot.toml:2:8: ", "unclosed string"),
        ('[personas.a]\nprompt = """Be kind.\n', "bot.toml:2:10: ", "unclosed string"),
        ("[bot]\nname = 'Llama\n", "bot.toml:2:8: ", "unclosed string"),
        ('[bot\nname = "Llama"\n', "bot.toml:1:5: ", "missing `]`"),
        ('[bot]\nadmins = ["console:a"\nname = "x"\n', "bot.toml:2:10: ", "missing `]`"),
        ('[bot]\nadmins = [\n[llm]\nbackend = "auto"\n', "bot.toml:2:10: ", "missing `]`"),
        ("[[bindings]\nchannel = 1\n", "bot.toml:1:11: ", "missing `]]`"),
        ('[bot]\nname = "a"\nname = "b"\n', "bot.toml:3:", "duplicate key 'name'"),
        ("[bot]\n[llm]\n[bot]\n", "bot.toml:3:", "duplicate table [bot]"),
        ("[bot]\nname = Llama\n", "bot.toml:2:8: ", "text needs quotes"),
    ],
)
def test_common_mistakes_name_the_place_and_the_fix(text: str, where: str, what: str) -> None:
    found = problem(text)
    assert found.startswith(where), found
    assert what in found


def test_other_syntax_errors_keep_tomllibs_words_in_the_same_form() -> None:
    found = problem("[bot]\nname = 1 2\n")
    assert found.startswith("bot.toml:2:10: ")
    assert "expected newline" in found


def test_an_unclosed_string_is_shown_where_it_opens() -> None:
    found = problem('[bot]\nname = "it\'s \\"quoted\\" text\nadmins = []\n')
    assert found.startswith("bot.toml:2:8: unclosed string"), found
