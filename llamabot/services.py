"""What the running bot lends to plugins, as small typed services.

A plugin never sees the Bot. Its context carries these, each for one thing: a
conversation's history, the plugin's scheduled calls, the model, and the list of
commands. (The bot.toml editor is :class:`llamabot.config_editor.ConfigEditor`.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from llamabot.access import command_refusal, permission_of
from llamabot.config import AccessSection, Config, Permission, Resolved
from llamabot.events import ChannelRef, Inbound
from llamabot.llm.base import ChatMessage, ChatModel, ModelInfo
from llamabot.plugins import Command, Where

if TYPE_CHECKING:
    from llamabot.adapters.base import Adapter
    from llamabot.memory import Memory
    from llamabot.memory.store import Fact, MemoryStore
    from llamabot.plugin_host import PluginHost
    from llamabot.scheduler import ScheduledJob, Scheduler
    from llamabot.storage.history import FoundMessage, HistoryStore, Turn
    from llamabot.storage.stats import Usage

Task = Callable[..., Awaitable[None]]


class PersonMemory:
    """What the bot keeps about the person a command or tool is for, and this
    conversation's summary (``[personas.NAME.memory]``)."""

    def __init__(
        self,
        memory: Memory | None,
        history: HistoryStore,
        message: Inbound,
        persona: Resolved,
    ) -> None:
        self._memory = memory
        self._history = history
        self._message = message
        self._persona = persona
        self.person = message.author.qualified_id(message.channel.platform)

    @property
    def keeps_facts(self) -> bool:
        """Whether the persona here keeps facts about people."""
        return self._memory is not None and self._persona.keeps_facts

    async def facts(self) -> list[Fact]:
        """Every fact kept about this person (any persona), oldest first: ``/memory``
        numbers them in this order."""
        if self._memory is None:
            return []
        return await self._memory.store.facts(self.person)

    async def remember(self, text: str) -> bool:
        """Keep a fact about this person for this persona; False when it was known or
        the persona keeps no facts here."""
        if self._memory is None or not self.keeps_facts or not text.strip():
            return False
        return await self._memory.remember(
            self.person, self._persona, text, private=self._message.channel.is_private
        )

    async def forget(self, facts: list[Fact] | None = None) -> int:
        """Delete some of this person's facts (all when ``facts`` is None); nothing of
        them stays in the database file."""
        if self._memory is None:
            return 0
        ids = [fact.id for fact in facts] if facts is not None else []
        if facts is not None and not ids:
            return 0
        removed = await self._memory.store.forget_facts(self.person, ids)
        if removed:
            await self._history.reclaim_space()
        return removed

    async def recall(self, query: str, limit: int = 5) -> list[FoundMessage]:
        """This conversation's earlier messages about ``query``: by meaning with
        ``[memory] embed_model``, else by its words."""
        conversation = await self._history.conversation_id(self._message.channel)
        if self._memory is not None:
            found = await self._memory.recall(conversation, query, limit)
            if found is not None:
                return found
        return await self._history.search(conversation, query, limit)

    async def summary(self) -> str:
        """This conversation's rolling summary ("" when there is none)."""
        if self._memory is None:
            return ""
        conversation = await self._history.conversation_id(self._message.channel)
        return (await self._memory.store.summary(conversation)).text


async def forget_person(store: HistoryStore, memory: MemoryStore | None, author_id: str) -> int:
    """Delete what ``author_id`` said everywhere, the facts kept about them and the
    summaries of the conversations they were in; returns how many messages went."""
    remembered = (0, 0)
    if memory is not None:  # first: their messages say where they spoke
        remembered = await memory.forget_person(author_id)
    removed = await store.forget_author(author_id)
    if any(remembered) and not removed:
        await store.reclaim_space()  # forget_author does it when it deletes
    return removed


