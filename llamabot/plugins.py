"""The plugin API: ``Plugin`` objects with decorated commands, hooks, jobs and tasks.

A plugin module defines ``plugin = Plugin("name", ...)`` and registers by decorator on
it. Nothing reaches the bot until the whole module imported and its config validated,
so a broken plugin never leaves half its commands behind. What the decorated functions
receive (``CommandContext``, ``JobContext``) lives in :mod:`llamabot.context`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, overload

from pydantic import BaseModel
from typing_extensions import TypeVar

from llamabot.docstrings import read_docstring
from llamabot.durations import seconds
from llamabot.tools import Tool, ToolPermission, tool_from_function

if TYPE_CHECKING:
    from llamabot.config import Permission

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])
# The type of a plugin's validated ``[plugins.<name>]`` table (None: the plugin has none).
C = TypeVar("C", bound=BaseModel | None, default=None)
# Where a command may be used: anywhere, only in private chats, or only in groups.
Where = Literal["anywhere", "private", "group"]


class UsageError(Exception):
    """The arguments do not fit the command; the person is shown its usage line."""


# What a person typing an option may be offered: ``async def names(ctx, typed) -> [...]``.
Autocomplete = Callable[..., Awaitable[Sequence[str | int | float]]]
OptionKind = Literal["string", "integer", "number", "boolean"]


@dataclass(frozen=True, slots=True)
class CommandOption:
    """One argument of a command, as a platform's native command form shows it.

    ``rest`` marks ``*words``: it takes the remaining words (one text option natively).
    """

    name: str
    kind: OptionKind
    description: str
    required: bool
    rest: bool = False
    choices: tuple[str | int | float, ...] = ()
    autocomplete: bool = False


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
    where: Where = "anywhere"
    choices: Mapping[str, Sequence[str | int | float]] = field(default_factory=dict)
    autocomplete: Mapping[str, Autocomplete] = field(default_factory=dict)

    def usage_line(self, prefix: str) -> str:
        """``/name usage`` as the person should type it."""
        return f"{prefix}{self.name} {self.usage}".rstrip()

    @functools.cached_property
    def _parameters(self) -> list[inspect.Parameter]:
        # Read once: every run of the command and every listing of it needs them.
        return list(inspect.signature(self.handler).parameters.values())[1:]

    def options(self) -> list[CommandOption]:
        """The handler's arguments, typed, with their descriptions from the docstring."""
        return list(self._options)

    @functools.cached_property
    def _options(self) -> tuple[CommandOption, ...]:
        _, described = read_docstring(inspect.getdoc(self.handler) or "")
        found = []
        for parameter in self._parameters:
            rest = parameter.kind is inspect.Parameter.VAR_POSITIONAL
            found.append(
                CommandOption(
                    name=parameter.name,
                    kind=_KINDS[_annotation_type(parameter.annotation)],
                    description=described.get(parameter.name, ""),
                    required=rest or parameter.default is inspect.Parameter.empty,
                    rest=rest,
                    choices=tuple(self.choices.get(parameter.name, ())),
                    autocomplete=parameter.name in self.autocomplete,
                )
            )
        return tuple(found)

    def parse(self, argument_text: str) -> list[Any]:
        """Turn the words after the command into the handler's typed arguments."""
        words = argument_text.split()
        values: list[Any] = []
        for parameter in self._parameters:
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
            values.append(self._checked(parameter.name, _convert(words.pop(0), kind)))
        if words:
            raise UsageError("too many arguments")
        return values

    def bind(self, options: Mapping[str, Any]) -> list[Any]:
        """The handler's typed arguments from a native command's options by name."""
        values: list[Any] = []
        for parameter in self._parameters:
            kind = _annotation_type(parameter.annotation)
            given = options.get(parameter.name)
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                values.extend(_convert(word, kind) for word in str(given or "").split())
                break
            if given is None:
                if parameter.default is inspect.Parameter.empty:
                    raise UsageError(f"missing {parameter.name}")
                values.append(parameter.default)
                continue
            values.append(self._checked(parameter.name, _convert(str(given), kind)))
        return values

    def _checked(self, name: str, value: Any) -> Any:
        """``value`` as one of the parameter's ``choices`` (any case), when it has some."""
        allowed = self.choices.get(name)
        if not allowed:
            return value
        for option in allowed:
            if option == value or (isinstance(value, str) and str(option).lower() == value.lower()):
                return option
        words = [str(option) for option in allowed]
        spoken = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
        raise UsageError(f"{name} must be {spoken}")


def _annotation_type(annotation: Any) -> type:
    names = {"int": int, "float": float, "str": str, "bool": bool}
    if isinstance(annotation, str):
        return names.get(annotation.split("|")[0].strip(), str)
    if annotation in (int, float, bool):
        return annotation  # type: ignore[no-any-return]
    return str


