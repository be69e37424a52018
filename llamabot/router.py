"""Where every Inbound goes: a command, the model, or nowhere.

Messages of one conversation are handled in order through a per-conversation lane;
different conversations run concurrently (the model limiter bounds generation).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llamabot.adapters.base import Adapter
from llamabot.config import Config, Resolved
from llamabot.conversation import Conversation
from llamabot.events import Inbound
from llamabot.plugin_host import PluginHost
from llamabot.plugins import Command, CommandContext, UsageError
from llamabot.streaming import STOPPED_NOTICE, send_text

log = logging.getLogger(__name__)

ContextFactory = Callable[[Inbound, Adapter, Resolved, str | None], CommandContext]


@dataclass
class _Lane:
    """The queue of one conversation and the task working through it."""

    items: deque[tuple[Inbound, Adapter, asyncio.Future[None]]] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class Router:
    """Decides what each message is for, and keeps each conversation in order."""

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        conversation: Conversation,
        plugins: PluginHost,
        context: ContextFactory,
    ) -> None:
        self._config = config
        self._conversation = conversation
        self._plugins = plugins
        self._context = context
        self._lanes: dict[str, _Lane] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._running = asyncio.Event()
        self._running.set()

    def submit(self, inbound: Inbound, adapter: Adapter) -> asyncio.Future[None]:
        """Queue a message in its conversation's lane; the future completes once handled.

        After ``drain`` the future is cancelled at once: the message was not handled.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            done.cancel()
            return done
        key = inbound.channel.key
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.items.append((inbound, adapter, done))
        if lane.worker is None:
            self._idle.clear()
            lane.worker = asyncio.create_task(self._work(key, lane), name=f"lane:{key}")
        return done

    def interrupt(self, key: str) -> bool:
        """Stop the message being handled in conversation ``key`` (Ctrl-C in the terminal).

        Cancels the lane's worker, so the reply takes the shutdown path: what was written
        is kept, ends with ``[interrupted]`` and is stored as ``interrupted``. Messages
        queued behind it are dropped. Returns whether there was anything to stop.
        """
        lane = self._lanes.get(key)
        if lane is None or lane.worker is None or lane.worker.done():
            return False
        lane.worker.cancel(msg=STOPPED_NOTICE)
        return True

    async def wait_idle(self) -> None:
        """Wait until every queued message has been handled."""
        await self._idle.wait()

    def pause(self) -> None:
        """Queue messages without handling them (until ``resume``)."""
        self._running.clear()

    def resume(self) -> None:
        """Handle queued messages again."""
        self._running.set()

    async def drain(self, grace_s: float) -> None:
        """Take no new messages; give the ones in flight up to ``grace_s`` to finish.

        Messages still queued are not started: their futures are cancelled.
        """
        self._closed = True
        try:
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("stopping with replies still in flight after %g s", grace_s)

    async def close(self) -> None:
        """Stop taking messages and cancel the ones in flight."""
        self._closed = True
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _work(self, key: str, lane: _Lane) -> None:
        try:
            await self._running.wait()
            while lane.items and not self._closed:
                inbound, adapter, done = lane.items[0]
                try:
                    await self._handle(inbound, adapter)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("handling a message in %s failed", key)
                finally:
                    lane.items.popleft()
                    if not done.done():
                        done.set_result(None)
        finally:
            for _, _, done in lane.items:
                if not done.done():
                    done.cancel()
            lane.items.clear()
            lane.worker = None
            self._lanes.pop(key, None)
            if not self._lanes:
                self._idle.set()

    async def _handle(self, inbound: Inbound, adapter: Adapter) -> None:
        config = self._config()
        text = inbound.text.strip()
        if not text:
            return
        resolved = config.persona_for(inbound.channel)
        spoken_to = inbound.channel.is_private or resolved.respond == "always" or inbound.addressed
        prefix = config.bot.command_prefix
        if text.startswith(prefix) and len(text) > len(prefix):
            await self._command(inbound, adapter, resolved, text[len(prefix) :], spoken_to)
            return
        if not spoken_to:
            return
        limit = config.bot.max_message_chars
        if len(text) > limit:
            await self._notice(
                inbound,
                adapter,
                f"That message is {len(text):,} characters long; the limit is {limit:,}. "
                "Please send a shorter one.",
            )
            return
        if await self._run_message_hooks(inbound, adapter, resolved):
            return
        reply = await self._conversation.respond(inbound, adapter, resolved)
        if reply is not None:
            await self._run_reply_hooks(inbound, adapter, resolved, reply)

    async def _command(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved, body: str, spoken_to: bool
    ) -> None:
        name, _, arguments = body.partition(" ")
        name = name.strip().lower()
        command = self._plugins.command(name)
        prefix = self._config().bot.command_prefix
        if command is None:
            if spoken_to:
                await self._notice(
                    inbound,
                    adapter,
                    f"Unknown command {prefix}{name}. Send {prefix}help for the list.",
                )
            return
        await self._run_command(command, inbound, adapter, resolved, arguments)

    async def _run_command(
        self,
        command: Command,
        inbound: Inbound,
        adapter: Adapter,
        resolved: Resolved,
        arguments: str,
    ) -> None:
        config = self._config()
        prefix = config.bot.command_prefix
        if command.admin and not config.is_admin(inbound.channel.platform, inbound.author.id):
            await self._notice(
                inbound, adapter, f"Only the bot's admins can use {prefix}{command.name}."
            )
            return
        try:
            values = command.parse(arguments)
        except UsageError as exc:
            await self._notice(inbound, adapter, f"Usage: {command.usage_line(prefix)} ({exc})")
            return
        ctx = self._context(inbound, adapter, resolved, command.plugin)
        try:
            await command.handler(ctx, *values)
        except UsageError as exc:
            await self._notice(inbound, adapter, f"Usage: {command.usage_line(prefix)} ({exc})")
        except Exception:
            log.exception("command %s%s (plugin %s) failed", prefix, command.name, command.plugin)
            await self._notice(
                inbound,
                adapter,
                f"Sorry, {prefix}{command.name} failed. The admin log has details.",
            )

    async def _run_message_hooks(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved
    ) -> bool:
        for plugin in self._plugins.plugins():
            for hook in plugin.message_hooks:
                ctx = self._context(inbound, adapter, resolved, plugin.name)
                try:
                    if await hook(ctx):
                        return True
                except Exception:
                    log.exception("message hook of plugin %s failed", plugin.name)
        return False

    async def _run_reply_hooks(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved, reply: str
    ) -> None:
        for plugin in self._plugins.plugins():
            for hook in plugin.reply_hooks:
                ctx = self._context(inbound, adapter, resolved, plugin.name)
                try:
                    await hook(ctx, reply)
                except Exception:
                    log.exception("reply hook of plugin %s failed", plugin.name)

    async def _notice(self, inbound: Inbound, adapter: Adapter, text: str) -> None:
        await send_text(adapter, inbound.channel, text, inbound.message_id)
