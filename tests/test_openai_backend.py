"""The OpenAI-compatible backend against a loopback server, through the real ``openai`` client."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from llamabot.app import Bot
from llamabot.cli import _models, build_parser, main
from llamabot.config import Config, OpenAISection, parse_config
from llamabot.doctor import run_checks
from llamabot.llm import (
    ChatMessage,
    ContextTooLong,
    GenerationOptions,
    GenerationTimeout,
    ModelError,
    ModelNotFound,
    ModelUnavailable,
)
from llamabot.llm.errors import ReplyCut
from llamabot.llm.openai_compat import OpenAICompatModel, api_base
from llamabot.llm.select import select_model
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform
from tests.fakes.openai import FakeOpenAI, ServedModel, llama_server_model, vllm_model

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

SERVERS_LOG = "llamabot.llm.openai_servers"
KEY = "console:local"
CHAT = [
    ChatMessage("system", "You are Llama, a terse assistant."),
    ChatMessage("user", "Ada: hello there"),
]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def fake_b() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def backend(
    *servers: FakeOpenAI,
    retry_after_s: float = 15.0,
    first_token_timeout: float = 10.0,
    idle_timeout: float = 10.0,
    api_key_env: str = "",
) -> OpenAICompatModel:
    urls = [server.url for server in servers]
    section = (
        OpenAISection(base_url=urls[0], retry_after_s=retry_after_s, api_key_env=api_key_env)
        if len(urls) == 1
        else OpenAISection(base_urls=urls, retry_after_s=retry_after_s, api_key_env=api_key_env)
    )
    return OpenAICompatModel(
        section, first_token_timeout=first_token_timeout, idle_timeout=idle_timeout
    )


async def drain(
    model: OpenAICompatModel,
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
    *servers: FakeOpenAI, **settings: float
) -> tuple[list[str], ModelError | None]:
    """One reply from a fresh backend on ``servers``, then the backend is closed."""
    model = backend(*servers, **settings)  # type: ignore[arg-type]
    try:
        return await drain(model)
    finally:
        await model.aclose()


# streaming and options ---------------------------------------------------------------


async def test_streams_the_reply_with_the_persona_options_mapped(fake: FakeOpenAI) -> None:
    model = backend(fake)
    options = GenerationOptions(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        repeat_penalty=1.1,
        num_ctx=4096,  # no OpenAI spelling: the server's own context is in force
        num_predict=256,
        seed=7,
        stop=("User:",),
        keep_alive="10m",  # Ollama's, not sent
    )
    try:
        deltas, error = await drain(model, options=options)
    finally:
        await model.aclose()

    assert error is None
    assert len(deltas) > 5
    assert "".join(deltas) == fake.reply
    [body] = fake.chat_requests
    assert body == {
        "model": "llama3.2",
        "stream": True,
        "messages": [
            {"role": "system", "content": "You are Llama, a terse assistant."},
            {"role": "user", "content": "Ada: hello there"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 256,
        "seed": 7,
        "stop": ["User:"],
        "top_k": 40,
        "repeat_penalty": 1.1,
    }


async def test_unset_options_are_not_sent_and_unlimited_num_predict_is_no_max_tokens(
    fake: FakeOpenAI,
) -> None:
    deltas, error = await drain_once(fake)
    model = backend(fake)
    try:
        await drain(model, options=GenerationOptions(num_predict=-1))
    finally:
        await model.aclose()

    assert error is None and deltas
    assert set(fake.chat_requests[0]) == {"model", "stream", "messages"}
    assert "max_tokens" not in fake.chat_requests[1]


async def test_a_reply_stopped_at_max_tokens_is_cut_after_its_text(fake: FakeOpenAI) -> None:
    model = backend(fake)
    try:
        deltas, error = await drain(model, options=GenerationOptions(num_predict=3))
    finally:
        await model.aclose()

    assert deltas == ["Hello! ", "I ", "am "]
    assert isinstance(error, ReplyCut)
    assert error.partial_status == "cut"


async def test_a_stop_word_ends_the_reply_normally(fake: FakeOpenAI) -> None:
    model = backend(fake)
    try:
        deltas, error = await drain(model, options=GenerationOptions(stop=("fake",)))
    finally:
        await model.aclose()

    assert error is None
    assert "".join(deltas) == "Hello! I am a "


async def test_replies_reuse_one_kept_alive_connection(fake: FakeOpenAI) -> None:
    model = backend(fake)
    try:
        for _ in range(3):
            assert (await drain(model))[1] is None
    finally:
        await model.aclose()
    assert len(fake.chat_requests) == 3
    assert len(set(fake.client_ports)) == 1


async def test_the_api_key_comes_from_the_named_variable_and_a_placeholder_otherwise(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMABOT_TEST_KEY", "sk-local-secret")
    with_key = backend(fake, api_key_env="LLAMABOT_TEST_KEY")
    without = backend(fake, api_key_env="LLAMABOT_UNSET_KEY")
    try:
        assert (await drain(with_key))[1] is None
        assert (await drain(without))[1] is None
        health = await without.health()
    finally:
        await with_key.aclose()
        await without.aclose()

    assert fake.authorizations[0] == "Bearer sk-local-secret"
    assert fake.authorizations[1] == "Bearer sk-no-key-required"
    assert "$LLAMABOT_UNSET_KEY is not set" in health.checks[0][2]


async def test_a_refused_key_says_which_setting_to_fix(fake: FakeOpenAI) -> None:
    fake.api_key = "sk-right"
    deltas, error = await drain_once(fake)

    assert deltas == []
    assert isinstance(error, ModelUnavailable)
    assert "401" in str(error) and "api_key_env" in str(error)


def test_a_bare_host_means_its_v1() -> None:
    assert api_base("http://127.0.0.1:8080") == "http://127.0.0.1:8080/v1"
    assert api_base("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/v1"
    assert api_base("http://gpu:8000/v1/") == "http://gpu:8000/v1"
    assert api_base("http://box:11434/v1") == "http://box:11434/v1"


# clear failures ----------------------------------------------------------------------


async def test_unknown_model_is_model_not_found_and_the_server_stays_in_use(
    fake: FakeOpenAI,
) -> None:
    model = backend(fake)
    try:
        deltas, error = await drain(model, "mistral")
        again, _ = await drain(model)
    finally:
        await model.aclose()

    assert deltas == []
    assert isinstance(error, ModelNotFound)
    assert error.model == "mistral"
    assert "`llamabot models`" in error.user_message
    assert "ollama pull" not in error.user_message
    assert "".join(again) == fake.reply


async def test_a_base_url_without_v1_is_named_as_the_thing_to_fix(fake: FakeOpenAI) -> None:
    wrong = fake.url.removesuffix("/v1") + "/api"
    model = OpenAICompatModel(
        OpenAISection(base_url=wrong), first_token_timeout=10, idle_timeout=10
    )
    try:
        deltas, error = await drain(model)
        health = await model.health()
    finally:
        await model.aclose()

    assert deltas == [] and isinstance(error, ModelUnavailable)
    assert "404" in str(error) and "ends in /v1" in str(error)
    assert not health.ok
    assert "/models answered 404" in health.checks[0][2]


async def test_server_down_is_unavailable_and_the_same_instance_recovers(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=SERVERS_LOG)
    model = backend(fake, retry_after_s=0)
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
        deltas, error = await drain(model)
    finally:
        await model.aclose()

    assert error is None
    assert "".join(deltas) == fake.reply
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_an_error_event_mid_stream_ends_with_a_model_error_after_the_deltas(
    fake: FakeOpenAI,
) -> None:
    fake.error_after = 3
    deltas, error = await drain_once(fake)

    assert deltas == ["Hello! ", "I ", "am "]
    assert isinstance(error, ModelError)
    assert not isinstance(error, ModelUnavailable)
    assert "failed mid-reply" in str(error) and fake.error_message in str(error)
    assert error.user_message


async def test_a_context_overflow_is_context_too_long(fake: FakeOpenAI) -> None:
    fake.error_after = 0
    fake.error_message = "the request exceeds the available context size, try increasing it"
    deltas, error = await drain_once(fake)

    assert deltas == []
    assert isinstance(error, ContextTooLong)


async def test_connection_dropped_mid_reply_is_an_error_and_never_resent(
    fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.close_after = 3
    deltas, error = await drain_once(fake, fake_b)

    assert deltas == ["Hello! ", "I ", "am "]
    assert isinstance(error, ModelUnavailable)
    assert "midway" in str(error)
    assert len(fake.chat_requests) == 1
    assert fake_b.chat_requests == []


async def test_no_first_token_in_time_is_a_generation_timeout(fake: FakeOpenAI) -> None:
    fake.stall_after = 0
    try:
        deltas, error = await drain_once(fake, first_token_timeout=0.3)
    finally:
        fake.release()

    assert deltas == []
    assert isinstance(error, GenerationTimeout)
    assert "first token" in str(error) and fake.url in str(error)
    assert "too long" in error.user_message


async def test_silence_after_some_tokens_is_an_idle_timeout(fake: FakeOpenAI) -> None:
    fake.stall_after = 2
    try:
        deltas, error = await drain_once(fake, idle_timeout=0.3)
    finally:
        fake.release()

    assert deltas == ["Hello! ", "I "]
    assert isinstance(error, GenerationTimeout)


async def test_a_held_first_token_within_the_limit_completes(fake: FakeOpenAI) -> None:
    fake.first_token_delay = 0.5  # a model loading; longer than the idle limit
    deltas, error = await drain_once(fake, first_token_timeout=5, idle_timeout=0.2)

    assert error is None
    assert "".join(deltas) == fake.reply


async def test_new_timeouts_apply_to_the_next_reply(fake: FakeOpenAI) -> None:
    fake.stall_after = 0
    model = backend(fake, first_token_timeout=30)
    try:
        model.set_timeouts(0.2, 0.2)
        deltas, error = await drain(model)
    finally:
        fake.release()
        await model.aclose()
    assert deltas == [] and isinstance(error, GenerationTimeout)


async def test_cancelling_the_consumer_stays_a_cancellation(fake: FakeOpenAI) -> None:
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


async def test_failover_to_the_second_base_url_when_the_first_is_down(
    fake: FakeOpenAI, fake_b: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=SERVERS_LOG)
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
    fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake.close_after = 0
    deltas, error = await drain_once(fake, fake_b)

    assert error is None
    assert "".join(deltas) == fake_b.reply
    assert len(fake.chat_requests) == 1
    assert len(fake_b.chat_requests) == 1


async def test_a_busy_server_answering_503_hands_over(fake: FakeOpenAI, fake_b: FakeOpenAI) -> None:
    fake.status = 503  # llama-server while it loads the model
    deltas, error = await drain_once(fake, fake_b)

    assert error is None
    assert "".join(deltas) == fake_b.reply


async def test_concurrent_conversations_go_to_different_servers(
    fake: FakeOpenAI, fake_b: FakeOpenAI
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
        assert len(fake.chat_requests) == len(fake_b.chat_requests) == 1
        fake.release()
        fake_b.release()
        async with asyncio.timeout(10):
            rest = [delta async for delta in first], [delta async for delta in second]
    finally:
        await model.aclose()

    assert "".join(rest[0]) == "".join(rest[1]) == fake.reply.removeprefix("Hello! ")


async def test_a_server_without_the_model_is_skipped(fake_b: FakeOpenAI) -> None:
    async with FakeOpenAI(["qwen2.5-7b-instruct"]) as lacking:
        model = backend(lacking, fake_b)
        try:
            deltas, error = await drain(model)
            nowhere, missing = await drain(model, "mistral")
        finally:
            await model.aclose()

    assert error is None
    assert "".join(deltas) == fake_b.reply
    assert lacking.chat_requests == []
    assert len(fake_b.chat_requests) == 1
    assert nowhere == [] and isinstance(missing, ModelNotFound)


# models, context length, health ------------------------------------------------------


async def test_list_models_reads_each_servers_context_length() -> None:
    async with (
        FakeOpenAI([llama_server_model("llama3.2", n_ctx_train=131_072)]) as llama_server,
        FakeOpenAI([vllm_model("qwen2.5-7b", max_model_len=32_768), "bare"]) as vllm,
    ):
        model = backend(llama_server, vllm)
        try:
            models = await model.list_models()
            lengths = [await model.context_length(n) for n in ("qwen2.5-7b", "bare", "nope")]
        finally:
            await model.aclose()

    assert {(m.name, m.host, m.context_length) for m in models} == {
        ("llama3.2", llama_server.url, 131_072),
        ("qwen2.5-7b", vllm.url, 32_768),
        ("bare", vllm.url, None),
    }
    assert lengths == [32_768, None, None]


async def test_ollamas_v1_names_match_without_latest() -> None:
    async with FakeOpenAI([ServedModel("llama3.2:latest")]) as ollama_v1:
        model = backend(ollama_v1)
        try:
            missing = await model.missing_models(["llama3.2", "mistral"])
        finally:
            await model.aclose()
    assert missing == {"mistral": [ollama_v1.url]}


async def test_health_covers_every_server_and_says_what_to_do(
    fake: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    model = backend(fake, fake_b)
    try:
        await fake_b.stop()
        health = await model.health()
        await fake.stop()
        down = await model.health()
        with pytest.raises(ModelUnavailable):
            await model.list_models()
    finally:
        await model.aclose()

    assert health.ok
    assert health.detail == "1 of 2 OpenAI-compatible servers answer"
    checks = {name: (ok, detail) for name, ok, detail in health.checks}
    assert checks[f"openai {fake.url}"] == (True, "answers; serves 1 model(s)")
    ok, detail = checks[f"openai {fake_b.url}"]
    assert not ok and "base_url" in detail
    assert not down.ok and "[llm.openai] base_url" in down.detail


# bot.toml, doctor, models, the Bot end to end ----------------------------------------


def toml(urls: list[str], tmp_path: Path, *, model: str = "llama3.2") -> str:
    where = f'base_url = "{urls[0]}"' if len(urls) == 1 else f"base_urls = {urls!r}"
    return f"""
