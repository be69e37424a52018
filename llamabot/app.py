"""Bot: owns the lifespan and wires config, storage, model, plugins and adapters together.

Start order: database (migrate to head) -> model backend -> plugins -> scheduler ->
router -> adapters. Whatever started stops, in reverse, also after a half-failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llamabot.access import permission_of
from llamabot.adapters.base import Adapter, CommandSpec
from llamabot.audit import AuditLog
from llamabot.config import Config, resolve_storage_url
from llamabot.context import PluginContexts
from llamabot.conversation import Conversation
from llamabot.errors import StartupError
from llamabot.events import Inbound
from llamabot.llm.base import ChatModel
from llamabot.loop_lag import LoopWatchdog
from llamabot.memory import Memory, MemoryStore
from llamabot.metrics import Metrics
from llamabot.plugin_host import PluginHost
from llamabot.reload import ConfigWatcher
from llamabot.retention import keep_pruning
from llamabot.router import Router
from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore
from llamabot.storage.inbox import Inbox
from llamabot.storage.locks import claim_sqlite
from llamabot.storage.state import StateStore

if TYPE_CHECKING:
    from llamabot.mcp_servers import McpServers
    from llamabot.scheduler import Scheduler

log = logging.getLogger(__name__)

# How often new messages are added to the full-text index (a search adds them too).
SEARCH_INDEX_EVERY_S = 60.0


class Bot:
    """A running llamabot. Use as ``async with Bot(config, ...) as bot:``.

    ``model`` and ``adapters`` default to what bot.toml asks for; tests and embedders
    pass their own. ``config_path`` anchors relative paths (the SQLite file, plugins).
    """

    def __init__(
        self,
        config: Config,
        *,
        config_path: Path | None = None,
        model: ChatModel | None = None,
        adapters: Sequence[Adapter] | None = None,
        plugins: PluginHost | None = None,
        watch_config: bool = False,
    ) -> None:
        self._config = config
        self.config_path = config_path
        self._model = model
        self._adapters: list[Adapter] = list(adapters) if adapters is not None else []
        self._adapters_from_config = adapters is None
        self._plugins = plugins
        self._watch_config = watch_config
        self.watcher: ConfigWatcher | None = None
        self._stack = contextlib.AsyncExitStack()
        self._store: HistoryStore | None = None
        self._inbox: Inbox | None = None
        self._state: StateStore | None = None
        self._router: Router | None = None
        self._contexts: PluginContexts | None = None
        self.scheduler: Scheduler | None = None
        self.mcp: McpServers | None = None  # when [mcp.servers] has any enabled
        self.memory: Memory | None = None
        self.audit: AuditLog | None = None
        self.stopped = asyncio.Event()
        self.metrics = Metrics(config.metrics.listen)

    # -- what the parts share -------------------------------------------------------

    @property
    def config(self) -> Config:
        """The config in force (hot reload swaps it between messages)."""
        return self._config

    @property
    def store(self) -> HistoryStore:
        if self._store is None:
            raise RuntimeError("the bot has not started")
        return self._store

    @property
    def model(self) -> ChatModel:
        if self._model is None:
            raise RuntimeError("the bot has not started")
        return self._model

    @property
    def plugins(self) -> PluginHost:
        if self._plugins is None:
            raise RuntimeError("the bot has not started")
        return self._plugins

    @property
    def command_prefix(self) -> str:
        """What text commands start with (as reloaded last)."""
        return self._config.bot.command_prefix

    @property
    def contexts(self) -> PluginContexts:
        """Builds the contexts plugins receive (an embedder can run a plugin's code)."""
        if self._contexts is None:
            raise RuntimeError("the bot has not started")
        return self._contexts

    @property
    def adapters(self) -> list[Adapter]:
        return list(self._adapters)

    @property
    def config_dir(self) -> Path:
        return self.config_path.parent if self.config_path is not None else Path.cwd()

    def apply_config(self, config: Config) -> None:
        """Put a new config in force for the next message.

        Raises ValueError, and changes nothing, when a plugin's settings do not validate.
        """
        if self._plugins is not None:
            self._plugins.reconfigure(config)
        if self._model is not None:
            self._model.set_timeouts(config.llm.first_token_timeout, config.llm.idle_timeout)
        self._config = config

    # -- BotHandle, for adapters -----------------------------------------------------

    def submit(self, inbound: Inbound, adapter: Adapter) -> asyncio.Future[None]:
        """Queue a message for handling; the future completes once it was handled.

        Not kept across a restart: platform adapters take messages with ``accept``.
        """
        if self._router is None:
            raise RuntimeError("the bot has not started")
        return self._router.submit(inbound, adapter)

    def interrupt(self, key: str) -> bool:
        """Stop the reply being written in conversation ``key``; whether there was one."""
        return self._router is not None and self._router.interrupt(key)

    async def accept(self, inbound: Inbound, adapter: Adapter) -> None:
        """Take a platform message: once this returns, a restart does not lose it.

        The adapter confirms the message to its platform only after this. A message
        taken before (a platform delivering it again) is not queued twice.
        """
        if self._inbox is None or self._router is None:
            raise RuntimeError("the bot has not started")
        entry = await self._inbox.put(inbound)
        if entry is None:
            log.info("message %s in %s is queued already", inbound.message_id, inbound.channel.key)
            return
        self._queue(entry, inbound, adapter)

    def _queue(self, entry: int, inbound: Inbound, adapter: Adapter) -> None:
        assert self._router is not None
        handled = self._router.submit(inbound, adapter)
        handled.add_done_callback(functools.partial(self._forget, entry))

    def _forget(self, entry: int, handled: asyncio.Future[None]) -> None:
        if handled.cancelled() or self._inbox is None:
            return  # not handled (the bot stopped first): the next start handles it
        self._inbox.forget(entry)

    async def _settle_inbox(self) -> None:
        """Wait for the inbox to record what was handled, before the database closes."""
        if self._inbox is not None:
            await self._inbox.settle()

    def command_specs(self) -> list[CommandSpec]:
        """The commands to advertise in a platform's menu (or as native commands)."""
        if self._plugins is None:
            return []
        access = self._config.access
        return [
            CommandSpec(
                c.name,
                c.description or c.usage or c.name,
                c.usage,
                tuple(c.options()),
                permission_of(c.permission, c.name, access),
                c.where,
            )
            for c in self._plugins.commands()
        ]

    async def autocomplete(
        self, inbound: Inbound, adapter: Adapter, command: str, option: str, typed: str
    ) -> list[str | int | float]:
        """Suggestions for an option of a native command while the person types."""
        if self._router is None:
            return []
        return await self._router.autocomplete(inbound, adapter, command, option, typed)

    async def recall(self, key: str) -> str | None:
        """A value kept with ``remember`` (adapters' state across restarts)."""
        if self._state is None:
            raise RuntimeError("the bot has not started")
        return await self._state.get(key)

    async def remember(self, key: str, value: str) -> None:
        """Keep a small value across restarts."""
        if self._state is None:
            raise RuntimeError("the bot has not started")
        await self._state.set(key, value)

    async def wait_idle(self) -> None:
        """Wait until every queued message has been handled."""
        if self._router is not None:
            await self._router.wait_idle()

    # -- lifespan ------------------------------------------------------------------

    async def __aenter__(self) -> Bot:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        self.stopped.set()

    async def _start(self) -> None:
        config = self._config
        url = config.storage.url
        if self.config_path is not None:
            url = resolve_storage_url(url, self.config_path)
        process_lock = claim_sqlite(url)
        if process_lock is not None:
            self._stack.callback(process_lock.release)
        engine = create_engine(url)
        self._stack.push_async_callback(engine.dispose)
        await upgrade(engine)
        self._store = HistoryStore(engine)
        self._stack.push_async_callback(self._store.aclose)
        self._inbox = Inbox(self._store)
        self._memory_store = MemoryStore(engine)
        self.audit = AuditLog(engine)
        self._stack.push_async_callback(self.audit.settle)
        self._state = StateStore(engine)
        self._stack.push_async_callback(self._settle_inbox)

        if self._model is None:
            from llamabot.llm.select import select_model

            adapters = sorted({p.adapter for p in config.personas.values() if p.adapter})
            self._model = await select_model(
                config.llm, config_dir=self.config_dir, adapters=adapters
            )
        self._stack.push_async_callback(self._model.aclose)
        await self._report_missing_models()
        self._report_unapplied_adapters()

        if self._plugins is None:
            from llamabot.plugin_loader import load_plugins

            self._plugins = load_plugins(config, self.config_dir)
        self._report_unknown_tools()
        await self._start_mcp_servers()
        # One limiter: replies and plugins' one-off completions share the model's slots.
        limiter = asyncio.Semaphore(config.llm.max_concurrency)
        self.memory = Memory(self._memory_store, self._model, lambda: self._config)
        self.memory.start()
        self._stack.push_async_callback(self.memory.stop)
        contexts = self._contexts = PluginContexts(
            config=lambda: self._config,
            apply_config=self.apply_config,
            config_path=self.config_path,
            store=self._store,
            model=self._model,
            limiter=limiter,
            plugins=self._plugins,
            adapters=lambda: self._adapters,
            memory=self.memory,
            audit=self.audit,
        )
        await self._start_scheduler(url, contexts)
        conversation = Conversation(
            config=lambda: self._config,
            model=self._model,
            store=self._store,
            limiter=limiter,
            metrics=self.metrics,
            tools=contexts.tools_for,
            memory=self.memory,
        )
        self._router = Router(
            config=lambda: self._config,
            conversation=conversation,
            plugins=self._plugins,
            context=contexts.for_message,
            metrics=self.metrics,
        )
        self._stack.push_async_callback(self._router.close)
        self.metrics.watch_queues(self._router.queued, self._router.deepest)
        await self.metrics.start()
        self._stack.push_async_callback(self.metrics.stop)

        if self._adapters_from_config:
            from llamabot.adapters.registry import adapters_for

            self._adapters = adapters_for(config)
        # Messages a stop left unhandled go first; nothing is handled before the
        # adapters can deliver.
        router = self._router
        router.pause()
        await self._requeue_unhandled()
        for adapter in self._adapters:
            await adapter.start(self)
            self._stack.push_async_callback(adapter.stop)
            log.info("%s adapter started", adapter.platform)
        router.resume()
        # At stop, in this order: no new messages, replies in flight get the grace, the
        # ones still running are cut with a notice, and only then the adapters close.
        self._stack.push_async_callback(router.close)
        self._stack.push_async_callback(self._drain)
        for adapter in self._adapters:
            self._stack.push_async_callback(adapter.stop_receiving)
        await self._start_plugins()

        self._start_maintenance()

    async def _drain(self) -> None:
        if self._router is not None:
            await self._router.drain(self._config.bot.stop_grace_s)  # as reloaded last

    async def _requeue_unhandled(self) -> None:
        assert self._inbox is not None
        by_platform = {adapter.platform: adapter for adapter in self._adapters}
        waiting: dict[str, int] = {}
        requeued = 0
        for entry, inbound in await self._inbox.pending():
            adapter = by_platform.get(inbound.channel.platform)
            if adapter is None:
                waiting[inbound.channel.platform] = waiting.get(inbound.channel.platform, 0) + 1
                continue
            self._queue(entry, inbound, adapter)
            requeued += 1
        if requeued:
            log.info("handling %d message(s) the last stop left unanswered", requeued)
        for platform, count in sorted(waiting.items()):
            log.warning(
                "%d message(s) from %s wait in the inbox until [%s] is enabled again",
                count,
                platform,
                platform,
            )

    async def _report_missing_models(self) -> None:
        """Tell the admin, at start, which persona models must be pulled, and how."""
        wanted = sorted({persona.model for persona in self._config.personas.values()})
        missing = await self.model.missing_models(wanted)
        for name, hosts in sorted(missing.items()):
            log.warning(
                "model %s (used by a persona) is not installed on %s; %s",
                name,
                ", ".join(hosts),
                self.model.install_hint(name),
            )

    def _report_unapplied_adapters(self) -> None:
        """A persona's LoRA adapter is applied by the embedded backend only."""
        if self.model.name == "embedded":
            return
        for name, persona in sorted(self._config.personas.items()):
            if persona.adapter:
                log.warning(
                    "persona %s has a LoRA adapter, which the %s backend does not apply per "
                    "reply; run `llamabot publish %s --bind` to serve it as a model of its own",
                    name,
                    self.model.name,
                    name,
                )

    async def _start_mcp_servers(self) -> None:
        """Connect to the ``[mcp.servers]`` in the background: their tools join the
        registry as each comes up; no platform waits for them."""
        section = self._config.mcp
        if not any(server.enabled for server in section.servers.values()):
            return
        try:
            from llamabot.mcp_servers import McpServers
        except ImportError as exc:
            raise StartupError(
                f"[mcp] servers are configured, but the MCP SDK does not load ({exc}); "
                "reinstall llamabot (pip install -e .) or remove [mcp.servers]"
            ) from None
        self.mcp = McpServers(section, self.plugins.tools, base_dir=self.config_dir)
        self.mcp.start()
        # Pushed early, so popped late: replies finishing in the stop grace keep the tools.
        self._stack.push_async_callback(self.mcp.stop)

    def _report_unknown_tools(self) -> None:
        """Tell the admin, at start, which tools a persona lists that nothing offers."""
        registry = self.plugins.tools
        for name, persona in sorted(self._config.personas.items()):
            for tool in registry.missing(persona.tools):
                log.warning(
                    "persona %s lists the tool %s, which no loaded plugin offers "
                    "(the tools on offer: %s)",
                    name,
                    tool,
                    ", ".join(registry.names()) or "none",
                )

    def _start_maintenance(self) -> None:
        """Background upkeep: the bot.toml watcher, the daily history retention, and the
        watchdog that names a plugin blocking the event loop."""
        if self._watch_config and self.config_path is not None:
            self.watcher = ConfigWatcher(
                self.config_path, current=lambda: self._config, apply=self.apply_config
            )
            self._background(self.watcher.run(), "config watcher")
        self._background(
            keep_pruning(self.store, lambda: self._config.history.keep_days), "retention"
        )
        self._background(LoopWatchdog().run(), "loop watchdog")
        self._background(self._keep_search_index(), "search index")

    async def _keep_search_index(self) -> None:
        """Fill the full-text index (history_search) in batches, off the replies' path."""
        while True:
            await asyncio.sleep(SEARCH_INDEX_EVERY_S)
            try:
                await self.store.index_for_search()
            except Exception as exc:  # a search indexes what is missing itself
                log.warning("could not update the search index: %s", exc)

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        self._stack.push_async_callback(stop)

    # -- plugins and scheduled jobs ---------------------------------------------------

    async def _start_scheduler(self, url: str, contexts: PluginContexts) -> None:
        """Open the job store, paused: no job may fire before the adapters can deliver."""
        from llamabot.scheduler import Scheduler

        scheduler = Scheduler(
            url,
            timezone=self._config.bot.timezone,
            plugins=self.plugins,
            context=contexts.for_job,
            metrics=self.metrics,
        )
        await scheduler.start()
        self._stack.push_async_callback(scheduler.aclose)
        self.scheduler = contexts.scheduler = scheduler

    async def _start_plugins(self) -> None:
        """Run on_start hooks and let jobs fire; at stop, the reverse, before the adapters."""
        assert self._contexts is not None
        timeout_s = self._config.plugins.hook_timeout_s
        await self.plugins.run_start_hooks(self._contexts.for_job, timeout_s)
        self._stack.push_async_callback(self._stop_plugins)
        if self.scheduler is not None:
            self.scheduler.resume()

    async def _stop_plugins(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.pause()
        assert self._contexts is not None
        timeout_s = self._config.plugins.hook_timeout_s
        await self.plugins.run_stop_hooks(self._contexts.for_job, timeout_s)
