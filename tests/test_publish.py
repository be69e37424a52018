"""``llamabot publish``: a persona with its LoRA adapter as an Ollama model, through the
real ``ollama`` client against the fake server."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from llamabot.cli import main
from tests.fakes.lora import make_lora
from tests.fakes.ollama import FakeOllama


def bot_toml(tmp_path: Path, url: str, *, temperature: float = 0.3) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(
        f"""# my bot
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"

[personas.assistant]
prompt = "You are helpful."

[personas.poet]
prompt = "You answer in verse."   # keep this comment
model = "llama3.2"
temperature = {temperature}
adapter = "poet.gguf"
"""
    )
    return path


async def run(*argv: str) -> int:
    # The command runs its own event loop, as from a shell.
    return await asyncio.to_thread(main, list(argv))


async def test_publish_uploads_the_adapter_and_creates_the_model_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    adapter = make_lora(tmp_path / "poet.gguf", seed=1, blocks=2)
    digest = "sha256:" + hashlib.sha256(adapter.read_bytes()).hexdigest()
    async with FakeOllama() as fake:
        path = bot_toml(tmp_path, fake.url)
        assert await run("publish", "poet", "--config", str(path)) == 0
        [created] = fake.create_requests
        assert created["model"] == "llamabot-poet"
        assert created["from"] == "llama3.2"
        assert created["adapters"] == {"poet.gguf": digest}
        assert created["system"] == "You answer in verse."
        assert created["parameters"] == {"temperature": 0.3}
        assert fake.blobs[digest] == adapter.read_bytes()
        out = capsys.readouterr().out
        assert "ollama run llamabot-poet" in out and "--bind" in out

        assert await run("publish", "poet", "--config", str(path)) == 0
        assert len(fake.create_requests) == 1  # unchanged: nothing sent
        assert "up to date" in capsys.readouterr().out

        bot_toml(tmp_path, fake.url, temperature=0.9)
        assert await run("publish", "poet", "--config", str(path), "--bind") == 0
        assert len(fake.create_requests) == 2
        assert fake.create_requests[1]["parameters"] == {"temperature": 0.9}
    text = path.read_text()
    assert 'model = "llamabot-poet"' in text and "# keep this comment" in text


async def test_publish_says_what_to_do_when_the_base_model_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_lora(tmp_path / "poet.gguf", seed=1, blocks=2)
    async with FakeOllama(["mistral"]) as fake:
        path = bot_toml(tmp_path, fake.url)
        assert await run("publish", "poet", "--config", str(path)) == 1
    assert "run `ollama pull llama3.2` there first" in capsys.readouterr().err


async def test_publish_says_when_ollama_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_lora(tmp_path / "poet.gguf", seed=1, blocks=2)
    path = bot_toml(tmp_path, "http://127.0.0.1:9")
    assert await run("publish", "poet", "--config", str(path)) == 1
    assert "cannot reach Ollama at http://127.0.0.1:9" in capsys.readouterr().err
