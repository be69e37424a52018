"""The embedded backend with the real bundled model (SmolLM2-135M-Instruct via llama.cpp)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from llamabot.app import Bot
from llamabot.config import EmbeddedSection
from llamabot.errors import StartupError
from llamabot.events import ChannelRef
from llamabot.llm.base import ChatMessage, GenerationOptions
from llamabot.llm.llamacpp import EmbeddedModel, bundled_model_path
from llamabot.plugin_host import PluginHost
from tests.conftest import BASE_TOML, MakeConfig
from tests.fakes.chat import RecordingAdapter

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")

SHORT = GenerationOptions(temperature=0.0, seed=1, num_predict=48)
QUESTION = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Name three colours."),
]


async def load(**overrides: int) -> EmbeddedModel:
    return await EmbeddedModel.load(EmbeddedSection(n_ctx=1024, **overrides))  # type: ignore[arg-type]


async def test_the_bundled_model_streams_an_answer() -> None:
    model = await load()
    try:
        deltas = [d async for d in model.stream_chat("any", QUESTION, SHORT)]
        assert len(deltas) > 3
        assert "".join(deltas).strip()
        assert model.count_tokens("hello world") >= 2
        assert await model.context_length("any") == 1024
    finally:
        await model.aclose()


async def test_the_event_loop_keeps_ticking_while_the_model_generates() -> None:
    model = await load()
    gaps: list[float] = []
    generating = True

    async def tick() -> None:
        last = time.monotonic()
        while generating:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        options = GenerationOptions(temperature=0.0, seed=1, num_predict=96)
        text = "".join([d async for d in model.stream_chat("any", QUESTION, options)])
    finally:
        generating = False
        await ticker
        await model.aclose()
    assert text.strip()
    assert len(gaps) > 10
    assert max(gaps) < 0.1, f"the loop stalled for {max(gaps) * 1000:.0f} ms"


async def test_an_abandoned_generation_frees_the_model_for_the_next() -> None:
    model = await load()
    try:
        stream = model.stream_chat("any", QUESTION, SHORT)
        first = await anext(stream)  # type: ignore[arg-type]
        assert first
        await stream.aclose()  # type: ignore[attr-defined]
        again = "".join([d async for d in model.stream_chat("any", QUESTION, SHORT)])
        assert again.strip()
    finally:
        await model.aclose()


async def test_a_missing_model_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(StartupError) as caught:
        await EmbeddedModel.load(EmbeddedSection(model_path=str(missing)))
    assert str(missing) in str(caught.value)
    assert "model_path" in str(caught.value)


async def test_two_conversations_are_answered_concurrently_and_each_in_order(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        BASE_TOML.replace("[personas.assistant]", "[personas.assistant]\nnum_predict = 24")
    )
    model = await EmbeddedModel.load(EmbeddedSection(n_ctx=1024, instances=2))
    adapter = RecordingAdapter()
    async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()) as bot:
        futures = [
            adapter.say(f"{name} question {i}", chat=name) for i in range(2) for name in ("a", "b")
        ]
        await asyncio.gather(*futures)
        for name in ("a", "b"):
            channel = adapter_channel(name)
            conversation = await bot.store.conversation_id(channel)
            turns = await bot.store.window(conversation, 10, 100_000)
            assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
            assert [t.content for t in turns if t.role == "user"] == [
                f"{name} question 0",
                f"{name} question 1",
            ]
            assert len(adapter.messages_in(channel.key)) == 2


def adapter_channel(name: str) -> ChannelRef:

    return ChannelRef("console", name, is_private=True)
