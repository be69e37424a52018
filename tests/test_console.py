"""`llamabot chat` as a person meets it: the real CLI in a pseudo-terminal, and piped.

The model is the loopback Ollama server (tests/fakes/ollama.py), so a test decides what
the reply says and when it stalls; the terminal is a real pty driven by pexpect.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pexpect
import pytest

from tests.fakes.ollama import FakeOllama, split_tokens

CONFIG = """
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"

[storage]
url = "sqlite+aiosqlite:///chat.db"

[personas.assistant]
prompt = "You are a test."

[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
"""

REPLY = "First line of the answer.\n\nThird line, after an empty one.\n\n\nThe end."
# Terminal control sequences (colours, cursor moves, mode switches) are not what a person reads.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


class Terminal:
    """The real ``llamabot chat`` in a pseudo-terminal, read as the screen shows it."""

    def __init__(self, config: Path) -> None:
        env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "llamabot.cli", "chat", "--config", str(config)],
            env=env,
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(40, 200),
        )
        self._raw = ""
        self.transcript = ""  # everything shown, control sequences removed
        self._unread = 0  # where the next wait_for starts looking

    async def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:  # noqa: ASYNC109
        """Wait until ``pattern`` shows after what earlier waits matched."""
        return await asyncio.to_thread(self._wait_for, pattern, timeout)

    def _wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern, re.S).search(self.transcript, self._unread)
            if found:
                self._unread = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} never showed; the screen had:\n{self.transcript}"
                )
            try:
                self._raw += self.child.read_nonblocking(4096, timeout=0.5)
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise AssertionError(f"chat ended before {pattern!r}:\n{self.transcript}") from None
            self.transcript = CONTROL.sub("", self._raw)

    def type(self, text: str) -> None:
        self.child.send(text)

    def enter(self, text: str) -> None:
        self.child.send(text + "\r")

    def ctrl_c(self) -> None:
        self.child.sendintr()

    def ctrl_d(self) -> None:
        self.child.sendeof()

    async def exit_status(self) -> int:
        """Wait for the program to end; its exit status."""

        def finish() -> int:
            rest = self.child.read()  # until EOF
            self._raw += rest
            self.transcript = CONTROL.sub("", self._raw)
            self.child.close()
            return -1 if self.child.exitstatus is None else int(self.child.exitstatus)

        return await asyncio.wait_for(asyncio.to_thread(finish), 60)


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as fake:
        fake.reply = REPLY
        yield fake


@pytest.fixture
def config(tmp_path: Path, ollama: FakeOllama) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(CONFIG.format(url=ollama.url))
    return path


def stored(config: Path) -> list[tuple[str, str, str]]:
    db = sqlite3.connect(config.parent / "chat.db")
    try:
        return db.execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    finally:
        db.close()


SIGNAL_PLUGIN = """
import asyncio
import logging
import signal

from llamabot.events import ChannelRef
from llamabot.plugins import Plugin

plugin = Plugin("signals")


@plugin.on_start
async def start(ctx):
    # The test's way to make the bot speak while the person types: a signal.
    loop = asyncio.get_running_loop()
    log = logging.getLogger("signals")
    console = ChannelRef(platform="console", chat_id="local", is_private=True)
    loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("a warning from the bot"))
    loop.add_signal_handler(
        signal.SIGUSR2, lambda: loop.create_task(ctx.send(console, "stretch your legs"))
    )
