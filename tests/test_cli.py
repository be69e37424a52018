"""`llamabot chat` as a person scripts it: piped lines in, streamed replies out."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llamabot.events import ChannelRef
from llamabot.llm.llamacpp import bundled_model_path
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.storage.locks import claim_sqlite

CONFIG = """
[llm]
backend = "embedded"
[llm.embedded]
n_ctx = 1024
max_tokens = 32

[storage]
url = "sqlite+aiosqlite:///chat.db"

[personas.assistant]
prompt = "You are a helpful assistant. Answer in one short sentence."
temperature = 0.0
seed = 1

[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"
"""


def chat(config: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamabot.cli", "chat", "--config", str(config), *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")
def test_piped_chat_answers_every_line_and_continues_after_a_restart(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    first = chat(config, "Hello!\n\nWhat colour is the sky?\n")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    replies = first.stdout.splitlines()
    assert len([r for r in replies if r.strip()]) >= 2  # two answers; the empty line ignored

    second = chat(config, "And the grass?\n")
    assert second.returncode == 0, second.stderr

    db = sqlite3.connect(tmp_path / "chat.db")  # relative to bot.toml, not the cwd
    rows = db.execute("SELECT role, content, status FROM messages ORDER BY id").fetchall()
    db.close()
    assert [r[0] for r in rows] == ["user", "assistant"] * 3
    assert [r[1] for r in rows if r[0] == "user"] == [
        "Hello!",
        "What colour is the sky?",
        "And the grass?",
    ]
    assert all(r[2] == "ok" for r in rows)


def test_a_malformed_bot_toml_ends_with_the_error_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[llm]\nbackend = "gpu"\n')
    result = chat(config, "hi\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{config}:2" in result.stderr and "backend" in result.stderr


def test_a_missing_model_file_names_the_path(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[llm]\nbackend = "embedded"\n[llm.embedded]\nmodel_path = "m.gguf"\n')
    result = chat(config, "hi\n")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(tmp_path / "m.gguf") in result.stderr


def test_a_missing_bot_toml_says_what_to_do(tmp_path: Path) -> None:
    result = chat(tmp_path / "absent.toml", "")
    assert result.returncode == 1
    assert "--config" in result.stderr and "Traceback" not in result.stderr


async def seed_history(database: Path, conversations: int) -> None:
    """``conversations`` exchanges of 2 kB each, as `llamabot export` finds them."""
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await upgrade(engine)
    history = HistoryStore(engine)
    for number in range(conversations):
        key = await history.conversation_id(ChannelRef("telegram", str(number), is_private=True))
        await history.append(
            key,
            NewMessage(role="user", content="q" * 1000, tokens=1, author_id="telegram:1"),
            NewMessage(role="assistant", content="a" * 1000, tokens=1, status="ok"),
        )
    await history.aclose()
    await engine.dispose()


def test_export_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[storage]\nurl = "sqlite+aiosqlite:///e.db"\n')
    asyncio.run(seed_history(tmp_path / "e.db", 100))  # ~200 kB: more than a pipe buffers
    process = subprocess.Popen(
        [sys.executable, "-m", "llamabot.cli", "export", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # what `head -1` reads before it exits
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert first.startswith(b"{")
    assert stderr == ""


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this user cannot create files in (root may write anywhere it can chmod)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder if not os.access(folder, os.W_OK) else Path("/proc/self")


@pytest.mark.parametrize("where", ["missing", "read-only"])
@pytest.mark.parametrize("command", ["chat", "export", "db"])
def test_an_unusable_database_folder_is_one_line_with_the_fix(
    tmp_path: Path, where: str, command: str
) -> None:
    folder = tmp_path / "no-such-folder" if where == "missing" else read_only_folder(tmp_path)
    config = tmp_path / "bot.toml"
    config.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///{folder}/bot.db"\n')
    args = ["upgrade"] if command == "db" else []
    result = subprocess.run(
        [sys.executable, "-m", "llamabot.cli", command, *args, "--config", str(config)],
        input="hi\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(folder) in result.stderr
    assert ("mkdir -p" if where == "missing" else "chmod u+w") in result.stderr


@pytest.mark.parametrize("command", ["check", "plugins", "db", "export"])
def test_every_command_printing_into_a_closed_pipe_ends_quietly(
    tmp_path: Path, command: str
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[storage]\nurl = "sqlite+aiosqlite:///e.db"\n')
    asyncio.run(seed_history(tmp_path / "e.db", 2))
    args = ["current"] if command == "db" else []
    process = subprocess.Popen(
        [sys.executable, "-m", "llamabot.cli", command, *args, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line (`| head -0`)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr


@pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")
async def test_kill_9_of_the_model_worker_mid_reply_leaves_the_chat_answering(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG.replace("max_tokens = 32", "max_tokens = 400"))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "llamabot.cli", "chat", "--config", str(config)),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(b"Tell me a very long story about a llama.\n")
    await process.stdin.drain()
    streamed = await process.stdout.read(1)  # the reply has begun
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    [worker] = children  # the bot's only child: the llama.cpp worker
    os.kill(int(worker), 9)
    process.stdin.write(b"Name one colour.\n")
    process.stdin.close()
    out, err = await process.communicate()
    text = (streamed + out).decode()
    assert process.returncode == 0, err.decode()
    assert "The model crashed while answering" in text
    assert "Traceback" not in err.decode()
    with sqlite3.connect(tmp_path / "chat.db") as db:
        rows = db.execute(
            "SELECT status FROM messages WHERE role = 'assistant' ORDER BY id"
        ).fetchall()
    crashed, answered = (status for (status,) in rows)
    assert crashed == "failed"
    assert answered in ("ok", "cut")  # answered by a fresh worker


def test_a_second_process_on_one_sqlite_database_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(CONFIG)
    held = claim_sqlite(f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}")  # the first process
    assert held is not None
    try:
        result = chat(config, "hi\n")
    finally:
        held.release()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"(pid {os.getpid()})" in result.stderr and "PostgreSQL" in result.stderr
