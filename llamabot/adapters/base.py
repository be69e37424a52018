"""What a chat platform is to the core: the Adapter protocol and its limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llamabot.events import ChannelRef, Inbound, SentMessage
    from llamabot.metrics import Metrics


@dataclass(frozen=True, slots=True)
class PlatformLimits:
    """How a platform wants replies streamed.

    ``max_chars`` is the longest message; ``edit_interval_s`` the shortest time between
    two edits of one message; ``typing_interval_s`` how often the typing indicator must
    be renewed while waiting for the first token (``None``: no indicator), and
    ``typing_after_s`` how long to wait for it before showing the indicator at all.
    """

    max_chars: int
    edit_interval_s: float
    supports_edit: bool = True
    typing_interval_s: float | None = None
    # The indicator starts only when no text came this long after the message: a quick
    # reply costs one request, not two.
    typing_after_s: float = 0.5


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command as a platform's command menu shows it."""

    name: str
    description: str
    usage: str = ""


class DeliveryError(Exception):
    """The platform refused a send or an edit.

    ``permanent`` is true when retrying cannot help (no permission, blocked by the user).
    """

    def __init__(self, detail: str, *, permanent: bool = False) -> None:
        super().__init__(detail)
        self.permanent = permanent


class BotHandle(Protocol):
    """What an adapter may ask of the running bot."""

    metrics: Metrics

    def submit(self, inbound: Inbound, adapter: Adapter) -> asyncio.Future[None]:
        """Queue a message; the future completes when it has been handled."""
        ...

    async def accept(self, inbound: Inbound, adapter: Adapter) -> None:
        """Queue a platform message durably; confirm it to the platform only after this."""
        ...

    def command_specs(self) -> list[CommandSpec]:
        """The commands a platform should advertise in its menu."""
        ...

    def interrupt(self, key: str) -> bool:
        """Stop the reply being written in conversation ``key`` (kept as ``interrupted``)."""
        ...


class Adapter(Protocol):
    """A chat platform. It turns platform events into ``Inbound`` and sends replies."""

    platform: str
    limits: PlatformLimits

    async def start(self, bot: BotHandle) -> None: ...

    async def stop_receiving(self) -> None:
        """Take no more messages (the bot is stopping); sending still works."""
        ...

    async def stop(self) -> None: ...

    async def send(self, to: ChannelRef, text: str, reply_to: str | None = None) -> SentMessage: ...

    async def edit(self, sent: SentMessage, text: str) -> None: ...

    async def typing(self, to: ChannelRef) -> None: ...

    def mention(self, user_id: str, name: str) -> str:
        """How to name a person in text the bot writes itself (a reminder) so that the
        platform notifies them."""
        ...

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        """Whether the person administers this server or group (asked only when a command
        needs it and the adapter could not tell when it built the ``Inbound``)."""
        ...
