"""The plugin API: ``Plugin`` objects with decorated commands, hooks, jobs and tasks.

A plugin module defines ``plugin = Plugin("name", ...)`` and registers by decorator on
it. Nothing reaches the bot until the whole module imported and its config validated,
so a broken plugin never leaves half its commands behind.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    import tomlkit.toml_document

    from llamabot.app import Bot
    from llamabot.config import Config, Permission, Resolved
    from llamabot.events import ChannelRef, Inbound, SentMessage
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
    permission: Permission
    plugin: str
    cooldown_s: float = 0.0

    @property
    def admin(self) -> bool:
        """Whether only ``[bot] admins`` may run it."""
        return self.permission == "admin"

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


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_weekdays(cron: str) -> str:
    """Spell crontab's numeric weekdays (0 and 7 = Sunday) as names.

    APScheduler 3 counts weekdays from Monday = 0 (its issue #286), so ``0 9 * * 0``
    would run on Mondays; names mean the same to both.
    """
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"cron {cron!r} needs 5 fields: minute hour day month weekday")
    fields[4] = re.sub(r"(?<![/\w])[0-7](?!\w)", lambda m: _WEEKDAYS[int(m.group())], fields[4])
    return " ".join(fields)


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
    """A plugin: commands, hooks, jobs and tasks, registered by decorator.

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
        self.tasks: list[Callable[..., Awaitable[None]]] = []
        self.start_hooks: list[Callable[..., Awaitable[None]]] = []
        self.stop_hooks: list[Callable[..., Awaitable[None]]] = []

    def command(
        self,
        name: str,
        *,
        usage: str = "",
        description: str | None = None,
        admin: bool = False,
        permission: Permission | None = None,
        cooldown_s: float = 0.0,
    ) -> Callable[[F], F]:
        """Register ``async def handler(ctx, *args)`` for ``/name``.

        The handler's parameters after ``ctx`` declare its arguments (``str``, ``int`` or
        ``float``; ``*rest`` takes the remaining words). ``permission`` says who may run
        it: ``"everyone"`` (the default), ``"moderator"`` (the server's or group's admins;
        in a DM, the person) or ``"admin"`` (``[bot] admins``; ``admin=True`` says the
        same). ``[access.commands]`` in bot.toml can override it. ``cooldown_s`` is the
        least time between two runs by one person (admins are exempt).
        """
        if permission is None:
            permission = "admin" if admin else "everyone"
        if permission not in ("everyone", "moderator", "admin"):
            raise ValueError(f"permission must be everyone, moderator or admin, not {permission!r}")

        def register(func: F) -> F:
            if any(c.name == name.lower() for c in self.commands):
                raise ValueError(f"plugin {self.name!r} registers /{name} twice")
            doc = (inspect.getdoc(func) or "").split("\n")[0]
            self.commands.append(
                Command(
                    name=name.lower(),
                    handler=func,
                    usage=usage,
                    description=description if description is not None else doc,
                    permission=permission,
                    plugin=self.name,
                    cooldown_s=cooldown_s,
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
        """Run ``async def job(ctx: JobContext)`` on a crontab schedule or every ``interval`` s.

        Crontab weekdays count from Sunday = 0, as in crontab(5). A run missed while the
        bot was down runs once when it starts again (within the scheduler's grace time).
        """
        if (cron is None) == (interval is None):
            raise ValueError("a job needs exactly one of cron= or interval=")
        if interval is not None and interval <= 0:
            raise ValueError("a job's interval must be more than 0 seconds")
        if cron is not None:
            from apscheduler.triggers.cron import CronTrigger

            cron = crontab_weekdays(cron)
            CronTrigger.from_crontab(cron)  # a typo fails the plugin's import, not a start

        def register(func: F) -> F:
            self.jobs.append(Job(func=func, cron=cron, interval=interval, plugin=self.name))
            return func

        return register

    def task(self, func: F) -> F:
        """Register ``async def task(ctx: JobContext, data: dict)`` for ``scheduler.run_at``.

        A scheduled call stores the task's name and plain data, never the function or a
        live object, so it still runs after the bot restarted.
        """
        self.tasks.append(func)
        return func

    def on_start(self, func: F) -> F:
        """Run ``async def hook(ctx: JobContext)`` once the adapters are up."""
        self.start_hooks.append(func)
        return func

    def on_stop(self, func: F) -> F:
        """Run ``async def hook(ctx: JobContext)`` when the bot stops, before the adapters."""
        self.stop_hooks.append(func)
        return func


@dataclass
class JobContext:
    """What a job, a scheduled task or an on_start/on_stop hook receives."""

    bot: Bot
    plugin: str

    @property
    def store(self) -> HistoryStore:
        return self.bot.store

    @property
    def scheduler(self) -> Scheduler | None:
        return self.bot.scheduler

    @property
    def config(self) -> BaseModel | None:
        """The plugin's validated ``[plugins.<name>]`` table."""
        return self.bot.plugins.config_for(self.plugin)

    async def send(
        self, channel: ChannelRef, text: str, *, reply_to: str | None = None
    ) -> SentMessage | None:
        """Post in a conversation unprompted; ``None`` when it could not be delivered."""
        from llamabot.streaming import send_text

        adapter = next((a for a in self.bot.adapters if a.platform == channel.platform), None)
        if adapter is None:
            log.warning(
                "no %s adapter is running; a post to %s is dropped", channel.platform, channel.key
            )
            return None
        return await send_text(adapter, channel, text, reply_to)

    def mention(self, platform: str, user_id: str, name: str) -> str:
        """How to name a person so the platform notifies them.

        An adapter may offer ``mention(user_id, name) -> str``; otherwise ``@Name``.
        """
        adapter = next((a for a in self.bot.adapters if a.platform == platform), None)
        method = getattr(adapter, "mention", None)
        if callable(method):
            return str(method(user_id, name))
        return f"@{name}"


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
    def author_id(self) -> str:
        """The person as ``platform:user_id``, the form ``[bot] admins`` and the history use."""
        return self.inbound.author.qualified_id(self.inbound.channel.platform)

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

    def edit_config(self, change: Callable[[tomlkit.toml_document.TOMLDocument], None]) -> Config:
        """Change bot.toml and put the result in force; admins only.

        ``change`` edits the parsed document in place (tomlkit keeps the admin's comments
        and layout). The new text is validated before it replaces the file, so a bad
        change raises :class:`~llamabot.config.ConfigError` and leaves bot.toml as it was.
        """
        if not self.is_admin:
            raise PermissionError("only the bot's admins can change bot.toml")
        path = getattr(self.bot, "config_path", None)
        if path is None:
            raise RuntimeError("this bot was started without a bot.toml; there is none to change")
        config = rewrite_config(Path(path), change)
        self.bot.apply_config(config)
        return config


def rewrite_config(
    path: Path, change: Callable[[tomlkit.toml_document.TOMLDocument], None]
) -> Config:
    """Apply ``change`` to bot.toml with tomlkit, validate, and replace the file atomically."""
    import tomlkit

    from llamabot.config import parse_config

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    change(document)
    text = tomlkit.dumps(document)
    config = parse_config(text, path)
    # A crash mid-write must not leave the admin with half a bot.toml.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return config
