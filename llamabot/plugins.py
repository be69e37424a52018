"""The plugin API: ``Plugin`` objects with decorated commands, hooks and jobs.

A plugin module defines ``plugin = Plugin("name", ...)`` and registers by decorator on
it. Nothing reaches the bot until the whole module imported and its config validated,
so a broken plugin never leaves half its commands behind.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from llamabot.config import Resolved
    from llamabot.events import Inbound
    from llamabot.scheduler import Scheduler
    from llamabot.storage.history import HistoryStore

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])


class UsageError(Exception):
    """The arguments do not fit the command; the person is shown its usage line."""


@dataclass(frozen=True)
class Command:
    """A command a plugin registered."""

    name: str
    handler: Handler
    usage: str
    description: str
    admin: bool
    plugin: str

    def usage_line(self, prefix: str) -> str:
        """``/name usage`` as the person should type it."""
        return f"{prefix}{self.name} {self.usage}".rstrip()

    def parse(self, argument_text: str) -> list[Any]:
        """Turn the words after the command into the handler's typed arguments."""
        words = argument_text.split()
        parameters = list(inspect.signature(self.handler).parameters.values())[1:]
        values: list[Any] = []
        for parameter in parameters:
            kind = _annotation_type(parameter.annotation)
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                values.extend(_convert(word, kind) for word in words)
                words = []
                break
            if not words:
                if parameter.default is inspect.Parameter.empty:
                    raise UsageError(f"missing {parameter.name}")
                values.append(parameter.default)
                continue
            values.append(_convert(words.pop(0), kind))
        if words:
            raise UsageError("too many arguments")
        return values


def _annotation_type(annotation: Any) -> type:
    names = {"int": int, "float": float, "str": str}
    if isinstance(annotation, str):
        return names.get(annotation.split("|")[0].strip(), str)
    if annotation in (int, float):
        return annotation  # type: ignore[no-any-return]
    return str


def _convert(word: str, kind: type) -> Any:
    try:
        return kind(word)
    except ValueError:
        raise UsageError(f"{word!r} is not a {kind.__name__}") from None


@dataclass(frozen=True)
class Job:
    """A recurring job: ``cron`` (crontab text) or ``interval`` (seconds)."""

    func: Callable[..., Awaitable[None]]
    cron: str | None
    interval: float | None
    plugin: str

    @property
    def id(self) -> str:
        return f"{self.plugin}.{self.func.__name__}"


class Plugin:
    """A plugin: commands, hooks and jobs, registered by decorator.

    ``config`` is an optional pydantic model; the ``[plugins.<name>]`` table of bot.toml
    is validated against it and handed to the plugin's handlers as ``ctx.config``.
    """

    def __init__(
        self, name: str, *, description: str = "", config: type[BaseModel] | None = None
    ) -> None:
        self.name = name
        self.description = description
        self.config_model = config
        self.commands: list[Command] = []
        self.message_hooks: list[Callable[..., Awaitable[bool | None]]] = []
        self.reply_hooks: list[Callable[..., Awaitable[None]]] = []
        self.jobs: list[Job] = []
        self.start_hooks: list[Callable[..., Awaitable[None]]] = []
        self.stop_hooks: list[Callable[..., Awaitable[None]]] = []

    def command(
        self, name: str, *, usage: str = "", description: str | None = None, admin: bool = False
    ) -> Callable[[F], F]:
        """Register ``async def handler(ctx, *args)`` for ``/name``.

        The handler's parameters after ``ctx`` declare its arguments (``str``, ``int`` or
        ``float``; ``*rest`` takes the remaining words). ``admin=True`` commands answer
        only to ``[bot] admins``.
        """

        def register(func: F) -> F:
            doc = (inspect.getdoc(func) or "").split("\n")[0]
            self.commands.append(
                Command(
                    name=name.lower(),
                    handler=func,
                    usage=usage,
                    description=description if description is not None else doc,
                    admin=admin,
                    plugin=self.name,
                )
            )
            return func

        return register

    def on_message(self, func: F) -> F:
        """See every message before the model; return True when the hook answered it."""
        self.message_hooks.append(func)
        return func

    def on_reply(self, func: F) -> F:
        """See the model's finished reply: ``async def hook(ctx, reply_text)``."""
        self.reply_hooks.append(func)
        return func

    def job(self, *, cron: str | None = None, interval: float | None = None) -> Callable[[F], F]:
        """Run ``async def job(ctx)`` on a crontab schedule or every ``interval`` seconds."""
        if (cron is None) == (interval is None):
            raise ValueError("a job needs exactly one of cron= or interval=")

        def register(func: F) -> F:
            self.jobs.append(Job(func=func, cron=cron, interval=interval, plugin=self.name))
            return func

        return register

    def on_start(self, func: F) -> F:
        """Run ``async def hook(ctx)`` when the bot has started."""
        self.start_hooks.append(func)
        return func

    def on_stop(self, func: F) -> F:
        """Run ``async def hook(ctx)`` when the bot stops."""
        self.stop_hooks.append(func)
        return func


@dataclass
class PluginServices:
    """What a plugin may use: the store, the scheduler, its config, the bot's settings."""

    store: HistoryStore
    scheduler: Scheduler | None
    config: BaseModel | None
    bot: Any = None


@dataclass
class CommandContext:
    """What a command or message hook receives."""

    inbound: Inbound
    persona: Resolved
    store: HistoryStore
    scheduler: Scheduler | None
    config: BaseModel | None
    reply_func: Callable[[str], Awaitable[None]]
    bot: Any = None
    replies: list[str] = field(default_factory=list)

    @property
    def conversation_key(self) -> str:
        return self.inbound.channel.key

    @property
    def is_admin(self) -> bool:
        settings = getattr(self.bot, "config", None)
        if settings is None:
            return False
        platform = self.inbound.channel.platform
        return bool(settings.is_admin(platform, self.inbound.author.id))

    async def reply(self, text: str) -> None:
        """Answer in the conversation the message came from."""
        self.replies.append(text)
        await self.reply_func(text)