_KINDS: dict[type, OptionKind] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(word: str, kind: type) -> Any:
    if kind is bool:
        if word.lower() in _TRUE | _FALSE:
            return word.lower() in _TRUE
        raise UsageError(f"{word!r} is not yes or no")
    try:
        return kind(word)
    except ValueError:
        noun = "number" if kind is float else "whole number" if kind is int else kind.__name__
        raise UsageError(f"{word!r} is not a {noun}") from None


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


class Plugin(Generic[C]):
    """A plugin: commands, hooks, jobs and tasks, registered by decorator.

    ``config`` is an optional pydantic model; the ``[plugins.<name>]`` table of bot.toml
    is validated against it and handed to the plugin's handlers as ``ctx.config``, typed:
    ``Plugin("dice", config=Settings)`` hands ``CommandContext[Settings]`` to its commands.
    """

    @overload
    def __init__(self: Plugin[None], name: str, *, description: str = "") -> None: ...

    @overload
    def __init__(self, name: str, *, description: str = "", config: type[C]) -> None: ...

    def __init__(self, name: str, *, description: str = "", config: type[C] | None = None) -> None:
        self.name = name
        self.description = description
        self.config_model: type[BaseModel] | None = config  # type: ignore[assignment]
        self.commands: list[Command] = []
        self.message_hooks: list[Callable[..., Awaitable[bool | None]]] = []
        self.reply_hooks: list[Callable[..., Awaitable[None]]] = []
        self.jobs: list[Job] = []
        self.tasks: list[Callable[..., Awaitable[None]]] = []
        self.start_hooks: list[Callable[..., Awaitable[None]]] = []
        self.stop_hooks: list[Callable[..., Awaitable[None]]] = []
        self.tools: list[Tool] = []

    def command(
        self,
        name: str,
        *,
        usage: str = "",
        description: str | None = None,
        permission: Permission = "everyone",
        where: Where = "anywhere",
        cooldown: str | float = 0,
        choices: Mapping[str, Sequence[str | int | float]] | None = None,
        autocomplete: Mapping[str, Autocomplete] | None = None,
    ) -> Callable[[F], F]:
        """Register ``async def handler(ctx: CommandContext, *args)`` for ``/name``.

        The handler's parameters after ``ctx`` declare its arguments (``str``, ``int`` or
        ``float``; ``*rest`` takes the remaining words); its docstring's first line is the
        description ``/help`` shows. ``permission`` says who may run it: ``"everyone"``,
        ``"moderator"`` (the server's or group's admins; in a private chat, the person) or
        ``"admin"`` (``[bot] admins``); ``[access.commands]`` in bot.toml can override it.
        ``where`` limits it to ``"private"`` chats or ``"group"`` chats. ``cooldown``
        (``"10s"``, ``"2m"`` or seconds) is the least time between two runs by one
        person; admins are exempt. The core enforces all three, and ``/help`` lists a
        command only where the person may use it.

        On Discord every command is also a slash command: its options are the handler's
        parameters, typed, described by the docstring's ``Args:`` section. ``choices``
        maps a parameter to the values it may take; ``autocomplete`` maps a parameter
        to ``async def suggest(ctx: CommandContext, typed: str) -> list[str]``.
        """
        if permission not in ("everyone", "moderator", "admin"):
            raise ValueError(f"permission must be everyone, moderator or admin, not {permission!r}")
        if where not in ("anywhere", "private", "group"):
            raise ValueError(f"where must be anywhere, private or group, not {where!r}")
        cooldown_s = seconds(cooldown)
        if cooldown_s < 0:
            raise ValueError("a cooldown cannot be negative")

        def register(func: F) -> F:
            parameters = list(inspect.signature(func).parameters)[1:]
            unknown = sorted({*(choices or {}), *(autocomplete or {})} - set(parameters))
            if unknown:
                raise ValueError(f"/{name} has no parameter {', '.join(unknown)}")
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
                    where=where,
                    choices=dict(choices or {}),
                    autocomplete=dict(autocomplete or {}),
                )
            )
            return func

        return register

    def tool(
        self,
        name: str | None = None,
        *,
        description: str | None = None,
        permission: ToolPermission = "everyone",
    ) -> Callable[[F], F]:
        """Offer ``async def tool(ctx: CommandContext, ...) -> str`` to the model.

        The parameters after ``ctx`` are the tool's arguments: their annotations make the
        JSON schema the model sees, and the model's arguments are validated against it.
        The docstring's first paragraph describes the tool; an ``Args:`` section
        describes each argument. ``ctx`` is the context of the message being answered,
        so a tool acts for the person who asked. A persona offers a tool only when
        bot.toml lists it (``[personas.NAME] tools = ["name"]``); ``permission="admin"``
        offers it on admins' turns only. The result is text, or anything JSON encodes;
        an exception becomes an error result the model reads.
        """

        def register(func: F) -> F:
            made = tool_from_function(
                func, name=name, description=description, permission=permission, plugin=self.name
            )
            if any(t.name == made.name for t in self.tools):
                raise ValueError(f"plugin {self.name!r} registers the tool {made.name} twice")
            self.tools.append(made)
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
