"""What a chat platform is to the core: the Adapter protocol and its limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llamabot.config import Permission
    from llamabot.events import ChannelRef, ImageRef, Inbound, SentMessage
    from llamabot.metrics import Metrics
    from llamabot.plugins import CommandOption, Where


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
    """A command as a platform's command menu (or native command form) shows it.

    ``permission`` is the one in force (``[access.commands]`` applied); ``where`` says
    whether it works in private chats, groups or both.
    """

    name: str
    description: str
    usage: str = ""
    options: tuple[CommandOption, ...] = ()
    permission: Permission = "everyone"
    where: Where = "anywhere"


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

    @property
    def command_prefix(self) -> str:
        """What text commands start with (``[bot] command_prefix``)."""
        ...

    def submit(self, inbound: Inbound, adapter: Adapter) -> asyncio.Future[None]:
        """Queue a message; the future completes when it has been handled."""
        ...

    async def accept(self, inbound: Inbound, adapter: Adapter) -> None:
        """Queue a platform message durably; confirm it to the platform only after this."""
        ...

    def command_specs(self) -> list[CommandSpec]:
        """The commands a platform should advertise in its menu."""
        ...

    async def autocomplete(
        self, inbound: Inbound, adapter: Adapter, command: str, option: str, typed: str
    ) -> list[str | int | float]:
        """Suggestions for ``option`` of ``command`` while the person types ``typed``."""
        ...

    async def recall(self, key: str) -> str | None:
        """A value an adapter kept across restarts with ``remember`` (None if none)."""
        ...

    async def remember(self, key: str, value: str) -> None:
        """Keep a small value across restarts (e.g. what was registered with a platform)."""
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

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        """Post ``text`` in ``to``, replying to ``reply_to``. ``only_author`` marks a notice
        meant for the author of ``reply_to`` alone (a refusal); a platform that can show
        a message to one person only (Discord, answering a slash command) does."""
        ...

    async def edit(self, sent: SentMessage, text: str) -> None: ...

    async def typing(self, to: ChannelRef) -> None: ...

    def mention(self, user_id: str, name: str) -> str:
        """How to name a person in text the bot writes itself (a reminder) so that the
        platform notifies them."""
        ...

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        """The bytes of an image a person sent, at most ``max_bytes`` (checked while
        downloading); raises :class:`~llamabot.images.ImageRejected` otherwise."""
        ...

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        """Whether the person administers this server or group (asked only when a command
        needs it and the adapter could not tell when it built the ``Inbound``)."""
        ...
