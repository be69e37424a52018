"""The one message model every part of llamabot shares: adapters normalise to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """Where a message was said: enough to answer there and to choose its persona.

    ``chat_id`` is the channel (Discord) or chat (Telegram); ``thread_id`` is a Discord
    thread or a Telegram forum topic inside it. A thread is its own conversation but
    inherits the chat's persona unless bound itself.
    """

    platform: str
    chat_id: str
    thread_id: str | None = None
    guild_id: str | None = None
    is_private: bool = False

    @property
    def key(self) -> str:
        """The conversation key: history, ordering and bindings hang off it."""
        if self.thread_id is None:
            return f"{self.platform}:{self.chat_id}"
        return f"{self.platform}:{self.chat_id}:{self.thread_id}"


@dataclass(frozen=True, slots=True)
class Author:
    """Who said it, as far as the access policy needs to know.

    ``id`` is the platform's user id as text; ``username`` the handle without ``@`` when
    the platform has one; ``roles`` the Discord role ids and names in this server;
    ``is_moderator`` whether the person administers this server or group (``None``: the
    adapter did not look; the router asks it when a command needs to know).
    """

    id: str
    name: str
    is_bot: bool = False
    username: str | None = None
    roles: tuple[str, ...] = ()
    is_moderator: bool | None = None

    def qualified_id(self, platform: str) -> str:
        """The ``platform:user_id`` form used by ``[bot] admins``."""
        return f"{platform}:{self.id}"


@dataclass(frozen=True, slots=True)
class ImageRef:
    """An image attached to a message, where the platform keeps it: ``source`` is a URL
    (Discord) or the platform's file id (Telegram); ``size`` in bytes when it said."""

    source: str
    mime: str | None = None
    size: int | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Invocation:
    """A command the platform itself parsed (a Discord slash command): its name and
    its options by parameter name, already typed (text, integers, numbers, booleans)."""

    name: str
    options: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from a person, as the core sees it after the adapter normalised it.

    ``text`` has the bot's own mention removed. ``addressed`` is true when the person
    spoke to the bot: a mention, or a reply to one of the bot's messages. A native
    command (``invocation``) is run as that command whatever ``text`` says. ``images``
    are the pictures attached (their caption is ``text``).
    """

    channel: ChannelRef
    author: Author
    text: str
    message_id: str | None = None
    addressed: bool = False
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    invocation: Invocation | None = None
    images: tuple[ImageRef, ...] = ()
    # What people call the chat ("#general (Llama fans)", a group's title), for the
    # admin page; None where the platform has no name for it.
    chat_title: str | None = None


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message the bot sent, as the adapter needs it to edit it later."""

    channel: ChannelRef
    message_id: str
