"""An in-process chat platform for core tests: records what a person would see."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from llamabot.adapters.base import BotHandle, DeliveryError, PlatformLimits
from llamabot.events import Author, ChannelRef, Inbound, SentMessage


@dataclass
class Call:
    kind: str  # send | edit | typing
    channel: str
    message_id: str
    text: str
    at: float


@dataclass
class RecordingAdapter:
    """An Adapter that keeps every message's current text and every call, with times."""

    platform: str = "console"
    limits: PlatformLimits = field(
        default_factory=lambda: PlatformLimits(max_chars=2000, edit_interval_s=0.0)
    )
    calls: list[Call] = field(default_factory=list)
    shown: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # message ids in send order
    fail_edits: int = 0  # the next N edits raise DeliveryError
    bot: BotHandle | None = None
    moderators: set[str] = field(default_factory=set)  # user ids is_moderator answers yes for
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self, bot: BotHandle) -> None:
        self.bot = bot

    async def stop_receiving(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(self, to: ChannelRef, text: str, reply_to: str | None = None) -> SentMessage:
        message_id = str(next(self._ids))
        self.shown[message_id] = text
        self.order.append(message_id)
        self.calls.append(Call("send", to.key, message_id, text, time.monotonic()))
        self.changed.set()
        return SentMessage(to, message_id)

    async def edit(self, sent: SentMessage, text: str) -> None:
        if self.fail_edits:
            self.fail_edits -= 1
            raise DeliveryError("rate limited")
        self.shown[sent.message_id] = text
        self.calls.append(Call("edit", sent.channel.key, sent.message_id, text, time.monotonic()))
        self.changed.set()

    async def typing(self, to: ChannelRef) -> None:
        self.calls.append(Call("typing", to.key, "", "", time.monotonic()))

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        return user_id in self.moderators

    def mention(self, user_id: str, name: str) -> str:
        return f"@{name}"

    def messages_in(self, key: str) -> list[str]:
        """The current text of every message in a channel, in the order they were sent."""
        sent = {c.message_id for c in self.calls if c.kind == "send" and c.channel == key}
        return [self.shown[m] for m in self.order if m in sent]

    def say(
        self,
        text: str,
        *,
        chat: str = "local",
        user: str = "alice",
        private: bool = True,
        addressed: bool = False,
        thread: str | None = None,
        guild: str | None = None,
        username: str | None = None,
        roles: tuple[str, ...] = (),
    ) -> asyncio.Future[None]:
        """Submit a message as a person would, through the running bot."""
        assert self.bot is not None, "start the bot first"
        channel = ChannelRef(
            platform=self.platform,
            chat_id=chat,
            thread_id=thread,
            guild_id=guild,
            is_private=private,
        )
        inbound = Inbound(
            channel=channel,
            author=Author(id=user, name=user.title(), username=username, roles=roles),
            text=text,
            message_id=f"in-{len(self.calls)}-{time.monotonic_ns()}",
            addressed=addressed,
        )
        return self.bot.submit(inbound, self)
