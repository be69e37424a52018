"""The terminal as a chat platform: one person, one conversation, replies streamed in place.

Three ways to talk to it:

- **interactive** (stdin and stdout are a terminal): a prompt_toolkit prompt with line
  editing. Ctrl-C during a reply stops it (the text so far is kept, marked and stored as
  ``interrupted``); Ctrl-C at the prompt clears the line, a second one (or Ctrl-D)
  quits. Messages that arrive while the person types (a reminder) print above the
  prompt, which is drawn again below them.
- **plain piped**: one input line, one reply block. A block is the reply's text followed
  by one empty line; empty lines inside a reply are printed as a single space, so the
  first truly empty line ends the block. Every non-empty input line gets a block.
- **JSON lines** (``jsonl=True``): one JSON object per input line (and per message the
  bot sends on its own): ``text``, ``status``, ``tokens``, ``seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TextIO

from llamabot.adapters.base import BotHandle, PlatformLimits
from llamabot.events import Author, ChannelRef, ImageRef, Inbound, SentMessage
from llamabot.images import ImageRejected

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

    from llamabot.storage.history import HistoryStore, StoredMessage

# Status of a JSON line whose text did not come from the model: a command's answer, a
# refusal, a notice, a reminder.
NOTICE = "notice"

_BOLD_CYAN, _DIM, _RESET = "\x1b[1;36m", "\x1b[2m", "\x1b[0m"
_EMPTY_LINE = re.compile(r"\n(?=\n)")


def readable(line: str) -> str:
    """Input as text: bytes that were not UTF-8 become U+FFFD instead of an error.

    Terminals hand undecodable bytes over as surrogate escapes; they cannot be stored.
    """
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@contextlib.contextmanager
def _logs_through(stream: TextIO) -> Iterator[None]:
    """Send log lines meant for the real stderr to ``stream`` for a while.

    Logging's handlers hold the stderr of start-up; inside ``patch_stdout`` a warning
    must go through prompt_toolkit's proxy too, or it lands on the prompt line.
    """
    original = sys.__stderr__
    swapped = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is original
    ]
    for handler in swapped:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler in swapped:
            handler.setStream(original)


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
        jsonl: bool = False,
    ) -> None:
        self._stdin = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._jsonl = jsonl
        self._interactive = not jsonl and self._stdin.isatty() and self._out.isatty()
        self._bot_name = bot_name
        self._channel = ChannelRef(platform="console", chat_id=channel, is_private=True)
        user = getpass.getuser()
        self._author = Author(id=user, name=user)
        self._bot: BotHandle | None = None
        self._ids = itertools.count(1)
        self._shown: dict[str, str] = {}
        self._reading = False  # waiting for the person's next line
        self._answering = False  # handling a line of the person's
        self._unprompted: set[str] = set()
        self._interrupted = False
        self._last_char = "\n"
        self._output_closed = False
        self._session: PromptSession[str] | None = None

    @property
    def channel(self) -> ChannelRef:
        return self._channel

    async def start(self, bot: BotHandle) -> None:
        self._bot = bot

    async def stop_receiving(self) -> None:
        return None  # the console reads only while chat() runs

    async def stop(self) -> None:
        with contextlib.suppress(BrokenPipeError):
            self._out.flush()

    # -- Adapter: what the bot says --------------------------------------------------

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        message_id = str(next(self._ids))
        if self._reading:
            self._unprompted.add(message_id)
            self._say_unprompted(text)
            return SentMessage(to, message_id)
        if self._answering and self._shown and not self._jsonl:
            self._write_reply("\n")  # a second message answering the same line
        self._shown[message_id] = text
        if self._interactive:
            self._write(f"{_BOLD_CYAN}{self._bot_name}{_RESET}: ")
        self._write_reply(text)
        return SentMessage(to, message_id)

    async def edit(self, sent: SentMessage, text: str) -> None:
        shown = self._shown.get(sent.message_id, "")
        self._shown[sent.message_id] = text
        if sent.message_id in self._unprompted:
            return  # it was printed whole, above the prompt or as a block of its own
        self._write_reply(text[len(shown) :] if text.startswith(shown) else "\n" + text)

    async def typing(self, to: ChannelRef) -> None:
        return None

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        return True  # the terminal is the admin's own

    def mention(self, user_id: str, name: str) -> str:
        return name  # one person at the terminal: no one to notify but them

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        raise ImageRejected("The terminal chat takes text only.")

    def _say_unprompted(self, text: str) -> None:
        """A message that answers no line of the person's (a reminder, a job's post)."""
        if self._jsonl:
            self._write_json(text, NOTICE, None, None)
        elif self._interactive:
            # Written through patch_stdout: it lands above the prompt, which is redrawn.
            self._write(f"{_BOLD_CYAN}{self._bot_name}{_RESET}: {text}\n")
        else:
            self._last_char = "\n"
            self._write_reply(text)
            self._end_block()

    # -- writing ---------------------------------------------------------------------

    def _terminal(self) -> TextIO:
        # While the prompt is on screen, write through prompt_toolkit's stdout proxy (it
        # prints above the prompt and redraws it); otherwise straight to the terminal.
        prompting = self._session is not None and self._session.app.is_running
        return sys.stdout if prompting else self._out

    def _write(self, text: str) -> None:
        if self._output_closed or not text:
            return
        try:
            out = self._terminal()
            out.write(text)
            out.flush()
        except BrokenPipeError:
            # The reader went away (`llamabot chat | head`): stop the reply as Ctrl-C
            # would, quietly; the chat loop then ends.
            self._output_closed = True
            if self._bot is not None:
                self._bot.interrupt(self._channel.key)

    def _write_reply(self, text: str) -> None:
        if self._jsonl or not text:
            return
        if not self._interactive:
            # Plain piped framing: an empty line ends a reply, so inside one it is " ".
            text = _EMPTY_LINE.sub("\n ", text)
            if self._last_char == "\n" and text.startswith("\n"):
                text = " " + text
        self._write(text)
        self._last_char = text[-1]

    def _end_block(self) -> None:
        if self._jsonl:
            return
        ending = "" if self._last_char == "\n" else "\n"
        self._write(ending if self._interactive else ending + "\n")
        self._last_char = "\n"

    def _write_json(
        self, text: str, status: str, tokens: int | None, seconds: float | None
    ) -> None:
        record = {"text": text, "status": status, "tokens": tokens, "seconds": seconds}
        self._write(json.dumps(record, ensure_ascii=False) + "\n")

    # -- reading ---------------------------------------------------------------------

    async def _read_piped(self) -> str | None:
        buffer = getattr(self._stdin, "buffer", None)
        if buffer is None:  # a text stream (tests, embedders): already decoded
            line = await asyncio.to_thread(self._stdin.readline)
        else:
            raw: bytes = await asyncio.to_thread(buffer.readline)
            line = raw.decode(getattr(self._stdin, "encoding", None) or "utf-8", "replace")
        return readable(line.rstrip("\r\n")) if line else None

    async def _prompt(self) -> str | None:
        """One line from the person; ``None`` once they quit (Ctrl-D, or Ctrl-C twice)."""
        assert self._session is not None
        from prompt_toolkit.formatted_text import FormattedText

        message = FormattedText([("class:you", "you"), ("", ": ")])
        armed = False
        while True:
            try:
                line = await self._session.prompt_async(message, handle_sigint=False)
            except EOFError:
                return None
            except KeyboardInterrupt:
                # Ctrl-C clears the line; pressed again on the empty line, it quits.
                if armed and not self._session.default_buffer.text:
                    return None
                armed = True
                self._write(f"{_DIM}(Ctrl-C again or Ctrl-D to quit){_RESET}\n")
                continue
            return readable(line)

    # -- the conversation ------------------------------------------------------------

    async def chat(self, history: HistoryStore | None = None) -> None:
        """Run the conversation until end of input: one line, one message.

        ``history`` lets JSON lines report the stored status and token count of replies.
        A closed output ends the chat with :class:`BrokenPipeError`.
        """
        if self._bot is None:
            raise RuntimeError("start the adapter before chatting")
        if not self._interactive:
            while (line := await self._next_line()) is not None:
                if line.strip():
                    await self._answer(line, history)
                if self._output_closed:
                    raise BrokenPipeError("the output was closed")
            return
        self._write(
            f"{_DIM}Chatting with {self._bot_name} in console:{self._channel.chat_id}. "
            f"/help for commands; Ctrl-C stops a reply; Ctrl-D quits.{_RESET}\n"
        )
        with self._terminal_session():
            while (line := await self._next_line()) is not None:
                if line.strip():
                    await self._answer(line, history)
                if self._output_closed:
                    raise BrokenPipeError("the output was closed")

    async def _next_line(self) -> str | None:
        """The person's next line; what the bot sends meanwhile answers none of theirs."""
        self._reading = True
        try:
            return await (self._prompt() if self._interactive else self._read_piped())
        finally:
            self._reading = False

    @contextlib.contextmanager
    def _terminal_session(self) -> Iterator[None]:
        """prompt_toolkit owns the terminal; SIGINT (Ctrl-C) stops the reply in progress."""
        from prompt_toolkit import PromptSession
        from prompt_toolkit.input import create_input
        from prompt_toolkit.output import create_output
        from prompt_toolkit.patch_stdout import patch_stdout
        from prompt_toolkit.styles import Style

        self._session = PromptSession(
            input=create_input(self._stdin),
            output=create_output(self._out),
            style=Style.from_dict({"you": "bold ansigreen"}),
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        try:
            with patch_stdout(raw=True), _logs_through(sys.stderr):
                yield
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            self._session = None

    def _on_sigint(self) -> None:
        # While the prompt runs, the terminal is raw and Ctrl-C is a key, not a signal.
        if self._bot is not None and self._answering and not self._interrupted:
            self._interrupted = self._bot.interrupt(self._channel.key)
        elif self._session is not None and self._session.app.is_running:
            self._session.app.exit(exception=KeyboardInterrupt())

    async def _answer(self, line: str, history: HistoryStore | None) -> None:
        assert self._bot is not None
        conversation = await history.conversation_id(self._channel) if history else None
        before = await self._last(history, conversation)
        inbound = Inbound(channel=self._channel, author=self._author, text=line)
        self._shown.clear()
        self._answering, self._interrupted = True, False
        started = time.monotonic()
        try:
            await self._bot.submit(inbound, self)
        finally:
            self._answering = False
        seconds = round(time.monotonic() - started, 3)
        if self._jsonl:
            after = await self._last(history, conversation)
            status, tokens = self._outcome(before, after)
            text = "\n".join(self._shown.values())
            self._write_json(text, status, tokens, seconds)
        else:
            self._end_block()

    @staticmethod
    async def _last(history: HistoryStore | None, conversation: int | None) -> StoredMessage | None:
        if history is None or conversation is None:
            return None
        return await history.last_message(conversation)

    def _outcome(
        self, before: StoredMessage | None, after: StoredMessage | None
    ) -> tuple[str, int | None]:
        """The status and token count a JSON line reports, from what was stored."""
        if after is None or (before is not None and after.id == before.id):
            return NOTICE, None
        if after.role == "assistant":
            return after.status, after.tokens
        # The person's message was stored but no reply was.
        return ("interrupted" if self._interrupted else "failed"), 0