[llm]
backend = "openai"
[llm.openai]
{where}
retry_after_s = 0
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"
[personas.assistant]
prompt = "OPENAI-PERSONA"
model = "{model}"
[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
""".replace("'", '"')


def config_for(urls: list[str], tmp_path: Path, **kwargs: str) -> Config:
    return parse_config(toml(urls, tmp_path, **kwargs), tmp_path / "bot.toml")


def running(config: Config, adapter: FakePlatform) -> Bot:
    return Bot(config, adapters=[adapter], plugins=PluginHost())


async def test_a_bot_conversation_on_the_openai_backend(fake: FakeOpenAI, tmp_path: Path) -> None:
    adapter = FakePlatform()
    fake.reply = "Hi from llama-server."
    async with running(config_for([fake.url], tmp_path), adapter) as bot:
        assert isinstance(bot.model, OpenAICompatModel)
        await adapter.say("hello")
        fake.reply = "Second answer."
        await adapter.say("and again")
    first, second = fake.chat_requests
    assert first["messages"] == [
        {"role": "system", "content": "OPENAI-PERSONA"},
        {"role": "user", "content": "hello"},
    ]
    assert second["messages"][1:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Hi from llama-server."},
        {"role": "user", "content": "and again"},
    ]
    assert adapter.messages_in(KEY) == ["Hi from llama-server.", "Second answer."]


async def test_the_servers_context_length_bounds_the_history_window(tmp_path: Path) -> None:
    adapter = FakePlatform()
    async with FakeOpenAI([vllm_model("llama3.2", max_model_len=256)]) as fake:
        fake.reply = "ok"
        async with running(config_for([fake.url], tmp_path), adapter):
            await adapter.say("long " * 150)  # ~190 tokens: fits 256 alone, not with more
            await adapter.say("short")
    first, second = fake.chat_requests
    assert [m["content"] for m in first["messages"]][1].startswith("long ")
    # The old turn no longer fits 256 tokens minus the prompt and room for the answer.
    assert [m["content"] for m in second["messages"][1:]] == ["short"]


async def test_the_bot_fails_over_and_tells_the_person_when_every_server_is_down(
    fake: FakeOpenAI, fake_b: FakeOpenAI, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake_b.reply = "From the second box."
    async with running(config_for([fake.url, fake_b.url], tmp_path), adapter):
        await fake.stop()
        await adapter.say("hello")
        await fake_b.stop()
        await adapter.say("anyone?")
    first, notice = adapter.messages_in(KEY)
    assert first == "From the second box."
    assert "unavailable" in notice.lower()


async def test_a_model_the_server_lacks_is_a_short_notice_and_a_start_up_warning(
    fake: FakeOpenAI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = FakePlatform()
    caplog.set_level(logging.WARNING)
    async with running(config_for([fake.url], tmp_path, model="mistral"), adapter):
        await adapter.say("hello")
    assert "llama-server --alias mistral" in caplog.text
    assert "ollama pull" not in caplog.text
    assert adapter.messages_in(KEY) == [
        "The model mistral isn't served by this bot's model server; an admin can see the "
        "names it serves with `llamabot models`."
    ]


async def test_doctor_lines_for_the_openai_backend(
    fake: FakeOpenAI, fake_b: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text(toml([fake.url, fake_b.url], tmp_path, model="mistral"))
    await fake_b.stop()
    lines = {check.name: check for check in await run_checks(path)}
    assert lines["model backend"].ok
    assert lines["model backend"].detail == "openai ([llm] backend = openai)"
    assert lines[f"openai {fake.url}"].ok
    assert not lines[f"openai {fake_b.url}"].ok
    persona = lines["persona assistant"]
    assert not persona.ok
    assert f"missing on {fake.url}" in persona.detail and "--alias mistral" in persona.detail

    path.write_text(toml([fake.url], tmp_path))
    lines = {check.name: check for check in await run_checks(path)}
    assert lines["persona assistant"].ok
    assert lines["generation"].ok
    assert fake.chat_requests[-1]["max_tokens"] == 8  # the doctor's short probe


async def test_models_command_lists_each_server_with_its_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FakeOpenAI([vllm_model("qwen2.5-7b", max_model_len=32_768), "bare"]) as fake:
        path = tmp_path / "bot.toml"
        path.write_text(toml([fake.url], tmp_path))
        status = await _models(build_parser().parse_args(["models", "--config", str(path)]))
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{fake.url}\tqwen2.5-7b\t?\t?\tctx 32768",
        f"{fake.url}\tbare\t?\t?\tctx ?",
    ]


async def test_select_model_uses_the_configured_servers(fake: FakeOpenAI, tmp_path: Path) -> None:
    model = await select_model(config_for([fake.url], tmp_path).llm)
    try:
        assert isinstance(model, OpenAICompatModel)
        assert model.base_urls == [fake.url]
    finally:
        await model.aclose()


def test_check_says_the_openai_backend_needs_a_base_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[llm]\nbackend = "openai"\n')
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1: llm:" in err  # the [llm] table
    assert '[llm] backend = "openai" needs a server' in err
    assert "base_url" in err

    path.write_text('[llm]\nbackend = "openai"\n[llm.openai]\nbase_url = "localhost:8080"\n')
    assert main(["check", "--config", str(path)]) == 1
    assert "llm.openai.base_url: 'localhost:8080' is not an http://" in capsys.readouterr().err


# the fake speaks the OpenAI protocol -------------------------------------------------


async def test_fake_streams_chunks_the_raw_client_reads(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=fake.url, api_key="sk-test", max_retries=0)
    try:
        stream = await client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(
            model="llama3.2", messages=[{"role": "user", "content": "hi"}]
        )
        listed = await client.models.list()
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="mistral", messages=[{"role": "user", "content": "hi"}]
            )
    finally:
        await client.close()

    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake.reply
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert whole.choices[0].message.content == fake.reply
    assert whole.choices[0].finish_reason == "stop"
    assert [m.id for m in listed.data] == ["llama3.2"]
    assert missing.value.code == "model_not_found"


def test_the_readme_lines_work_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Inference servers that speak the OpenAI API", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(block, tmp_path / "bot.toml")
    assert config.llm.backend == "openai"
    assert config.llm.openai.all_base_urls == ["http://127.0.0.1:8080/v1"]
    # Each commented alternative, swapped in for the first base_url, is valid too.
    [active] = [line for line in block.splitlines() if line.startswith("base_url")]
    for line in block.splitlines():
        if line.startswith(("# base_url", "# api_key_env")):
            swapped = block.replace(line, line[2:])
            if line.startswith("# base_url"):
                swapped = swapped.replace(active, "# " + active)
            assert parse_config(swapped, tmp_path / "bot.toml").llm.openai.all_base_urls
