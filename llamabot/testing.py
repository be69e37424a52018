"""Testing plugins: a bot on fake platforms with a scripted model, in a few lines.

    from llamabot.testing import BotHarness, ScriptedModel

    async def test_roll() -> None:
        async with BotHarness(dice.plugin) as harness:
            assert await harness.say("/roll 2d6") == ["You rolled 7."]

``BotHarness`` runs a real :class:`~llamabot.Bot` (router, access policy, flood control,
history in a temporary SQLite file, scheduler) with :class:`FakePlatform` adapters in
place of Discord, Telegram and the terminal, and :class:`ScriptedModel` in place of the
model. llamabot's own tests use the same pieces.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llamabot.adapters.base import BotHandle, DeliveryError, PlatformLimits
from llamabot.events import Author, ChannelRef, ImageRef, Inbound, SentMessage
from llamabot.llm.base import (
    ChatMessage,
    Delta,
    GenerationOptions,
    Health,
    ModelInfo,
    ToolCall,
    ToolSpec,
    estimate_tokens,
)

if TYPE_CHECKING:
    from llamabot.app import Bot
    from llamabot.plugins import Plugin


@dataclass
class Call:
    kind: str  # send | edit | typing
    channel: str
    message_id: str
    text: str
    at: float


@dataclass
class FakePlatform:
    """A chat platform in memory: an Adapter that keeps every message's current text and
    every call, with times. ``platform`` names the platform it plays ("console",
    "discord", "telegram"); ``say`` sends a message as a person would."""

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
    files: dict[str, bytes] = field(default_factory=dict)  # what fetch_image serves, by source
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # a send or an edit
    typed: asyncio.Event = field(default_factory=asyncio.Event)  # a typing indicator
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self, bot: BotHandle) -> None:
        self.bot = bot

    async def stop_receiving(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
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
        self.typed.set()

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        return user_id in self.moderators

    def mention(self, user_id: str, name: str) -> str:
        return f"@{name}"

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        from llamabot.images import ImageRejected, too_large

        data = self.files.get(image.source)
        if data is None:
            raise ImageRejected("That image is gone; please send it again.")
        if len(data) > max_bytes:
            raise too_large(max_bytes)
        return data

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
        moderator: bool | None = None,
        images: Sequence[bytes] = (),
        title: str | None = None,
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
            author=Author(
                id=user, name=user.title(), username=username, roles=roles, is_moderator=moderator
            ),
            text=text,
            message_id=f"in-{len(self.calls)}-{time.monotonic_ns()}",
            addressed=addressed,
            images=tuple(self._keep(data) for data in images),
            chat_title=title,
        )
        return self.bot.submit(inbound, self)

    def _keep(self, data: bytes) -> ImageRef:
        source = f"fake://{len(self.files) + 1}"
        self.files[source] = data
        return ImageRef(source, size=len(data))


@dataclass
class ModelCall:
    model: str
    messages: list[ChatMessage]
    options: GenerationOptions
    tools: list[ToolSpec] = field(default_factory=list)

    @property
    def system(self) -> str:
        return self.messages[0].content if self.messages[0].role == "system" else ""

    @property
    def last_user(self) -> str:
        return next(m.content for m in reversed(self.messages) if m.role == "user")


def echo(call: ModelCall) -> str:
    """The default script: answer with the last user message, echoed."""
    return f"echo: {call.last_user}"


@dataclass
class ScriptedModel:
    """A ChatModel that answers ``reply(call)`` in chunks of ``chunk`` characters.

    ``reply`` may also return tool calls (a list of ``ToolCall``), which are yielded
    as the model's call of those tools. ``gate``, when set, is awaited before the first
    delta: a test can hold a generation open and release it. ``error`` is raised after
    ``error_after`` deltas. ``tools_able`` / ``vision_able`` are what ``supports_tools``
    / ``supports_vision`` answer.
    """

    reply: Callable[[ModelCall], str | list[ToolCall]] = echo
    tools_able: bool = True
    vision_able: bool = True
    chunk: int = 8
    gate: asyncio.Event | None = None
    error: Exception | None = None
    error_after: int = 0
    name: str = "scripted"
    calls: list[ModelCall] = field(default_factory=list)
    call_started: asyncio.Event = field(default_factory=asyncio.Event)
    timeouts: tuple[float, float] | None = None

    async def stream_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]:
        call = ModelCall(model, list(messages), options, list(tools))
        self.calls.append(call)
        self.call_started.set()
        if self.gate is not None:
            await self.gate.wait()
        text = self.reply(call)
        if isinstance(text, list):
            for tool_call in text:
                yield tool_call
            return
        for index, start in enumerate(range(0, len(text), self.chunk)):
            if self.error is not None and index >= self.error_after:
                raise self.error
            yield text[start : start + self.chunk]
            await asyncio.sleep(0)
        if self.error is not None and len(text) <= self.error_after * self.chunk:
            raise self.error

    async def supports_tools(self, model: str) -> bool:
        return self.tools_able

    async def supports_vision(self, model: str) -> bool:
        return self.vision_able

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def served_model(self, requested: str) -> str:
        return requested

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        self.timeouts = (first_token_s, idle_s)

    async def context_length(self, model: str) -> int | None:
        return None

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(name="scripted")]

    async def health(self) -> Health:
        return Health(ok=True, detail="scripted model")

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        return {}

    def install_hint(self, model: str) -> str:
        return f"script a reply for {model}"

    async def aclose(self) -> None:
        return None


# What each fake platform allows; no edit interval, so tests do not wait on one.
PLATFORM_LIMITS = {
    "console": PlatformLimits(max_chars=100_000, edit_interval_s=0.0),
    "discord": PlatformLimits(max_chars=2000, edit_interval_s=0.0),
    "telegram": PlatformLimits(max_chars=4096, edit_interval_s=0.0),
}


class BotHarness:
    """A running bot with your plugins on fake Discord, Telegram and console platforms.

    ``config`` is bot.toml text (personas, ``[plugins.NAME]`` settings, limits); the
    harness adds a temporary SQLite history and ``admins`` (``"platform:user"``). The
    bundled plugins are loaded too when ``bundled`` is true. Use as
    ``async with BotHarness(plugin) as harness:``; ``say`` returns what the bot answered.
    """

    def __init__(
        self,
        *plugins: Plugin[Any],
        model: ScriptedModel | None = None,
        config: str = "",
        admins: Sequence[str] = (),
        bundled: bool = False,
    ) -> None:
        self.model = model or ScriptedModel()
        self._plugins = plugins
        self._config_text = config
        self._admins = list(admins)
        self._bundled = bundled
        self.platforms = {
            name: FakePlatform(name, limits) for name, limits in PLATFORM_LIMITS.items()
        }
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._bot: Bot | None = None

    @property
    def bot(self) -> Bot:
        """The running bot."""
        if self._bot is None:
            raise RuntimeError("enter the harness first: async with BotHarness(...) as harness")
        return self._bot

    @property
    def config_path(self) -> Path:
        """The harness's bot.toml (admin commands that edit it change this file)."""
        assert self._folder is not None
        return Path(self._folder.name) / "bot.toml"

    async def __aenter__(self) -> BotHarness:
        import tomlkit

        from llamabot.app import Bot
        from llamabot.config import load_config
        from llamabot.plugin_host import PluginHost
        from llamabot.plugin_loader import load_plugins

        self._folder = tempfile.TemporaryDirectory(prefix="llamabot-test-")
        folder = Path(self._folder.name)
        document = tomlkit.parse(self._config_text)
        storage = document.setdefault("storage", tomlkit.table())
        storage.setdefault("url", f"sqlite+aiosqlite:///{folder / 'bot.db'}")
        bot_table = document.setdefault("bot", tomlkit.table())
        bot_table["admins"] = [*bot_table.get("admins", []), *self._admins]
        document.setdefault("plugins", tomlkit.table()).setdefault("dirs", [])
        self.config_path.write_text(tomlkit.dumps(document), encoding="utf-8")
        config = load_config(self.config_path)
        host = load_plugins(config, folder) if self._bundled else PluginHost()
        for plugin in self._plugins:
            host.add(plugin, f"test plugin {plugin.name}", config)
        self._bot = Bot(
            config,
            config_path=self.config_path,
            model=self.model,
            adapters=list(self.platforms.values()),
            plugins=host,
        )
        try:
            await self._bot.__aenter__()
        except BaseException:
            self._folder.cleanup()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._bot is not None:
                await self._bot.__aexit__(exc_type, exc, tb)
        finally:
            if self._folder is not None:
                self._folder.cleanup()

    async def say(
        self,
        text: str,
        *,
        platform: str = "console",
        user: str = "alice",
        group: bool = False,
        chat: str | None = None,
        addressed: bool = True,
        moderator: bool | None = None,
        roles: tuple[str, ...] = (),
    ) -> list[str]:
        """Send ``text`` as ``user`` (in a private chat, or a group with ``group``) and
        wait until the bot handled it; returns the bot's messages in that chat since."""
        adapter = self.platforms[platform]
        where = chat or ("group" if group else f"dm-{user}")
        key = ChannelRef(platform, where).key
        before = len(adapter.messages_in(key))
        handled = adapter.say(
            text,
            chat=where,
            user=user,
            private=not group,
            addressed=addressed,
            roles=roles,
            moderator=moderator,
            guild="guild" if group and platform == "discord" else None,
        )
        await handled
        await self.bot.wait_idle()
        return adapter.messages_in(key)[before:]

    def messages(self, *, platform: str = "console", chat: str) -> list[str]:
        """Every message the bot has shown in ``chat`` of ``platform``, oldest first."""
        return self.platforms[platform].messages_in(ChannelRef(platform, chat).key)

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        platform: str = "console",
        user: str = "alice",
        group: bool = False,
    ) -> str:
        """Run tool ``name`` as the model would while answering ``user``; its result.

        The persona's tool list is not consulted: this tests the tool itself.
        """
        from llamabot.tools import run_tool

        bot = self.bot
        tool = bot.plugins.tools.get(name)
        if tool is None:
            raise LookupError(f"no loaded plugin offers a tool {name!r}")
        adapter = self.platforms[platform]
        channel = ChannelRef(platform, "group" if group else f"dm-{user}", is_private=not group)
        inbound = Inbound(channel, Author(user, user.title()), f"(a turn that called {name})")
        resolved = bot.config.persona_for(channel)
        ctx = bot.contexts.for_message(inbound, adapter, resolved, tool.plugin)
        return (await run_tool(tool, ctx, arguments, bot.config.tools.timeout_s)).text
