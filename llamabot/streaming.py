"""Platform-neutral reply streaming: throttled edits, and splitting past a message limit.

The model feeds text deltas into a :class:`ReplyStream`; one pump task brings the
platform up to date — send on the first text, edit at most once per ``edit_interval_s``,
continue in a new message past ``max_chars`` — so generation never waits on the network.
A reply that is whole before the first send is due needs no pump task: ``finish`` sends
it itself, in one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable

from llamabot.adapters.base import Adapter, DeliveryError
from llamabot.events import ChannelRef, SentMessage

log = logging.getLogger(__name__)

FENCE = "```"
RESTART_NOTICE = "[interrupted: the bot is restarting]"
# The person stopped the reply themselves (Ctrl-C in the terminal): also the cancel
# message that tells that apart from a stop.
STOPPED_NOTICE = "[interrupted]"
# How long, at stop, telling a person their reply was cut may take.
NOTICE_TIMEOUT_S = 5.0
# The first message waits this long after the first text for more of it: a reply that
# is done by then goes out whole in one request, with no edit (and no edit interval
# to wait out before the conversation's next message).
FIRST_SEND_HOLD_S = 0.25
_SENTENCE_END = re.compile(r"[.!?…][)\]\"'»]*\s+")


def _open_fence(text: str) -> str | None:
    """The language of a code block left open at the end of ``text`` ("" if none given)."""
    language: str | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped.startswith(FENCE):
            continue
        # An opening fence names the language; the next fence line closes the block.
        language = stripped[len(FENCE) :].strip() if language is None else None
    return language


def _best_cut(text: str, limit: int) -> int:
    """Where to end a message of at most ``limit`` characters.

    Prefers a paragraph, then a line, then a sentence, then a word boundary; the first
    three only in the second half of the message, so a message is never cut very short.
    """
    if len(text) <= limit:
        return len(text)
    window = text[:limit]
    half = limit // 2
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at >= half:
            return at + len(separator)
    sentence_ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if sentence_ends and sentence_ends[-1] >= half:
        return sentence_ends[-1]
    at = max(window.rfind(" "), window.rfind("\t"))
    if at > 0:
        return at + 1
    return limit


def take_piece(text: str, limit: int) -> tuple[str, int, str]:
    """Split off the first message of ``text``.

    Returns ``(piece, consumed, reopen)``: the message to send, how many characters of
    ``text`` it covers, and the text to start the next message with (a code block cut in
    two is closed at the end of the piece and reopened with its language).
    """
    if limit < 16:
        raise ValueError("a message limit under 16 characters cannot hold a code fence")
    cut = _best_cut(text, limit)
    language = _open_fence(text[:cut])
    if language is None:
        return text[:cut], cut, ""
    closing = "\n" + FENCE
    cut = _best_cut(text, limit - len(closing))
    head = text[:cut]
    language = _open_fence(head)
    if language is None:
        return head, cut, ""
    piece = head + (FENCE if head.endswith("\n") else closing)
    return piece, cut, f"{FENCE}{language}\n"


def split_message(text: str, limit: int) -> list[str]:
    """Split a whole text into messages of at most ``limit`` characters."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        piece, consumed, reopen = take_piece(rest, limit)
        pieces.append(piece)
        rest = reopen + rest[consumed:]
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


async def send_text(
    adapter: Adapter,
    to: ChannelRef,
    text: str,
    reply_to: str | None = None,
    *,
    only_author: bool = False,
) -> SentMessage | None:
    """Send a whole text at once (a notice, a command's answer, a reminder).

    ``only_author``: a notice for the author of ``reply_to`` alone, where the platform
    can show one (see ``Adapter.send``).

    It is split at the platform's limit; the first piece replies to ``reply_to``. Returns
    the first message, or ``None`` when the platform refused (logged, not raised). A
    reply to a message deleted meanwhile is the adapter's to handle: both platforms
    then post without the reply.
    """
    first: SentMessage | None = None
    try:
        for piece in split_message(text, adapter.limits.max_chars):
            answering = reply_to if first is None else None
            sent = await adapter.send(to, piece, reply_to=answering, only_author=only_author)
            first = first or sent
    except DeliveryError as exc:
        log.warning("could not post in %s: %s", to.key, exc)
    return first