class ConversationHistory:
    """One conversation's stored messages, as a plugin may read and clear them.

    Clearing and forgetting take what memory derived from the messages (the summary,
    the facts) with them.
    """

    def __init__(
        self,
        store: HistoryStore,
        channel: ChannelRef,
        config: Callable[[], Config],
        memory: MemoryStore | None = None,
    ):
        self._store = store
        self._config = config
        self._memory = memory
        self.channel = channel

    async def window(self) -> list[Turn]:
        """The turns the model would see now, oldest first (``[history]`` limits)."""
        history = self._config().history
        conversation = await self._store.conversation_id(self.channel)
        return await self._store.window(conversation, history.max_messages, history.max_tokens)

    async def clear(self) -> int:
        """Forget this conversation's history (and its summary); returns how many
        messages went."""
        conversation = await self._store.conversation_id(self.channel)
        if self._memory is not None:
            await self._memory.forget_conversation(conversation)
        return await self._store.clear(conversation)

    async def forget_person(self, author_id: str) -> int:
        """Delete what ``author_id`` (``platform:user_id``) said, in every conversation,
        the facts kept about them and the summaries of the conversations they were in;
        returns how many messages went. Nothing of it stays in the database file."""
        return await forget_person(self._store, self._memory, author_id)

    async def search(self, query: str, limit: int = 5) -> list[FoundMessage]:
        """Complete messages of this conversation containing words of ``query``, best
        matches first."""
        conversation = await self._store.conversation_id(self.channel)
        return await self._store.search(conversation, query, limit)

    async def usage(self, *, author_id: str | None = None) -> Usage:
        """Messages, tokens and median reply time here (only ``author_id``'s, if given)."""
        from llamabot.storage.stats import usage

        conversation = await self._store.conversation_id(self.channel)
        return await usage(self._store, conversation, author_id)

    async def usage_everywhere(self, *, author_id: str | None = None) -> Usage:
        """The same figures over every conversation (only ``author_id``'s, if given)."""
        from llamabot.storage.stats import usage

        return await usage(self._store, None, author_id)


