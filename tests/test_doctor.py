"""``llamabot doctor``: every check generates for real and says what to do when it fails."""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamabot.doctor import Check, run_checks
from llamabot.llm.llamacpp import bundled_model_path
from tests.fakes.ollama import FakeOllama


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"\n' + body)
    return path


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


OLLAMA = """
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[personas.assistant]
prompt = "You are terse."
model = "llama3.2"
"""


async def test_a_server_that_lists_the_model_but_cannot_answer_fails_the_doctor(
    fake: FakeOllama, tmp_path: Path
) -> None:
    fake.error_after = 0
    fake.error_message = "llama runner process has terminated: signal: segmentation fault"
    checks = by_name(await run_checks(write(tmp_path, OLLAMA.format(url=fake.url))))
    assert checks["persona assistant"].ok  # the model is there ...
    assert not checks["generation"].ok  # ... but it cannot answer
    assert "segmentation fault" in checks["generation"].detail


async def test_a_server_that_answers_passes(fake: FakeOllama, tmp_path: Path) -> None:
    checks = by_name(await run_checks(write(tmp_path, OLLAMA.format(url=fake.url))))
    assert checks["generation"].ok and "llama3.2" in checks["generation"].detail
    assert fake.chat_requests, "the doctor generated through the server"


async def test_the_admins_are_listed_or_how_to_become_one(tmp_path: Path) -> None:
    body = '[llm]\nbackend = "ollama"\n[llm.ollama]\nhost = "http://127.0.0.1:9"\n'
    nobody = by_name(await run_checks(write(tmp_path, body)))["admins"]
    assert f'"console:{getpass.getuser()}"' in nobody.detail and "[bot] admins" in nobody.detail
    listed = await run_checks(write(tmp_path, '[bot]\nadmins = ["telegram:42"]\n' + body))
    assert by_name(listed)["admins"].detail == "telegram:42"


@pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")
async def test_the_embedded_backend_shows_the_cpu_the_choice_and_generates(tmp_path: Path) -> None:
    body = '[llm]\nbackend = "embedded"\n[llm.embedded]\nn_ctx = 512\nweight_buffers = "plain"\n'
    checks = by_name(await run_checks(write(tmp_path, body)))
    assert checks["cpu"].ok and "llama.cpp sees" in checks["cpu"].detail
    assert 'weight_buffers = "plain"' in checks["cpu"].detail
    assert checks["generation"].ok
    # The persona asks for llama3.2; the doctor names the model that really answers.
    assert "SmolLM2" in checks["generation"].detail
    assert "answered by SmolLM2" in checks["persona assistant"].detail
