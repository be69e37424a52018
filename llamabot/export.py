"""Fine-tuning export: stored conversations as JSONL for LoRA training (PEFT / TRL).

One line per conversation window: the persona prompt as the system turn, then the
complete exchanges that follow. Failed or interrupted replies, and the questions they
failed to answer, are left out. Rows stream from the database, so memory stays flat
however large the history is.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.config import Config
from llamabot.storage.models import Conversation, Message
from llamabot.window import speaker_line

Format = Literal["chatml", "sharegpt", "alpaca"]
FORMATS: tuple[Format, ...] = ("chatml", "sharegpt", "alpaca")


@dataclass
class ExportFilter:
    """Which history to export."""

    conversation: str | None = None
    persona: str | None = None
    since: datetime | None = None


@dataclass
class Exchange:
    """A person's turn (or several, in a group) and the reply that answered it."""

    # content, author name, author id, the pictures' references (platform file ids / URLs)
    users: list[tuple[str, str | None, str | None, list[str]]]
    reply: str


@dataclass
class Window:
    """Consecutive exchanges of one conversation under one persona."""

    key: str
    persona: str
    group: bool
    exchanges: list[Exchange] = field(default_factory=list)


KEY_FILE = ".llamabot-export-key"


def _create_secret(path: Path) -> None:
    """Write a new secret to ``path``: readable by the owner only from its first byte.

    The secret is written to a private temporary file (mkstemp creates it 0600) and
    linked into place, so the file never exists with default permissions or half
    written, and two exports starting at once agree on one secret.
    """
    fd, temporary = tempfile.mkstemp(prefix=f"{KEY_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_hex(32))
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another export created it a moment ago: keep theirs
        except OSError:
            # A file system without hard links; a rename is atomic too.
            os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


class Pseudonyms:
    """Stable pseudonyms for user ids: a keyed hash with a secret kept beside bot.toml."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def beside(cls, config_path: Path) -> Pseudonyms:
        """Load (or create, once) the secret file next to bot.toml."""
        path = config_path.parent / KEY_FILE
        if not path.exists():
            _create_secret(path)
        return cls(bytes.fromhex(path.read_text().strip()))

    def __call__(self, value: str) -> str:
        digest = hmac.new(self._secret, value.encode(), hashlib.sha256).hexdigest()
        return f"user-{digest[:12]}"


async def _rows(engine: AsyncEngine, where: ExportFilter) -> AsyncGenerator[Any]:
    query = (
        select(
            Conversation.key,
            Conversation.is_private,
            Message.role,
            Message.content,
            Message.author_name,
            Message.author_id,
            Message.persona,
            Message.status,
            Message.tool_calls,
            Message.images,
        )
        .join(Conversation, Conversation.id == Message.conversation_id)
        .order_by(Message.conversation_id, Message.id)
    )
    if where.conversation:
        query = query.where(Conversation.key == where.conversation)
    if where.since:
        query = query.where(Message.created_at >= where.since)
    async with engine.connect() as conn:
        result = await conn.stream(query.execution_options(yield_per=1000))
        async for row in result:
            yield row


async def windows(
    engine: AsyncEngine, where: ExportFilter, max_messages: int
) -> AsyncGenerator[Window]:
    """Complete exchanges grouped into windows of at most ``max_messages`` turns."""
    current: Window | None = None
    pending: list[tuple[str, str | None, str | None, list[str]]] = []
    async with contextlib.aclosing(_rows(engine, where)) as rows:
        async for row in rows:
            key, is_private, role, content, name, author_id, persona, status, calls, images = row
            persona = persona or ""
            if current is not None and (current.key != key or current.persona != persona):
                if current.exchanges:
                    yield current
                current = None
                pending = []
            if role == "user":
                sources = [ref["source"] for ref in json.loads(images)] if images else []
                pending.append((content, name, author_id, sources))
                continue
            if role == "tool" or (role == "assistant" and calls and status == "ok"):
                continue  # the steps of a tool call: the question waits for the answer
            if role != "assistant" or status != "ok" or not pending:
                pending = []  # a failed reply takes its unanswered question with it
                continue
            if current is None:
                current = Window(key, persona, group=not is_private)
            turns = sum(len(e.users) + 1 for e in current.exchanges)
            if current.exchanges and turns + len(pending) + 1 > max_messages:
                yield current
                current = Window(key, persona, current.group)
            current.exchanges.append(Exchange(pending, content))
            pending = []
    if current is not None and current.exchanges:
        yield current


def _user_text(window: Window, content: str, name: str | None) -> str:
    return speaker_line(name if window.group else None, content)


def render(
    window: Window,
    fmt: Format,
    system: str,
    pseudonym: Pseudonyms | None,
) -> Iterator[dict[str, Any]]:
    """The JSON records of one window in the chosen format."""
    conversation = pseudonym(window.key) if pseudonym else window.key
    if fmt == "alpaca":
        history: list[list[str]] = []
        for exchange in window.exchanges:
            instruction = "\n".join(_user_text(window, c, n) for c, n, _, _ in exchange.users)
            yield {
                "system": system,
                "instruction": instruction,
                "input": "",
                "output": exchange.reply,
                "history": [list(pair) for pair in history],
                "conversation": conversation,
            }
            history.append([instruction, exchange.reply])
        return
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for exchange in window.exchanges:
        for content, name, author_id, sources in exchange.users:
            turn: dict[str, Any] = {"role": "user", "content": _user_text(window, content, name)}
            if author_id:
                turn["user"] = pseudonym(author_id) if pseudonym else author_id
            if sources:
                turn["images"] = sources  # references: the platform keeps the files
            messages.append(turn)
        messages.append({"role": "assistant", "content": exchange.reply})
    if fmt == "chatml":
        yield {"messages": messages, "persona": window.persona, "conversation": conversation}
        return
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    turns = []
    pictures: list[str] = []
    for message in messages:
        shown = message.get("images", [])
        # LLaMA-Factory's multimodal ShareGPT: an <image> mark per picture, in order.
        value = "<image>" * len(shown) + message["content"]
        turn = {"from": names[message["role"]], "value": value}
        if "user" in message:
            turn["user"] = message["user"]
        turns.append(turn)
        pictures += shown
    record: dict[str, Any] = {
        "conversations": turns,
        "persona": window.persona,
        "conversation": conversation,
    }
    if pictures:
        record["images"] = pictures
    yield record


async def export(
    engine: AsyncEngine,
    config: Config,
    out: TextIO,
    *,
    fmt: Format,
    where: ExportFilter,
    pseudonym: Pseudonyms | None,
) -> int:
    """Write JSONL to ``out``; returns the number of records written."""
    written = 0
    # Closed on the spot, also when writing fails (a reader closed the pipe): the open
    # database cursor must not outlive the event loop.
    async with contextlib.aclosing(windows(engine, where, config.history.max_messages)) as found:
        async for window in found:
            if where.persona and window.persona != where.persona:
                continue
            persona = config.personas.get(window.persona)
            default = config.personas[config.bot.default_persona]
            system = persona.prompt if persona else default.prompt
            for record in render(window, fmt, system, pseudonym):
                out.write(json.dumps(record, ensure_ascii=False))
                out.write("\n")
                written += 1
    return written
