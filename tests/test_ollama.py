"""The Ollama backend against a loopback Ollama server, through the real ``ollama`` client."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest

from llamabot.config import OllamaSection
from llamabot.llm import (
    ChatMessage,
    GenerationOptions,
    GenerationTimeout,
    ModelError,
    ModelNotFound,
    ModelUnavailable,
)
from llamabot.llm.ollama import OllamaModel, ollama_answers
from tests.fakes.ollama import FakeModel, FakeOllama

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

HOSTS_LOG = "llamabot.llm.ollama_hosts"
CHAT = [
    ChatMessage("system", "You are Llama, a terse assistant."),
    ChatMessage("user", "Ada: hello there"),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


@pytest.fixture
async def fake_b() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


def backend(
    *servers: FakeOllama,
    retry_after_s: float = 15.0,
    first_token_timeout: float = 10.0,
    idle_timeout: float = 10.0,
    keep_alive: str = "5m",
) -> OllamaModel:
    urls = [server.url for server in servers]
    section = (
        OllamaSection(host=urls[0], keep_alive=keep_alive, retry_after_s=retry_after_s)
        if len(urls) == 1
        else OllamaSection(hosts=urls, keep_alive=keep_alive, retry_after_s=retry_after_s)
    )
    return OllamaModel(section, first_token_timeout=first_token_timeout, idle_timeout=idle_timeout)


async def drain(
    model: OllamaModel,
    name: str = "llama3.2",
    options: GenerationOptions | None = None,
) -> tuple[list[str], ModelError | None]:
    """The deltas streamed, and the ModelError that ended the stream (None if it finished)."""
    deltas: list[str] = []
    try:
        async with asyncio.timeout(10):
            async for delta in model.stream_chat(name, CHAT, options or GenerationOptions()):
                deltas.append(delta)
    except ModelError as exc:
        return deltas, exc
    return deltas, None


async def drain_once(
    *servers: FakeOllama, **settings: float
) -> tuple[list[str], ModelError | None]:
    """One reply from a fresh backend on ``servers``, then the backend is closed."""
    model = backend(*servers, **settings)  # type: ignore[arg-type]
    try:
        return await drain(model)
    finally:
        await model.aclose()


# streaming and options ---------------------------------------------------------------


async def test_streams_the_reply_with_persona_options_and_explicit_num_ctx(
    fake: FakeOllama,
) -> None:
    model = backend(fake)
    options = GenerationOptions(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        repeat_penalty=1.1,
        num_predict=256,
        seed=7,
        stop=("User:",),
        keep_alive="10m",
    )
    try:
        deltas, error = await drain(model, options=options)
    finally:
        await model.aclose()

    assert error is None
    assert len(deltas) > 5
    assert "".join(deltas) == fake.reply
    [body] = fake.chat_requests
    assert body["model"] == "llama3.2"
    assert body["stream"] is True
    assert body["messages"] == [
        {"role": "system", "content": "You are Llama, a terse assistant."},
        {"role": "user", "content": "Ada: hello there"},
    ]
    assert body["options"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "repeat_penalty": 1.1,
        "num_predict": 256,
        "seed": 7,
        "stop": ["User:"],
        "num_ctx": 8_192,  # the model's 131,072 from /api/show, capped by max_num_ctx
    }
    assert body["keep_alive"] == "10m"


async def test_persona_num_ctx_wins_and_keep_alive_falls_back_to_the_section(
    fake: FakeOllama,
) -> None:
    model = backend(fake, keep_alive="7m")
    try:
        deltas, error = await drain(model, options=GenerationOptions(num_ctx=2048))
    finally:
        await model.aclose()

    assert error is None
    assert "".join(deltas) == fake.reply
    [body] = fake.chat_requests
    assert body["options"] == {"num_ctx": 2048}
    assert body["keep_alive"] == "7m"
    assert fake.count("/api/show") == 0


async def test_context_length_comes_from_model_info_and_is_cached() -> None:
    qwen = FakeModel("qwen2.5:7b", context_length=6_144, architecture="qwen2")
    async with FakeOllama([qwen]) as fake:
        model = backend(fake)
        try:
            assert await model.context_length("qwen2.5:7b") == 6_144
            for _ in range(3):
                _, error = await drain(model, "qwen2.5:7b")
                assert error is None
            assert await model.context_length("qwen2.5:7b") == 6_144
        finally:
            await model.aclose()

    assert fake.count("/api/show") == 1
    assert fake.show_requests == [{"model": "qwen2.5:7b"}]
    assert [body["options"]["num_ctx"] for body in fake.chat_requests] == [6_144] * 3


async def test_replies_reuse_one_kept_alive_connection(fake: FakeOllama) -> None:
    # Regression: stopping at the `done` line closed the response early and cost httpx
    # the connection, adding a TCP handshake to every reply's first token.
    model = backend(fake)
    try:
        for _ in range(3):
            assert (await drain(model))[1] is None
    finally:
        await model.aclose()

    assert fake.requests == ["POST /api/show"] + ["POST /api/chat"] * 3
    assert len(set(fake.client_ports)) == 1


async def test_count_tokens_is_an_estimate(fake: FakeOllama) -> None:
    model = backend(fake)
    try:
        assert model.count_tokens("a" * 40) == 10
    finally:
        await model.aclose()


# model not pulled --------------------------------------------------------------------


@pytest.mark.parametrize("num_ctx", [None, 4096], ids=["found-by-show", "found-by-chat"])
async def test_unknown_model_is_model_not_found_with_the_pull_hint(
    fake: FakeOllama, num_ctx: int | None
) -> None:
    model = backend(fake)
    try:
        deltas, error = await drain(model, "mistral", GenerationOptions(num_ctx=num_ctx))
        # The server is fine: not being pulled is not a reason to back it off.
        again, _ = await drain(model)
    finally:
        await model.aclose()

    assert deltas == []
    assert isinstance(error, ModelNotFound)
    assert error.model == "mistral"
    assert "`ollama pull mistral`" in error.user_message
    assert "".join(again) == fake.reply


# server down, back up ----------------------------------------------------------------


async def test_server_down_is_unavailable_and_the_same_instance_recovers(
    fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HOSTS_LOG)
    model = backend(fake, retry_after_s=0.3)
    try:
        assert (await drain(model))[1] is None
        port = fake.port
        await fake.stop()

        deltas, error = await drain(model)
        assert deltas == []
        assert isinstance(error, ModelUnavailable)
        assert "try again" in error.user_message
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert fake.url in warnings[0].getMessage()

        await fake.start()
        assert fake.port == port
        await asyncio.sleep(0.3)  # the configured back-off, nothing to poll for
        deltas, error = await drain(model)
    finally:
        await model.aclose()

    assert error is None
    assert "".join(deltas) == fake.reply
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_a_failing_host_is_logged_once_per_failure_episode(
    fake: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=HOSTS_LOG)
    model = backend(fake, retry_after_s=0)

    def warnings() -> int:
        return sum(1 for r in caplog.records if r.levelno == logging.WARNING)

    try:
        await fake.stop()
        for _ in range(3):
            assert isinstance((await drain(model))[1], ModelUnavailable)
        assert warnings() == 1

        await fake.start()
        assert (await drain(model))[1] is None
        await fake.stop()
        assert isinstance((await drain(model))[1], ModelUnavailable)
        assert warnings() == 2
    finally:
        await model.aclose()


async def test_within_the_back_off_a_failed_server_is_not_contacted(
    fake: FakeOllama, fake_b: FakeOllama
) -> None:
    model = backend(fake, fake_b, retry_after_s=60)
    try:
        await fake.stop()
        assert (await drain(model))[1] is None  # served by fake_b
        await fake.start()
        deltas, error = await drain(model)
    finally:
        await model.aclose()

    assert error is None and deltas
    assert fake.requests == []  # still backed off while another server can serve


async def test_a_lone_server_in_its_back_off_is_tried_rather_than_giving_up(
    fake: FakeOllama,
) -> None:
    model = backend(fake, retry_after_s=60)
    try:
        await fake.stop()
        assert isinstance((await drain(model))[1], ModelUnavailable)
        await fake.start()
        deltas, error = await drain(model)
    finally:
        await model.aclose()
    assert error is None and deltas


# failures during a reply -------------------------------------------------------------


async def test_error_line_mid_stream_ends_with_a_model_error_after_the_deltas(
    fake: FakeOllama,
) -> None:
    fake.error_after = 3
    deltas, error = await drain_once(fake)

    assert deltas == ["Hello! ", "I ", "am "]
    assert isinstance(error, ModelError)
    assert not isinstance(error, ModelUnavailable)
    assert "unexpected EOF" in str(error)
    assert error.user_message


async def test_connection_dropped_mid_reply_is_an_error_and_never_resent(
    fake: FakeOllama, fake_b: FakeOllama
) -> None:
    fake.close_after = 3
    deltas, error = await drain_once(fake, fake_b)

    assert deltas == ["Hello! ", "I ", "am "]
    assert isinstance(error, ModelError)
    assert "midway" in str(error)
    assert len(fake.chat_requests) == 1
    assert fake_b.chat_requests == []


async def test_no_first_token_in_time_is_a_generation_timeout(fake: FakeOllama) -> None:
    fake.stall_after = 0
    try:
        deltas, error = await drain_once(fake, first_token_timeout=0.3)
    finally:
        fake.release()

    assert deltas == []
    assert isinstance(error, GenerationTimeout)
    assert "first token" in str(error)
    assert "too long" in error.user_message


async def test_silence_after_some_tokens_is_an_idle_timeout(fake: FakeOllama) -> None:
    fake.stall_after = 2
    try:
        deltas, error = await drain_once(fake, idle_timeout=0.3)
    finally:
        fake.release()

    assert deltas == ["Hello! ", "I "]
    assert isinstance(error, GenerationTimeout)


async def test_a_slow_stream_within_the_limits_completes(fake: FakeOllama) -> None:
    fake.first_token_delay = 0.1
    fake.token_delay = 0.02
    deltas, error = await drain_once(fake, first_token_timeout=5, idle_timeout=2)

    assert error is None
    assert "".join(deltas) == fake.reply


async def test_the_first_token_may_take_longer_than_the_idle_limit(fake: FakeOllama) -> None:
    fake.first_token_delay = 0.6  # a model loading
    deltas, error = await drain_once(fake, first_token_timeout=5, idle_timeout=0.2)

    assert error is None
    assert "".join(deltas) == fake.reply


async def test_time_the_consumer_spends_on_a_delta_is_not_model_silence(
    fake: FakeOllama,
) -> None:
    model = backend(fake, first_token_timeout=0.2, idle_timeout=0.2)
    deltas = []
    try:
        async with asyncio.timeout(10):
            async for delta in model.stream_chat("llama3.2", CHAT, GenerationOptions()):
                deltas.append(delta)
                if len(deltas) <= 2:
                    await asyncio.sleep(0.4)  # a slow chat-platform edit
    finally:
        await model.aclose()

    assert "".join(deltas) == fake.reply


async def test_cancelling_the_consumer_stays_a_cancellation(fake: FakeOllama) -> None:
    fake.stall_after = 1
    model = backend(fake, first_token_timeout=30, idle_timeout=30)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in model.stream_chat("llama3.2", CHAT, GenerationOptions()):
            first.set()

    try:
        task = asyncio.create_task(consume())
        async with asyncio.timeout(10):
            await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await fake.wait_for(lambda: fake.active_streams == 0)
        fake.stall_after = None
        deltas, error = await drain(model)
    finally:
        await model.aclose()
        fake.release()

    assert error is None
    assert "".join(deltas) == fake.reply


# several servers ---------------------------------------------------------------------


async def test_concurrent_conversations_go_to_different_servers(
    fake: FakeOllama, fake_b: FakeOllama
) -> None:
    for server in (fake, fake_b):
        server.stall_after = 1
    model = backend(fake, fake_b)
    first = model.stream_chat("llama3.2", CHAT, GenerationOptions())
    second = model.stream_chat("llama3.2", CHAT, GenerationOptions())
    try:
        async with asyncio.timeout(10):
            assert await anext(first) == "Hello! "
            assert await anext(second) == "Hello! "
        assert len(fake.chat_requests) == 1
        assert len(fake_b.chat_requests) == 1
        fake.release()
        fake_b.release()
        async with asyncio.timeout(10):
            rest = [delta async for delta in first], [delta async for delta in second]
    finally:
        await model.aclose()

    assert "".join(rest[0]) == "".join(rest[1]) == fake.reply.removeprefix("Hello! ")


async def test_one_server_down_the_other_serves_and_the_down_one_is_skipped(
    fake: FakeOllama, fake_b: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=HOSTS_LOG)
    model = backend(fake, fake_b, retry_after_s=60)
    try:
        await fake.stop()
        deltas, error = await drain(model)
        assert error is None
        assert "".join(deltas) == fake_b.reply
        assert [fake.url in r.getMessage() for r in caplog.records] == [True]

        await fake.start()
        for _ in range(2):
            assert (await drain(model))[1] is None
    finally:
        await model.aclose()

    assert fake.requests == []  # still backed off
    assert len(fake_b.chat_requests) == 3


async def test_a_server_that_drops_before_the_first_token_hands_over(
    fake: FakeOllama, fake_b: FakeOllama
) -> None:
    fake.close_after = 0
    deltas, error = await drain_once(fake, fake_b)

    assert error is None
    assert "".join(deltas) == fake_b.reply
    assert len(fake.chat_requests) == 1
    assert len(fake_b.chat_requests) == 1


async def test_a_server_without_the_model_is_skipped(fake_b: FakeOllama) -> None:
    async with FakeOllama(["qwen2.5:7b"]) as lacking:
        model = backend(lacking, fake_b)
        try:
            deltas, error = await drain(model)
        finally:
            await model.aclose()

    assert error is None
    assert "".join(deltas) == fake_b.reply
    assert lacking.chat_requests == []
    assert lacking.count("/api/tags") == 1
    assert len(fake_b.chat_requests) == 1


async def test_a_model_on_no_server_is_not_found(fake: FakeOllama, fake_b: FakeOllama) -> None:
    model = backend(fake, fake_b)
    try:
        deltas, error = await drain(model, "mistral")
    finally:
        await model.aclose()

    assert deltas == []
    assert isinstance(error, ModelNotFound)
    assert fake.chat_requests == fake_b.chat_requests == []


# listing, health, start-up checks ----------------------------------------------------


async def test_list_models_and_health_cover_every_server(fake_b: FakeOllama) -> None:
    qwen = FakeModel("qwen2.5:7b", context_length=32_768, architecture="qwen2", size=4_683_087_332)
    async with FakeOllama(["llama3.2", qwen]) as fake:
        model = backend(fake, fake_b)
        try:
            await fake_b.stop()
            models = await model.list_models()
            health = await model.health()
        finally:
            await model.aclose()

    assert {(m.name, m.host) for m in models} == {
        ("llama3.2:latest", fake.url),
        ("qwen2.5:7b", fake.url),
    }
    by_name = {m.name: m for m in models}
    assert by_name["qwen2.5:7b"].context_length == 32_768
    assert by_name["qwen2.5:7b"].size_bytes == 4_683_087_332
    assert by_name["llama3.2:latest"].quantization == "Q4_K_M"
    assert by_name["llama3.2:latest"].context_length == 131_072

    assert health.ok
    assert health.detail == "1 of 2 Ollama servers answer"
    checks = {name: (ok, detail) for name, ok, detail in health.checks}
    assert checks[f"ollama {fake.url}"] == (True, "answers; 2 models pulled")
    ok, detail = checks[f"ollama {fake_b.url}"]
    assert not ok
    assert "ollama serve" in detail


async def test_with_every_server_down_health_fails_and_listing_raises(fake: FakeOllama) -> None:
    model = backend(fake)
    try:
        await fake.stop()
        health = await model.health()
        with pytest.raises(ModelUnavailable):
            await model.list_models()
    finally:
        await model.aclose()

    assert not health.ok
    assert "ollama serve" in health.detail
    assert [ok for _, ok, _ in health.checks] == [False]


async def test_missing_models_names_each_server_lacking_a_model(fake_b: FakeOllama) -> None:
    async with FakeOllama(["llama3.2", "qwen2.5:7b"]) as fake:
        model = backend(fake, fake_b)
        try:
            missing = await model.missing_models(["llama3.2", "qwen2.5:7b", "mistral", "llama3.2"])
        finally:
            await model.aclose()

    assert missing == {"qwen2.5:7b": [fake_b.url], "mistral": [fake.url, fake_b.url]}


async def test_ollama_answers_only_when_a_server_is_there(fake: FakeOllama) -> None:
    assert await ollama_answers(fake.url)
    await fake.stop()
    assert not await ollama_answers(fake.url, timeout=1.0)


# the fake speaks Ollama's protocol ---------------------------------------------------


async def test_fake_streams_chunks_shaped_like_ollama(fake: FakeOllama) -> None:
    client = ollama.AsyncClient(host=fake.url)
    try:
        parts = [
            part
            async for part in await client.chat(
                "llama3.2", [{"role": "user", "content": "hi"}], stream=True
            )
        ]
        whole = await client.chat("llama3.2", [{"role": "user", "content": "hi"}])
        running = await client.ps()
        with pytest.raises(ollama.ResponseError) as missing:
            await client.chat("mistral", [{"role": "user", "content": "hi"}])
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    async with httpx.AsyncClient(base_url=fake.url) as raw:
        version = (await raw.get("/api/version")).json()

    assert all(part.message.role == "assistant" for part in parts)
    assert [part.done for part in parts] == [False] * (len(parts) - 1) + [True]
    last = parts[-1]
    assert last.done_reason == "stop"
    assert last.eval_count == len(parts) - 1
    assert last.prompt_eval_count
    assert last.total_duration and last.eval_duration
    assert whole.message.content == fake.reply
    assert whole.done
    assert [m.model for m in running.models] == ["llama3.2:latest"]
    assert missing.value.status_code == 404
    assert missing.value.error == 'model "mistral" not found, try pulling it first'
    assert version == {"version": fake.version}
