"""Per-persona LoRA adapters on the embedded backend: one base model loaded, each
persona's reply with its own adapter (a real, tiny adapter on the real bundled model)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from llamabot.app import Bot
from llamabot.config import EmbeddedSection, parse_config
from llamabot.errors import StartupError
from llamabot.llm.base import ChatMessage, Delta, GenerationOptions
from llamabot.llm.errors import ModelError, ReplyCut
from llamabot.llm.llamacpp import EmbeddedModel, bundled_model_path
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform
from tests.fakes.lora import make_lora

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")

GREEDY = GenerationOptions(temperature=0.0, top_k=1, seed=1, num_predict=24)
QUESTION = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Name three colours."),
]


async def answer(model: EmbeddedModel, options: GenerationOptions) -> str:
    parts: list[str] = []
    stream: AsyncIterator[Delta] = model.stream_chat("any", QUESTION, options)
    with contextlib.suppress(ReplyCut):
        async for delta in stream:
            if isinstance(delta, str):
                parts.append(delta)
    return "".join(parts)


async def test_each_persona_answers_with_its_own_adapter_on_one_base_model(
    tmp_path: Path,
) -> None:
    first = make_lora(tmp_path / "first.gguf", seed=1)
    second = make_lora(tmp_path / "second.gguf", seed=2)
    model = await EmbeddedModel.load(
        EmbeddedSection(n_ctx=512),
        config_dir=tmp_path,
        adapters=["first.gguf", str(second)],
    )
    try:
        assert len(model.worker_pids()) == 1  # one base model, both adapters beside it
        base = await answer(model, GREEDY)
        off = await answer(model, replace(GREEDY, adapter="first.gguf", adapter_scale=0.0))
        one = await answer(model, replace(GREEDY, adapter="first.gguf"))
        two = await answer(model, replace(GREEDY, adapter=str(second)))
        again = await answer(model, GREEDY)  # back to none: the base model's answer
    finally:
        await model.aclose()
    assert base.strip()
    assert off == base  # scale 0: token for token the base model
    assert one != base and two != base and one != two
    assert again == base
    assert first.exists()


async def test_an_adapter_for_another_model_is_a_start_up_error_naming_both(
    tmp_path: Path,
) -> None:
    wrong = make_lora(tmp_path / "wrong.gguf", seed=3, width=512, blocks=2)
    with pytest.raises(StartupError) as caught:
        await EmbeddedModel.load(EmbeddedSection(n_ctx=512), adapters=[str(wrong)])
    message = str(caught.value)
    assert str(wrong) in message and "SmolLM2" in message and "does not fit" in message


async def test_a_missing_adapter_file_is_a_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="does not exist"):
        await EmbeddedModel.load(
            EmbeddedSection(n_ctx=512), config_dir=tmp_path, adapters=["nope.gguf"]
        )


async def test_an_adapter_named_after_start_is_a_clear_model_error(tmp_path: Path) -> None:
    model = await EmbeddedModel.load(EmbeddedSection(n_ctx=512))
    try:
        with pytest.raises(ModelError, match="restart it to load the adapter"):
            await answer(model, replace(GREEDY, adapter="later.gguf"))
    finally:
        await model.aclose()


async def test_two_personas_with_their_adapters_answer_differently_through_the_bot(
    tmp_path: Path,
) -> None:
    make_lora(tmp_path / "poet.gguf", seed=1)
    make_lora(tmp_path / "clerk.gguf", seed=2)
    personas = "".join(
        f'[personas.{name}]\nprompt = "You are a helpful assistant."\ntemperature = 0.0\n'
        f"top_k = 1\nseed = 1\nnum_predict = 24\n{adapter}\n"
        f'[[bindings]]\nplatform = "console"\nchannel = "{name}"\npersona = "{name}"\n'
        'respond = "always"\n'
        for name, adapter in (
            ("plain", ""),
            ("poet", 'adapter = "poet.gguf"'),
            ("clerk", 'adapter = "clerk.gguf"'),
        )
    )
    text = (
        '[bot]\ndefault_persona = "plain"\n'
        '[llm]\nbackend = "embedded"\n[llm.embedded]\nn_ctx = 512\n'
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"\n' + personas
    )
    adapter = FakePlatform()
    config = parse_config(text, tmp_path / "bot.toml")
    async with Bot(
        config, config_path=tmp_path / "bot.toml", adapters=[adapter], plugins=PluginHost()
    ) as bot:
        assert isinstance(bot.model, EmbeddedModel) and len(bot.model.worker_pids()) == 1
        for name in ("plain", "poet", "clerk"):
            await adapter.say("Name three colours.", chat=name)
    plain, poet, clerk = (
        adapter.messages_in(f"console:{n}")[0] for n in ("plain", "poet", "clerk")
    )
    assert len({plain, poet, clerk}) == 3
