"""The terminal as a chat platform: one person, one conversation, replies streamed in place."""

from __future__ import annotations

import asyncio
import getpass
import itertools
import sys
from typing import TextIO

from rich.console import Console

from llamabot.adapters.base import BotHandle, PlatformLimits
from llamabot.events import Author, ChannelRef, Inbound, SentMessage


class ConsoleAdapter:
    """Reads lines from stdin, prints replies as they stream.

    Streaming maps onto a terminal as appending: an edit prints only what the message
    gained since the last one, so the reply grows token by token.
    """

    platform = "console"
    limits = PlatformLimits(max_chars=1_000_000, edit_interval_s=0.0)

    def __init__(
        self,
        channel: str = "local",
        *,
        bot_name: str = "Llama",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self._stdin = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._interactive = self._stdin.isatty() and self._out.isatty()
        self._console = Console(file=self._out, highlight=False)
        self._bot_name = bot_name
        self._channel = ChannelRef(platform="console", chat_id=channel, is_private=True)
        user = getpass.getuser()
        self._author = Author(id=user, name=user)
        self._bot: BotHandle | None = None
        self._ids = itertools.count(1)
        self._shown: dict[str, str] = {}

    @property
    def channel(self) -> ChannelRef:
        return self._channel

    async def start(self, bot: BotHandle) -> None:
        self._bot = bot

    async def stop_receiving(self) -> None:
        return None  # the console reads only while chat() runs

    async def stop(self) -> None:
        self._out.flush()

    async def send(self, to: ChannelRef, text: str, reply_to: str | None = None) -> SentMessage:
        message_id = str(next(self._ids))
        if self._interactive:
            self._console.print(f"[bold cyan]{self._bot_name}[/]: ", end="")
        self._write(text)
        self._shown[message_id] = text
        return SentMessage(to, message_id)

    async def edit(self, sent: SentMessage, text: str) -> None:
        shown = self._shown.get(sent.message_id, "")
        self._write(text[len(shown) :] if text.startswith(shown) else "\n" + text)
        self._shown[sent.message_id] = text

    async def typing(self, to: ChannelRef) -> None:
        return None

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    async def _read_line(self) -> str | None:
        if self._interactive:
            try:
                return await asyncio.to_thread(self._console.input, "[bold green]you[/]: ")
            except EOFError:
                return None
        line = await asyncio.to_thread(self._stdin.readline)
        return line.rstrip("\r\n") if line else None

    async def chat(self) -> None:
        """Run the conversation until end of input: one line, one message."""
        if self._bot is None:
            raise RuntimeError("start the adapter before chatting")
        if self._interactive:
            self._console.print(
                f"[dim]Chatting with {self._bot_name} in console:{self._channel.chat_id}. "
                "Ctrl-D to quit, /help for commands.[/]"
            )
        while (line := await self._read_line()) is not None:
            if not line.strip():
                continue
            inbound = Inbound(channel=self._channel, author=self._author, text=line)
            self._shown.clear()
            await self._bot.submit(inbound, self)
            if self._shown:
                self._write("\n")