class PluginScheduler:
    """The plugin's scheduled calls: ``task`` is one of its own ``@plugin.task`` functions.

    Calls are stored in the bot's database, so they survive a restart.
    """

    def __init__(self, scheduler: Scheduler | None, plugin: str, tasks: list[Task]) -> None:
        self._scheduler = scheduler
        self._plugin = plugin
        self._tasks = tasks

    @property
    def available(self) -> bool:
        """Whether scheduling works in this bot (it always does under ``llamabot run``)."""
        return self._scheduler is not None

    @property
    def timezone(self) -> ZoneInfo:
        """The bot's time zone (``[bot] timezone``)."""
        return self._running().timezone

    async def run_at(
        self,
        when: datetime,
        task: Task,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        grace_s: int | None = None,
    ) -> ScheduledJob:
        """Call ``task(ctx, data)`` at ``when``; ``data`` holds plain JSON values.

        A call missed while the bot was down runs at the next start when at most
        ``grace_s`` late, and never twice.
        """
        return await self._running().run_at(
            when, self._own(task), data, job_id=job_id, grace_s=grace_s
        )

    async def pending(self, task: Task) -> list[ScheduledJob]:
        """The calls of ``task`` still to run, soonest first."""
        return await self._running().pending(self._own(task))

    async def cancel(self, task: Task, job_id: str) -> bool:
        """Cancel a pending call of ``task``; false when there was none with that id."""
        return await self._running().cancel(self._own(task), job_id)

    async def forget_person(self, author_id: str) -> int:
        """Cancel every pending call (of any plugin) whose data names ``author_id``
        under ``"author"``: the privacy side of ``/forgetme``."""
        if self._scheduler is None:
            return 0
        return await self._scheduler.forget_author(author_id)

    def _running(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("this bot runs without a scheduler")
        return self._scheduler

    def _own(self, task: Task) -> Task:
        if task not in self._tasks:
            raise ValueError(
                f"{getattr(task, '__name__', task)!r} is not a task of plugin {self._plugin}; "
                "register it with @plugin.task"
            )
        return task


class ModelAccess:
    """The configured model, for a one-off answer outside the conversation's history.

    The request waits for a free model slot like a reply does (``[llm] max_concurrency``).
    Failures raise :class:`~llamabot.llm.errors.ModelError`, whose ``user_message`` can
    be shown to the person.
    """

    def __init__(
        self,
        model: ChatModel,
        config: Callable[[], Config],
        limiter: asyncio.Semaphore,
        persona: str | None = None,
    ) -> None:
        self._model = model
        self._config = config
        self._limiter = limiter
        self._persona = persona

    async def complete(
        self, prompt: str, *, persona: str | None = None, system: str | None = None
    ) -> str:
        """The model's whole answer to ``prompt``.

        ``persona`` names a ``[personas.NAME]`` (default: this conversation's, else the
        default persona): its model, options and prompt are used; ``system`` replaces
        the prompt.
        """
        parts = [delta async for delta in self.stream(prompt, persona=persona, system=system)]
        return "".join(parts)

    async def stream(
        self, prompt: str, *, persona: str | None = None, system: str | None = None
    ) -> AsyncIterator[str]:
        """The model's answer to ``prompt`` as it is written (see :meth:`complete`)."""
        config = self._config()
        name = persona or self._persona or config.bot.default_persona
        chosen = config.personas.get(name)
        if chosen is None:
            raise ValueError(
                f"there is no persona {name!r}; bot.toml defines {sorted(config.personas)}"
            )
        prompt_text = chosen.prompt if system is None else system
        messages = [ChatMessage("user", prompt)]
        if prompt_text:
            messages.insert(0, ChatMessage("system", prompt_text))
        async with self._limiter:
            stream = self._model.stream_chat(chosen.model, messages, chosen.options())
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    if isinstance(delta, str):  # no tools were offered
                        yield delta

    async def list_models(self) -> list[ModelInfo]:
        """The models the backend can serve."""
        return await self._model.list_models()

    def served_model(self, requested: str) -> str:
        """The model that really answers when a persona asks for ``requested``."""
        return self._model.served_model(requested)


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command as ``/help`` shows it; ``permission`` is the one in force here."""

    name: str
    usage: str
    description: str
    permission: Permission
    where: Where
    plugin: str

    def usage_line(self, prefix: str) -> str:
        """``/name usage`` as the person should type it."""
        return f"{prefix}{self.name} {self.usage}".rstrip()


@dataclass(frozen=True, slots=True)
class Asker:
    """The person a command runs for, where: what deciding their commands needs."""

    inbound: Inbound
    adapter: Adapter
    resolved: Resolved


class CommandCatalog:
    """The loaded commands, and those the person asking may use here."""

    def __init__(
        self, plugins: PluginHost, config: Callable[[], Config], asker: Asker | None = None
    ) -> None:
        self._plugins = plugins
        self._config = config
        self._asker = asker

    def all(self) -> list[CommandInfo]:
        """Every command, sorted by name, with the permission bot.toml gives it."""
        access = self._asker.resolved.access if self._asker else self._config().access
        return [_info(command, access) for command in self._commands()]

    def find(self, name: str) -> CommandInfo | None:
        """The command called ``name`` (without the prefix), if one is loaded."""
        return next((c for c in self.all() if c.name == name.lower()), None)

    async def available(self) -> list[CommandInfo]:
        """The commands the person asking may run here (all of them for a job)."""
        asker = self._asker
        if asker is None:
            return self.all()
        config = self._config()
        allowed = []
        for command in self._commands():
            refused = await command_refusal(
                command, asker.inbound, asker.adapter, config, asker.resolved.access
            )
            if refused is None:
                allowed.append(_info(command, asker.resolved.access))
        return allowed

    def _commands(self) -> list[Command]:
        return self._plugins.commands()


def _info(command: Command, access: AccessSection) -> CommandInfo:
    return CommandInfo(
        command.name,
        command.usage,
        command.description,
        permission_of(command.permission, command.name, access),
        command.where,
        command.plugin,
    )
