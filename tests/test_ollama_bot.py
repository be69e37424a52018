"""The bot on Ollama end to end: what the person sees when the server misbehaves."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamabot.app import Bot
from llamabot.config import Config, parse_config
from llamabot.doctor import run_checks
from llamabot.llm.llamacpp import EmbeddedModel, bundled_model_path
from llamabot.llm.ollama import OllamaModel
from llamabot.llm.select import select_model
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform
from tests.fakes.ollama import FakeModel, FakeOllama

KEY = "console:local"


def toml(url: str, tmp_path: Path, *, model: str = "llama3.2", backend: str = "ollama") -> str:
    return f"""
[llm]
backend = "{backend}"
[llm.ollama]
host = "{url}"
retry_after_s = 0.05
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"
[personas.assistant]
prompt = "OLLAMA-PERSONA"
model = "{model}"
[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
"""


def config_for(url: str, tmp_path: Path, **kwargs: str) -> Config:
    return parse_config(toml(url, tmp_path, **kwargs), tmp_path / "bot.toml")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


def running(config: Config, adapter: FakePlatform) -> Bot:
    return Bot(config, adapters=[adapter], plugins=PluginHost())


async def test_answers_with_the_persona_and_an_explicit_context_length(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.reply = "Hi from Ollama."
    async with running(config_for(fake.url, tmp_path), adapter) as bot:
        assert isinstance(bot.model, OllamaModel)
        await adapter.say("hello")
    [request] = fake.chat_requests
    assert request["messages"][0] == {"role": "system", "content": "OLLAMA-PERSONA"}
    assert request["options"]["num_ctx"] == 8192  # 131,072 capped by [llm.ollama] max_num_ctx
    assert adapter.messages_in(KEY) == ["Hi from Ollama."]


async def test_a_model_not_pulled_is_one_short_line_and_a_start_up_warning(
    fake: FakeOllama, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = FakePlatform()
    caplog.set_level(logging.WARNING)
    async with running(config_for(fake.url, tmp_path, model="mistral"), adapter):
        await adapter.say("hello")
    assert "run: ollama pull mistral" in caplog.text
    assert adapter.messages_in(KEY) == [
        "The model mistral isn't installed on this bot's machine; "
        "an admin can run `ollama pull mistral`."
    ]


async def test_server_down_gives_a_notice_and_the_bot_recovers_without_restart(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    async with running(config_for(fake.url, tmp_path), adapter):
        await fake.stop()
        await adapter.say("anyone?")
        [notice] = adapter.messages_in(KEY)
        assert "unavailable" in notice.lower()
        await fake.start()  # same port
        fake.reply = "Back again."
        await fake.wait_for(lambda: fake.running)
        await adapter.say("now?")
    assert adapter.messages_in(KEY)[-1] == "Back again."


async def test_an_error_mid_stream_keeps_the_text_and_marks_the_reply(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.reply = "one two three four five six"
    fake.error_after = 3
    async with running(config_for(fake.url, tmp_path), adapter) as bot:
        await adapter.say("count")
        [shown] = adapter.messages_in(KEY)
        assert shown.startswith("one two three ") and "[interrupted:" in shown
        fake.error_after = None
        await adapter.say("again")
    turns = [(m["role"], m["content"]) for m in fake.chat_requests[-1]["messages"][1:]]
    # The broken answer is not fed back, and the two questions arrive as one user turn.
    assert turns == [("user", "count\n\nagain")]
    assert bot.stopped.is_set()


async def test_auto_uses_ollama_when_it_answers(fake: FakeOllama, tmp_path: Path) -> None:
    config = config_for(fake.url, tmp_path, backend="auto")
    model = await select_model(config.llm)
    assert isinstance(model, OllamaModel)
    await model.aclose()


@pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")
async def test_auto_falls_back_to_the_embedded_model(
    fake: FakeOllama, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = fake.url
    await fake.stop()
    caplog.set_level(logging.INFO, logger="llamabot.llm.select")
    model = await select_model(config_for(url, tmp_path, backend="auto").llm)
    assert isinstance(model, EmbeddedModel)
    assert "no Ollama answered" in caplog.text
    await model.aclose()


async def test_backend_ollama_never_falls_back(fake: FakeOllama, tmp_path: Path) -> None:
    url = fake.url
    await fake.stop()
    model = await select_model(config_for(url, tmp_path).llm)
    assert isinstance(model, OllamaModel)
    await model.aclose()


async def test_doctor_says_what_to_do_about_each_failure(fake: FakeOllama, tmp_path: Path) -> None:
    path = tmp_path / "bot.toml"
    path.write_text(
        toml(fake.url, tmp_path, model="mistral")
        + '[telegram]\nenabled = true\ntoken_env = "NOPE_TOKEN"\n'
    )
    lines = {check.name: check for check in await run_checks(path)}
    assert lines["config"].ok and lines["database"].ok
    assert lines[f"ollama {fake.url}"].ok
    assert not lines["persona assistant"].ok
    assert "ollama pull mistral" in lines["persona assistant"].detail
    assert not lines["telegram token"].ok and "NOPE_TOKEN" in lines["telegram token"].detail


async def test_doctor_says_which_personas_tools_cannot_be_called(tmp_path: Path) -> None:
    models = [FakeModel("llama3.2"), FakeModel("tiny", capabilities=("completion",))]
    async with FakeOllama(models) as fake:
        path = tmp_path / "bot.toml"
        path.write_text(
            toml(fake.url, tmp_path).replace(
                'prompt = "OLLAMA-PERSONA"', 'prompt = "P"\ntools = ["time"]'
            )
            + '[personas.small]\nprompt = "S"\nmodel = "tiny"\ntools = ["time"]\n'
            + '[personas.typo]\nprompt = "T"\nmodel = "llama3.2"\ntools = ["tyme"]\n'
        )
        lines = {check.name: check for check in await run_checks(path)}
    assert lines["persona assistant tools"].ok and lines["persona assistant tools"].detail == "time"
    small = lines["persona small tools"]
    assert not small.ok and "cannot call tools" in small.detail
    typo = lines["persona typo tools"]
    assert not typo.ok and "no loaded plugin offers tyme" in typo.detail


async def test_a_persona_naming_an_unknown_tool_is_logged_at_start(
    fake: FakeOllama, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = toml(fake.url, tmp_path).replace(
        'prompt = "OLLAMA-PERSONA"', 'prompt = "P"\ntools = ["tyme"]'
    )
    caplog.set_level(logging.WARNING)
    async with running(parse_config(text, tmp_path / "bot.toml"), FakePlatform()):
        pass
    assert "persona assistant lists the tool tyme, which no loaded plugin offers" in caplog.text