"""


def with_signal_plugin(config: Path) -> None:
    """A plugin beside bot.toml: SIGUSR1 logs a warning, SIGUSR2 posts a message."""
    (config.parent / "plugins").mkdir()
    (config.parent / "plugins" / "signals.py").write_text(SIGNAL_PLUGIN)


async def test_ctrl_c_stops_the_reply_keeps_what_was_said_and_the_prompt_returns(
    config: Path, ollama: FakeOllama
) -> None:
    ollama.stall_after = 3  # the reply hangs mid-way, as a long answer would go on
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    terminal.enter("tell me a long story")
    await ollama.wait_for(lambda: ollama.deltas_sent == 3)
    partial = "".join(split_tokens(REPLY)[:3])
    await terminal.wait_for(re.escape(partial.strip()))
    terminal.ctrl_c()
    await terminal.wait_for(r"\[interrupted\]\r?\n")
    await terminal.wait_for("you:")  # the prompt is back, the program still runs

    ollama.stall_after = None
    terminal.enter("and now a short one")
    await terminal.wait_for("The end.")
    await terminal.wait_for("you:")
    terminal.ctrl_d()
    assert await terminal.exit_status() == 0
    assert terminal.transcript.endswith("\n")  # the shell prompt starts on a fresh line
    assert "Traceback" not in terminal.transcript

    rows = stored(config)
    assert rows[0] == ("user", "tell me a long story", "ok")
    role, text, status = rows[1]
    assert (role, status) == ("assistant", "interrupted")
    assert text.startswith(partial) and "restarting" not in text  # the person stopped it
    assert rows[2:] == [("user", "and now a short one", "ok"), ("assistant", REPLY, "ok")]


async def test_ctrl_c_at_the_prompt_clears_the_line_and_a_second_one_quits(
    config: Path,
) -> None:
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    terminal.type("half a thought")
    await terminal.wait_for("half a thought")
    terminal.ctrl_c()
    await terminal.wait_for("Ctrl-C again")
    await terminal.wait_for("you:")
    terminal.type("second thoughts")  # typed after the first Ctrl-C: only cleared again
    await terminal.wait_for("second thoughts")
    terminal.ctrl_c()
    await terminal.wait_for("Ctrl-C again")
    await terminal.wait_for("you:")
    terminal.ctrl_c()
    assert await terminal.exit_status() == 0
    assert terminal.transcript.endswith("\n")
    assert stored(config) == []  # the cleared lines were never sent


async def test_a_message_arriving_while_typing_prints_above_the_prompt(
    config: Path,
) -> None:
    with_signal_plugin(config)
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    terminal.type("half typed")
    await terminal.wait_for("half typed")
    terminal.child.kill(signal.SIGUSR2)  # the bot posts on its own, as a reminder does
    await terminal.wait_for("stretch your legs\r?\n")
    # Below the message, the prompt is drawn again with what was typed so far.
    await terminal.wait_for("you: half typed")
    terminal.enter("")  # send the line typed before the message came
    await terminal.wait_for("The end.")
    await terminal.wait_for("you:")
    terminal.ctrl_d()
    assert await terminal.exit_status() == 0
    assert ("user", "half typed", "ok") in stored(config)


async def test_input_that_is_not_utf8_is_answered(config: Path) -> None:
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    os.write(terminal.child.child_fd, b"caf\xe9 au lait\r")
    await terminal.wait_for("The end.")
    await terminal.wait_for("you:")
    terminal.ctrl_d()
    assert await terminal.exit_status() == 0
    assert ("user", "caf\ufffd au lait", "ok") in stored(config)


def chat(config: Path, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "llamabot.cli", "chat", "--config", str(config), *args],
        input=stdin, capture_output=True, timeout=120,
    )  # fmt: skip


async def test_piped_replies_end_with_an_empty_line_and_keep_theirs_visible(
    config: Path,
) -> None:
    result = await asyncio.to_thread(chat, config, b"first\nsecond\n/nosuchcommand\n")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.decode().split("\n\n")
    assert blocks[-1] == ""  # the output ends with a block's empty line
    assert len(blocks[:-1]) == 3  # one block per line sent
    # Inside a reply, an empty line is printed as a single space.
    assert [re.sub(r"(?m)^ $", "", block) for block in blocks[:2]] == [REPLY, REPLY]
    assert "Unknown command" in blocks[2]


async def test_jsonl_gives_one_object_per_reply_with_status_tokens_and_time(
    config: Path,
) -> None:
    result = await asyncio.to_thread(chat, config, b"first\n/help\ncaf\xe9\n", "--jsonl")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(records) == 3
    first, command, latin1 = records
    assert first["text"] == REPLY and first["status"] == "ok"
    assert first["tokens"] > 0 and first["seconds"] >= 0
    assert command["status"] == "notice" and "/help" in command["text"]
    assert command["tokens"] is None
    assert latin1["status"] == "ok"
    assert ("user", "caf\ufffd", "ok") in stored(config)


async def test_ctrl_d_at_the_prompt_quits_on_a_fresh_line(config: Path) -> None:
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    terminal.ctrl_d()
    assert await terminal.exit_status() == 0
    assert terminal.transcript.endswith("\n")


async def test_piped_chat_into_a_closed_pipe_ends_quietly(config: Path) -> None:
    def run() -> tuple[int, bytes, bytes]:
        process = subprocess.Popen(
            [sys.executable, "-m", "llamabot.cli", "chat", "--config", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin and process.stdout and process.stderr
        process.stdin.write(b"first\n")
        process.stdin.flush()
        first = process.stdout.readline()  # what `head -1` reads before it exits
        process.stdout.close()
        process.stdin.write(b"second\nthird\n")
        process.stdin.close()
        stderr = process.stderr.read()
        return process.wait(timeout=60), first, stderr

    status, first, stderr = await asyncio.to_thread(run)
    assert first.startswith(b"First line")
    assert status == 0, stderr.decode()
    assert stderr == b""  # no traceback, no warning: the reader simply went away


async def test_a_log_line_while_typing_prints_above_the_prompt(config: Path) -> None:
    with_signal_plugin(config)
    terminal = Terminal(config)
    await terminal.wait_for("you:")
    terminal.type("half typed")
    await terminal.wait_for("half typed")
    terminal.child.kill(signal.SIGUSR1)
    await terminal.wait_for("a warning from the bot\\r?\\n")
    await terminal.wait_for("you: half typed")  # the prompt is drawn again below it
    terminal.ctrl_c()
    await terminal.wait_for("Ctrl-C again.*you:")
    terminal.ctrl_d()
    assert await terminal.exit_status() == 0
