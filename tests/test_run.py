"""`llamabot run` as an admin runs it: a real process, real platform and model clients
against the loopback fakes, answering until SIGTERM and then stopping cleanly, without
losing the messages that arrive while it stops."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.fakes.ollama import FakeOllama
from tests.fakes.telegram import FakeTelegram, user

CONFIG = """
[llm]
backend = "ollama"
[llm.ollama]
host = "{ollama}"

[storage]
url = "sqlite+aiosqlite:///bot.db"

[personas.assistant]
prompt = "RUN-PERSONA"

[telegram]
enabled = true
base_url = "{telegram}"
edit_interval = 0.2

[web]
listen = "127.0.0.1:0"   # the admin page, on a free port
"""


async def test_run_answers_on_telegram_until_sigterm_then_stops_cleanly(tmp_path: Path) -> None:
    async with FakeTelegram(username="llama_run_bot") as telegram, FakeOllama() as ollama:
        ollama.reply = "Hello from the running bot."
        config = tmp_path / "bot.toml"
        config.write_text(CONFIG.format(ollama=ollama.url, telegram=telegram.base_url))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llamabot.cli",
            "run",
            "--config",
            str(config),
            env={**os.environ, "TELEGRAM_TOKEN": telegram.token},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            # One line with the admin page's one-time login link, which logs in once.
            assert process.stdout is not None
            async with asyncio.timeout(60):
                line = (await process.stdout.readline()).decode()
            assert line.startswith("admin page: http://127.0.0.1:") and "/login?token=" in line
            link = line.split(": ", 1)[1].strip()
            async with (
                aiohttp.ClientSession() as web,
                web.get(link, allow_redirects=False) as answer,
            ):
                assert answer.status == 302 and "llamabot_session" in answer.cookies
            asked = telegram.push_message(4242, "hi there", from_user=user(4242, "Ada"))
            await telegram.wait_for(
                lambda: any(
                    m.text == "Hello from the running bot."
                    for m in telegram.replies_to(asked.chat_id, asked.message_id)
                ),
                timeout=60,
            )
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                _, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    log = stderr.decode()
    assert process.returncode == 0, log
    assert "Traceback" not in log
    assert "stopping" in log
    assert ollama.chat_requests[0]["messages"][0]["content"] == "RUN-PERSONA"
    assert telegram.token not in log


async def start_run(config: Path, telegram: FakeTelegram) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamabot.cli", "run", "--config", str(config),
        env={**os.environ, "TELEGRAM_TOKEN": telegram.token},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def stop_run(process: asyncio.subprocess.Process) -> str:
    """SIGTERM, then the log once the process ended (killed if it hangs)."""
    try:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return stderr.decode()


async def test_messages_sent_just_after_sigterm_are_answered_at_the_next_start(
    tmp_path: Path,
) -> None:
    async with FakeTelegram(username="llama_run_bot") as telegram, FakeOllama() as ollama:
        ollama.reply = "A complete answer."
        ollama.stall_after = 2  # the first reply hangs half-written until the stop cuts it
        config = tmp_path / "bot.toml"
        config.write_text(
            "[bot]\nstop_grace_s = 2\n"
            + CONFIG.format(ollama=ollama.url, telegram=telegram.base_url)
        )
        process = await start_run(config, telegram)
        try:
            ada = user(4242, "Ada")
            asked = telegram.push_message(4242, "a long question", from_user=ada)
            await telegram.wait_for(lambda: telegram.replies_to(4242, asked.message_id), 60)
            ollama.stall_after = None
            process.send_signal(signal.SIGTERM)
            late = [
                telegram.push_message(4242, "and a follow-up", from_user=ada),
                telegram.push_message(4242, "and another", from_user=ada),
                telegram.push_message(5151, "hello from elsewhere", from_user=user(5151, "Bo")),
            ]
            first_log = await stop_run(process)
        finally:
            await stop_run(process)
        assert process.returncode == 0, first_log
        (cut,) = telegram.replies_to(4242, asked.message_id)
        assert cut.text.endswith("[interrupted: the bot is restarting]")

        process = await start_run(config, telegram)
        try:
            await telegram.wait_for(
                lambda: all(telegram.replies_to(m.chat_id, m.message_id) for m in late), 60
            )
        finally:
            second_log = await stop_run(process)
        assert process.returncode == 0, second_log
    assert "Traceback" not in first_log + second_log
    for message in late:
        (reply,) = telegram.replies_to(message.chat_id, message.message_id)
        assert reply.text == "A complete answer."
    assert len(telegram.replies_to(4242, asked.message_id)) == 1  # not answered again


async def test_run_without_a_platform_says_how_to_enable_one(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[storage]\nurl = "sqlite+aiosqlite:///bot.db"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamabot.cli", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert "[telegram] enabled = true" in stderr.decode()
    assert "llamabot chat" in stderr.decode()


async def test_a_missing_token_stops_the_start_with_the_variable_to_set(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        '[storage]\nurl = "sqlite+aiosqlite:///bot.db"\n[llm]\nbackend = "embedded"\n'
        '[telegram]\nenabled = true\ntoken_env = "NO_SUCH_TOKEN_VAR"\n'
        '[web]\nlisten = "127.0.0.1:0"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_TOKEN_VAR"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamabot.cli", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    assert process.returncode == 1
    assert "NO_SUCH_TOKEN_VAR" in stderr.decode()
    assert "Traceback" not in stderr.decode()


async def test_every_start_up_problem_is_reported_at_once_before_anything_starts(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        '[storage]\nurl = "sqlite+aiosqlite:///bot.db"\n'
        '[llm]\nbackend = "embedded"\n[llm.embedded]\nmodel_path = "absent.gguf"\n'
        '[discord]\nenabled = true\ntoken_env = "NO_DISCORD_TOKEN_VAR"\n'
        '[telegram]\nenabled = true\ntoken_env = "NO_TELEGRAM_TOKEN_VAR"\nmode = "webhook"\n'
        'webhook_url = "https://example.org/hook"\nsecret_token_env = "NO_SECRET_VAR"\n'
        '[web]\nlisten = "127.0.0.1:0"\n'  # whatever holds 8780 on this machine
    )
    unset = ("NO_DISCORD_TOKEN_VAR", "NO_TELEGRAM_TOKEN_VAR", "NO_SECRET_VAR")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamabot.cli", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    async with asyncio.timeout(60):
        _, stderr = await process.communicate()
    log = stderr.decode()
    assert process.returncode == 1
    assert "Traceback" not in log
    for variable in unset:
        assert variable in log
    assert "absent.gguf" in log
    lines = log.splitlines()
    assert len(lines) == 4 and all(line.startswith(f"{config}:") for line in lines), log
    assert not (tmp_path / "bot.db").exists()  # nothing was migrated before the report
