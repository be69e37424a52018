"""The embedded backend with the real bundled model (SmolLM2-135M-Instruct via llama.cpp).

The model runs in worker processes; these tests kill them as a crash would, and check
that the bot notices, tells the person, stores the reply as failed and carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest

from llamabot.app import Bot
from llamabot.config import EmbeddedSection
from llamabot.errors import StartupError
from llamabot.events import ChannelRef
from llamabot.llm.base import ChatMessage, GenerationOptions
from llamabot.llm.errors import GenerationTimeout, ModelCrashed, ReplyCut
from llamabot.llm.llamacpp import MAX_CRASHES_IN_ROW, EmbeddedModel, bundled_model_path
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform
from tests.conftest import BASE_TOML, MakeConfig

pytestmark = pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")

SHORT = GenerationOptions(temperature=0.0, seed=1, num_predict=48)
QUESTION = [
    ChatMessage("system", "You are a helpful assistant."),
    ChatMessage("user", "Name three colours."),
]
LOCAL = ChannelRef("console", "local", is_private=True)
# Long enough that a kill at the first token always lands mid-reply.
LONG_REPLIES = BASE_TOML.replace("[personas.assistant]", "[personas.assistant]\nnum_predict = 400")


async def load(**overrides: object) -> EmbeddedModel:
    return await EmbeddedModel.load(EmbeddedSection(n_ctx=1024, **overrides))  # type: ignore[arg-type]


async def collect(stream: AsyncIterator[str]) -> str:
    """The whole answer, whether it ended by itself or at the token limit."""
    parts: list[str] = []
    with contextlib.suppress(ReplyCut):
        async for delta in stream:
            parts.append(delta)
    return "".join(parts)


@contextlib.asynccontextmanager
async def loop_watch() -> AsyncIterator[list[float]]:
    """Records the gaps between event-loop ticks while the body runs."""
    gaps: list[float] = []
    running = True

    async def tick() -> None:
        last = time.monotonic()
        while running:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        yield gaps
    finally:
        running = False
        await ticker


def stored_replies(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT status, content FROM messages WHERE role = 'assistant' ORDER BY id"
        ).fetchall()
    return [(status, content) for status, content in rows]


async def kill_at_first_text(adapter: FakePlatform, model: EmbeddedModel) -> int:
    """Wait until the reply starts to show, then SIGKILL the worker writing it."""
    adapter.changed.clear()
    await adapter.changed.wait()
    [pid] = model.worker_pids()
    os.kill(pid, signal.SIGKILL)
    return pid


async def say_and_kill(
    adapter: FakePlatform, model: EmbeddedModel, text: str
) -> tuple[int, Awaitable[None]]:
    handled = adapter.say(text)
    pid = await kill_at_first_text(adapter, model)
    return pid, handled


async def test_the_bundled_model_streams_an_answer() -> None:
    model = await load()
    try:
        deltas = [d async for d in model.stream_chat("any", QUESTION, GenerationOptions(seed=1))]
        assert len(deltas) > 3
        assert "".join(deltas).strip()
        assert model.count_tokens("hello world") >= 2
        assert await model.context_length("any") == 1024
    finally:
        await model.aclose()


async def test_the_model_runs_outside_the_bots_process() -> None:
    model = await load(instances=2)
    try:
        pids = model.worker_pids()
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        await model.aclose()
    for pid in pids:  # closing ends the workers
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_the_event_loop_keeps_ticking_while_the_model_generates() -> None:
    model = await load()
    try:
        async with loop_watch() as gaps:
            options = GenerationOptions(temperature=0.0, seed=1, num_predict=96)
            text = await collect(model.stream_chat("any", QUESTION, options))
    finally:
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
        again = await collect(model.stream_chat("any", QUESTION, SHORT))
        assert again.strip()
    finally:
        await model.aclose()


async def test_an_answer_cut_at_max_tokens_says_so() -> None:
    model = await load()
    try:
        stream = model.stream_chat("any", QUESTION, GenerationOptions(seed=1, num_predict=3))
        with pytest.raises(ReplyCut):
            async for _ in stream:
                pass
    finally:
        await model.aclose()


async def test_a_hung_generation_is_killed_at_the_timeout_and_replaced() -> None:
    model = await EmbeddedModel.load(EmbeddedSection(n_ctx=1024), first_token_timeout=0.001)
    try:
        [pid] = model.worker_pids()
        with pytest.raises(GenerationTimeout):
            await collect(model.stream_chat("any", QUESTION, SHORT))
        assert model.worker_pids() == []
        model.set_timeouts(60.0, 60.0)  # as a hot reload of bot.toml would
        assert (await collect(model.stream_chat("any", QUESTION, SHORT))).strip()
        assert model.worker_pids() not in ([], [pid])
    finally:
        await model.aclose()


async def test_a_missing_model_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(StartupError) as caught:
        await EmbeddedModel.load(EmbeddedSection(model_path=str(missing)))
    assert str(missing) in str(caught.value)
    assert "model_path" in str(caught.value)


async def test_a_file_that_is_not_a_gguf_is_a_startup_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model" * 100)
    with pytest.raises(StartupError) as caught:
        await EmbeddedModel.load(EmbeddedSection(model_path=str(bogus)))
    assert str(bogus) in str(caught.value)


async def test_the_cpu_and_the_weight_buffer_choice_are_reported() -> None:
    model = await load(weight_buffers="plain")
    try:
        health = await model.health()
        assert model.weight_buffers.extra is False
        checks = {name: (ok, detail) for name, ok, detail in health.checks}
        assert checks["cpu"][0] and "plain" in checks["cpu"][1]
        assert checks["embedded"][0]
    finally:
        await model.aclose()


async def test_a_worker_killed_mid_reply_costs_only_that_reply(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    model = await load()
    adapter = FakePlatform()
    async with (
        Bot(make_config(LONG_REPLIES), model=model, adapters=[adapter], plugins=PluginHost()),
        loop_watch() as gaps,
    ):
        pid, handled = await say_and_kill(adapter, model, "Tell me a long story.")
        await handled
        [broken] = adapter.messages_in(LOCAL.key)
        assert ModelCrashed.user_message in broken
        await adapter.say("Name three colours.")
        assert model.worker_pids() not in ([], [pid])
    broken, answered = adapter.messages_in(LOCAL.key)
    assert answered.strip() and ModelCrashed.user_message not in answered
    statuses = [status for status, _ in stored_replies(tmp_path / "bot.db")]
    assert statuses[0] == "failed" and statuses[1] in ("ok", "cut")
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps) * 1000:.0f} ms"


async def test_three_crashes_in_a_row_stop_the_restarts_and_say_what_to_change(
    make_config: MakeConfig,
) -> None:
    model = await load()
    adapter = FakePlatform()
    async with Bot(
        make_config(LONG_REPLIES), model=model, adapters=[adapter], plugins=PluginHost()
    ):
        for _ in range(MAX_CRASHES_IN_ROW):
            _, handled = await say_and_kill(adapter, model, "Tell me a long story.")
            await handled
        await adapter.say("Are you there?")
        assert model.worker_pids() == []  # nothing was restarted for the last message
        health = await model.health()
    notices = adapter.messages_in(LOCAL.key)
    assert len(notices) == MAX_CRASHES_IN_ROW + 1
    for notice in notices[: MAX_CRASHES_IN_ROW - 1]:
        assert ModelCrashed.user_message in notice
    for notice in notices[MAX_CRASHES_IN_ROW - 1 :]:
        assert 'weight_buffers = "plain"' in notice and "SIGKILL" in notice
    assert not health.ok and 'weight_buffers = "plain"' in health.detail


async def test_a_completed_reply_resets_the_crash_count(make_config: MakeConfig) -> None:
    model = await load()
    adapter = FakePlatform()
    config = make_config(LONG_REPLIES.replace("num_predict = 400", "num_predict = 400\nseed = 1"))
    async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()):
        for _ in range(MAX_CRASHES_IN_ROW - 1):
            _, handled = await say_and_kill(adapter, model, "Tell me a long story.")
            await handled
        # A reply that completes (here cut at its token limit, which is no crash) ...
        short = GenerationOptions(seed=1, num_predict=8)
        assert (await collect(model.stream_chat("any", QUESTION, short))).strip()
        # ... so the next crash is the first of a new run, and the worker is restarted.
        _, handled = await say_and_kill(adapter, model, "Tell me a long story.")
        await handled
    assert ModelCrashed.user_message in adapter.messages_in(LOCAL.key)[-1]


async def test_two_conversations_are_answered_concurrently_and_each_in_order(
    make_config: MakeConfig,
) -> None:
    config = make_config(
        BASE_TOML.replace("[personas.assistant]", "[personas.assistant]\nnum_predict = 24")
    )
    model = await EmbeddedModel.load(EmbeddedSection(n_ctx=1024, instances=2))
    adapter = FakePlatform()
    async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()) as bot:
        futures = [
            adapter.say(f"{name} question {i}", chat=name) for i in range(2) for name in ("a", "b")
        ]
        await asyncio.gather(*futures)
        for name in ("a", "b"):
            channel = ChannelRef("console", name, is_private=True)
            conversation = await bot.store.conversation_id(channel)
            turns = await bot.store.window(conversation, 10, 100_000)
            # Replies cut at 24 tokens are stored (as "cut") but never enter a window.
            assert [t.content for t in turns if t.role == "user"] == [
                f"{name} question 0",
                f"{name} question 1",
            ]
            assert len(adapter.messages_in(channel.key)) == 2


async def test_a_cut_reply_is_marked_stored_as_cut_and_kept_out_of_the_window(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    config = make_config(
        BASE_TOML.replace("[personas.assistant]", "[personas.assistant]\nnum_predict = 6")
    )
    model = await load()
    adapter = FakePlatform()
    async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()) as bot:
        await adapter.say("Write a long poem about the sea.")
        conversation = await bot.store.conversation_id(LOCAL)
        turns = await bot.store.window(conversation, 10, 100_000)
    [shown] = adapter.messages_in(LOCAL.key)
    assert shown.endswith("[cut: max tokens]")
    [(status, content)] = stored_replies(tmp_path / "bot.db")
    assert status == "cut" and "[cut:" not in content
    assert [t.role for t in turns] == ["user"]


async def test_the_stored_reply_names_the_model_that_answered(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    model = await load()
    adapter = FakePlatform()
    async with Bot(make_config(), model=model, adapters=[adapter], plugins=PluginHost()):
        await adapter.say("Hi!")
    with contextlib.closing(sqlite3.connect(tmp_path / "bot.db")) as conn:
        [(name,)] = conn.execute("SELECT model FROM messages WHERE role = 'assistant'").fetchall()
    assert name == "SmolLM2-135M-Instruct.Q4_1"