class ReplyStream:
    """Streams one reply to one channel through an adapter.

    ``feed`` never waits on the platform; ``finish`` waits until the platform shows the
    whole reply. After ``finish``, ``messages`` lists every message the reply occupies.
    """

    def __init__(
        self,
        adapter: Adapter,
        to: ChannelRef,
        reply_to: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._adapter = adapter
        self._to = to
        self._reply_to = reply_to
        self._limits = adapter.limits
        self._clock = clock
        self._text = ""  # the whole reply so far, as the model wrote it
        self._consumed = 0  # characters of _text already in finished messages
        self._carry = ""  # text to begin the next message with (a reopened code fence)
        self._live: SentMessage | None = None
        self._live_shown = ""
        self._live_status = ""  # the status line at the end of _live_shown, if any
        self._status = ""
        self._last_edit = 0.0
        self._dirty = asyncio.Event()
        self._finished = False
        self._ended = asyncio.Event()  # set with _finished: ends the first-send hold early
        self._first_text_at: float | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._pump_timer: asyncio.TimerHandle | None = None  # the first send's hold
        self._typing_timer: asyncio.Handle | None = None  # until typing_after_s
        self._typing_task: asyncio.Task[None] | None = None
        self.messages: list[SentMessage] = []
        self.edits = 0  # edit requests made (for the metrics)
        self.delivery_failed: str | None = None

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return self._text

    def start(self) -> None:
        """Start the typing indicator (until the first message is sent); the pump starts
        once there is something to show."""
        if self._limits.typing_interval_s is None:
            return
        if self._limits.typing_after_s > 0:
            # Looked at once the model had its first turn: a reply whose text is there
            # by then (a quick model) needs no timer.
            loop = asyncio.get_running_loop()
            self._typing_timer = loop.call_soon(self._arm_typing, time.monotonic())
        else:
            self._begin_typing()

    def feed(self, delta: str) -> None:
        """Add model output; the platform catches up in the background."""
        if not delta or self._finished:
            return
        self._text += delta
        self._dirty.set()
        if self._first_text_at is None:
            self._first_text_at = time.monotonic()
            self._start_pump_after(self._first_hold_s())

    def set_status(self, line: str | None) -> None:
        """Show ``line`` below the reply until it is cleared with ``None`` (a tool call
        running). It is never part of ``text`` and is gone from the finished reply."""
        self._status = line or ""
        self._dirty.set()
        self._start_pump_after(0)

    def _status_suffix(self, pending: str) -> str:
        if not self._status or self._finished:
            return ""
        suffix = f"\n\n{self._status}" if pending.strip() else self._status
        return suffix if len(pending) + len(suffix) <= self._limits.max_chars else ""

    async def finish(self, suffix: str = "") -> None:
        """Add a last piece of text (a notice), then wait until the platform shows all."""
        if suffix:
            self._text += suffix
        self._finished = True
        self._ended.set()
        self._dirty.set()
        try:
            if self._pump_task is None:
                # Whole before the first send was due: sent from here, no task needed.
                self._cancel_pump_timer()
                await self._pump()
            else:
                await self._pump_task
        finally:
            await self._stop_typing()

    async def cancel(self, notice: str = RESTART_NOTICE) -> None:
        """The bot is stopping: end the reply with ``notice`` where the person sees it.

        Whatever was written so far stays; the notice is appended to it (or sent alone
        when nothing was). A request in flight is let finish rather than cut, so nothing
        is sent twice; all of it may take up to ``NOTICE_TIMEOUT_S``.
        """
        await self._stop_typing()
        if not self._finished:
            self._finished = True
            self._ended.set()
            if self.delivery_failed is None:
                self._text += f"\n\n{notice}" if self._text.strip() else notice
            self._dirty.set()
        self._start_pump_after(0)
        pump = self._pump_task
        if pump is None:
            return
        try:
            async with asyncio.timeout(NOTICE_TIMEOUT_S):
                await pump
        except TimeoutError:
            log.warning("could not tell %s in time that the reply was cut", self._to.key)

    def _first_hold_s(self) -> float:
        # Never longer than an edit would have to wait anyway.
        return min(FIRST_SEND_HOLD_S, self._limits.edit_interval_s)

    def _start_pump_after(self, delay_s: float) -> None:
        """Start the pump task in ``delay_s`` (at once for 0), unless it runs already."""
        if self._pump_task is not None:
            return
        if delay_s > 0:
            if self._pump_timer is None:
                loop = asyncio.get_running_loop()
                self._pump_timer = loop.call_later(delay_s, self._start_pump_after, 0)
            return
        self._cancel_pump_timer()
        self._pump_task = asyncio.create_task(self._pump(), name=f"reply:{self._to.key}")

    def _cancel_pump_timer(self) -> None:
        if self._pump_timer is not None:
            self._pump_timer.cancel()
            self._pump_timer = None

    def _arm_typing(self, started: float) -> None:
        """The typing indicator ``typing_after_s`` after ``started``, unless text came."""
        self._typing_timer = None
        if self._finished or self.messages or self._text:
            return
        due = started + self._limits.typing_after_s - time.monotonic()
        loop = asyncio.get_running_loop()
        self._typing_timer = loop.call_later(max(due, 0), self._begin_typing)

    def _begin_typing(self) -> None:
        self._typing_timer = None
        if self._typing_task is None and not (self._finished or self.messages or self._text):
            self._typing_task = asyncio.create_task(self._keep_typing())

    async def _keep_typing(self) -> None:
        interval = self._limits.typing_interval_s or 5.0
        # Once text came, the first message is on its way: no indicator for it.
        while self._live is None and not self.messages and not self._finished and not self._text:
            try:
                await self._adapter.typing(self._to)
            except Exception as exc:  # a typing indicator is never worth failing a reply
                log.debug("typing indicator failed in %s: %s", self._to.key, exc)
            await asyncio.sleep(interval)

    async def _stop_typing(self) -> None:
        """No typing indicator from now on, and wait for one running to end."""
        self._stop_typing_soon()
        if self._typing_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._typing_task
            self._typing_task = None

    async def _pump(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self.delivery_failed is None:
                await self._sync()
            if self._finished and not self._dirty.is_set():
                return

    def _pending(self) -> str:
        return self._carry + self._text[self._consumed :]

    async def _sync(self) -> None:
        limit = self._limits.max_chars
        while len(self._pending()) > limit:
            pending = self._pending()
            piece, consumed, reopen = take_piece(pending, limit)
            outcome = await self._show_final(piece)
            if outcome == "failed":
                return
            if outcome == "shown":
                self._consumed += consumed - len(self._carry)
                self._carry = reopen
        pending = self._pending()
        status = self._status_suffix(pending)
        shown = pending + status
        if not shown.strip():
            return
        if self._live is None:
            if await self._held_back():
                return
            if self._limits.supports_edit or self._finished:
                self._live = await self._send(shown)
                if self._live is not None:
                    self._live_shown = shown
                    self._live_status = status
                    self._last_edit = self._clock()
                    if not self._limits.supports_edit:
                        self._retire_live()
            return
        if shown == self._live_shown:
            return
        wait = self._last_edit + self._limits.edit_interval_s - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)
            self._dirty.set()  # more text may have come while waiting: re-sync first
            return
        await self._edit_live(shown, status)

    async def _held_back(self) -> bool:
        """Wait out the first-send hold, unless the reply ends first; whether it waited.

        Real time, not ``clock``: this is a wait, not a rate limit being measured.
        """
        if self.messages or self._finished or self._first_text_at is None:
            return False
        hold = self._first_text_at + self._first_hold_s() - time.monotonic()
        if hold <= 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(hold):
                await self._ended.wait()
        self._dirty.set()  # send now: with the whole reply, or what came meanwhile
        return True

    async def _show_final(self, piece: str) -> str:
        """Make the live message (or a new one) show ``piece`` for good.

        Returns ``shown``; ``retired`` when an edit failed and the live message was closed
        with what it showed; ``failed`` when nothing more can be delivered.
        """
        if self._live is None:
            if await self._send(piece) is None:
                return "failed"
        elif piece != self._live_shown:
            wait = self._last_edit + self._limits.edit_interval_s - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            if not await self._edit_live(piece):
                return "retired"
        self._live = None
        self._live_shown = ""
        self._live_status = ""
        return "shown"

    async def _edit_live(self, text: str, status: str = "") -> bool:
        assert self._live is not None
        try:
            self.edits += 1
            await self._adapter.edit(self._live, text)
        except DeliveryError as exc:
            # The message keeps what it showed; the rest continues in a new message.
            log.warning("edit failed in %s (%s); continuing in a new message", self._to.key, exc)
            self._retire_live()
            return False
        self._live_shown = text
        self._live_status = status
        self._last_edit = self._clock()
        return True

    def _retire_live(self) -> None:
        shown = self._live_shown[: len(self._live_shown) - len(self._live_status)]
        self._live_status = ""
        self._consumed += len(shown) - len(self._carry)
        language = _open_fence(shown)
        self._carry = "" if language is None else f"{FENCE}{language}\n"
        self._live = None
        self._live_shown = ""
        self._dirty.set()

    async def _send(self, text: str) -> SentMessage | None:
        reply_to = self._reply_to if not self.messages else None
        try:
            sent = await self._adapter.send(self._to, text, reply_to=reply_to)
        except DeliveryError as exc:
            log.warning("could not deliver a reply in %s: %s", self._to.key, exc)
            self.delivery_failed = str(exc)
            return None
        self.messages.append(sent)
        self._stop_typing_soon()
        return sent

    def _stop_typing_soon(self) -> None:
        """No typing indicator from now on: the timer dropped, one running cancelled."""
        if self._typing_timer is not None:
            self._typing_timer.cancel()
            self._typing_timer = None
        if self._typing_task is not None and not self._typing_task.done():
            self._typing_task.cancel()
