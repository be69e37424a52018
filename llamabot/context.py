"""What a plugin's functions receive: ``CommandContext`` and ``JobContext``.

Both are views onto typed services (:mod:`llamabot.services`); neither hands out the
Bot, so the bot's internals can change without breaking a plugin. ``C`` is the type of
the plugin's validated ``[plugins.<name>]`` table (``None`` for a plugin without one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

from llamabot.config import Config, Resolved
from llamabot.config_editor import ConfigEditor
from llamabot.events import Author, ChannelRef, Inbound, SentMessage
from llamabot.llm.base import ChatModel
from llamabot.plugins import C
from llamabot.services import (
    Asker,
    CommandCatalog,
    ConversationHistory,
    ModelAccess,
    PersonMemory,
    PluginScheduler,
)
from llamabot.streaming import send_text
from llamabot.tools import TurnTools

if TYPE_CHECKING:
    from llamabot.adapters.base import Adapter
    from llamabot.audit import AuditLog
    from llamabot.memory import Memory
    from llamabot.memory.store import MemoryStore
    from llamabot.plugin_host import PluginHost
    from llamabot.scheduler import Scheduler
    from llamabot.storage.history import HistoryStore

log = logging.getLogger(__name__)

# The bundled tool (plugins/memory.py) offered to every persona that keeps facts.
REMEMBER_TOOL = "remember"


class JobContext(Generic[C]):
    """What a job, a scheduled task, or an on_start/on_stop hook receives.

    ``config`` is the plugin's validated settings; ``bot_config`` the whole bot.toml in
    force (read it, never keep it: a reload replaces it); ``scheduler`` the plugin's
    scheduled calls; ``model`` a one-off answer from the model; ``commands`` the loaded
    commands.
    """

    def __init__(self, parts: PluginContexts, plugin: str, persona: str | None = None) -> None:
        self._parts = parts
        self.plugin = plugin
        self.config: C = parts.plugins.config_for(plugin)  # type: ignore[assignment]
        self.bot_config: Config = parts.config()
        self.scheduler = PluginScheduler(parts.scheduler, plugin, parts.tasks_of(plugin))
        self.model = ModelAccess(parts.model, parts.config, parts.limiter, persona)

    @property
    def commands(self) -> CommandCatalog:
        """The loaded commands."""
        return CommandCatalog(self._parts.plugins, self._parts.config)

    @property
    def prefix(self) -> str:
        """What commands start with (``[bot] command_prefix``)."""
        return self.bot_config.bot.command_prefix

    def history_of(self, channel: ChannelRef) -> ConversationHistory:
        """The stored history of the conversation at ``channel``."""
        return ConversationHistory(
            self._parts.store, channel, self._parts.config, self._parts.memory_store
        )

    async def send(
        self, channel: ChannelRef, text: str, *, reply_to: str | None = None
    ) -> SentMessage | None:
        """Post in a conversation unprompted; ``None`` when it could not be delivered.

        A long text is split at the platform's limit, as replies are.
        """
        adapter = self._parts.adapter_for(channel.platform)
        if adapter is None:
            log.warning(
                "no %s adapter is running; a post to %s is dropped", channel.platform, channel.key
            )
            return None
        return await send_text(adapter, channel, text, reply_to)

    def mention(self, platform: str, user_id: str, name: str) -> str:
        """How to name a person so that the platform notifies them (``@Name`` elsewhere)."""
        adapter = self._parts.adapter_for(platform)
        return adapter.mention(user_id, name) if adapter is not None else f"@{name}"


class CommandContext(JobContext[C]):
    """What a command, a message hook or a reply hook receives.

    Besides what a job has: the ``message`` and its ``author``, the ``persona`` chosen
    for this conversation, its ``history``, ``reply``, and ``admin`` (the bot.toml
    editor, which refuses anyone but the bot's admins).
    """

    def __init__(
        self,
        parts: PluginContexts,
        plugin: str,
        message: Inbound,
        adapter: Adapter,
        persona: Resolved,
    ) -> None:
        super().__init__(parts, plugin, persona.name)
        self._adapter = adapter
        self.message = message
        self.persona = persona
        self.is_admin = self.bot_config.is_admin(message.channel.platform, message.author.id)
        self.history = ConversationHistory(
            parts.store, message.channel, parts.config, parts.memory_store
        )
        self.memory = PersonMemory(parts.memory, parts.store, message, persona)
        who = f"{self.author_id} ({message.author.name}, {message.channel.key})"
        audit = parts.audit
        self.admin = ConfigEditor(
            parts.config_path,
            parts.apply_config,
            allowed=self.is_admin,
            audit=None if audit is None else lambda what, diff: audit.record_soon(who, what, diff),
            what=f"{plugin}: {message.text[:80]}",
        )

    @property
    def author(self) -> Author:
        """Who sent the message."""
        return self.message.author

    @property
    def channel(self) -> ChannelRef:
        """Where the message was sent (and where ``reply`` answers)."""
        return self.message.channel

    @property
    def author_id(self) -> str:
        """The person as ``platform:user_id``, the form ``[bot] admins`` and the history use."""
        return self.message.author.qualified_id(self.message.channel.platform)

    @property
    def commands(self) -> CommandCatalog:
        """The loaded commands; ``await ctx.commands.available()`` lists the ones this
        person may use here."""
        asker = Asker(self.message, self._adapter, self.persona)
        return CommandCatalog(self._parts.plugins, self._parts.config, asker)

    async def reply(self, text: str) -> None:
        """Answer in the conversation the message came from (split when long)."""
        await send_text(self._adapter, self.message.channel, text, self.message.message_id)

    def mention_author(self) -> str:
        """The author, named so that the platform notifies them."""
        return self._adapter.mention(self.message.author.id, self.message.author.name)


class PluginContexts:
    """Builds the contexts plugins receive, from the running bot's parts."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        apply_config: Callable[[Config], None],
        config_path: Path | None,
        store: HistoryStore,
        model: ChatModel,
        limiter: asyncio.Semaphore,
        plugins: PluginHost,
        adapters: Callable[[], Sequence[Adapter]],
        memory: Memory | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.apply_config = apply_config
        self.config_path = config_path
        self.store = store
        self.model = model
        self.limiter = limiter
        self.plugins = plugins
        self.adapters = adapters
        self.memory = memory
        self.audit = audit
        self.scheduler: Scheduler | None = None  # set once the scheduler started

    @property
    def memory_store(self) -> MemoryStore | None:
        return self.memory.store if self.memory is not None else None

    def for_job(self, plugin: str) -> JobContext[Any]:
        """The context of a job, task or lifespan hook of ``plugin``."""
        return JobContext(self, plugin)

    def for_message(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved, plugin: str
    ) -> CommandContext[Any]:
        """The context of a command or hook of ``plugin`` handling ``inbound``."""
        return CommandContext(self, plugin, inbound, adapter, resolved)

    def tools_for(self, inbound: Inbound, adapter: Adapter, resolved: Resolved) -> TurnTools:
        """The tools the reply to ``inbound`` may call: the persona's, less admin-only
        ones on the turn of someone who is not an admin."""
        config = self.config()
        is_admin = config.is_admin(inbound.channel.platform, inbound.author.id)
        wanted = resolved.persona.tools
        if resolved.keeps_facts and REMEMBER_TOOL not in wanted:
            wanted = [*wanted, REMEMBER_TOOL]  # facts are kept: the model may note them
        tools = self.plugins.tools.for_turn(wanted, is_admin=is_admin)
        return TurnTools(
            tools,
            lambda plugin: self.for_message(inbound, adapter, resolved, plugin),
            config.tools.timeout_s,
        )

    def adapter_for(self, platform: str) -> Adapter | None:
        return next((a for a in self.adapters() if a.platform == platform), None)

    def tasks_of(self, plugin: str) -> list[Any]:
        loaded = self.plugins.get(plugin)
        return list(loaded.tasks) if loaded is not None else []
