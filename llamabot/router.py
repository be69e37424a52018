"""Where every Inbound goes: a command, the model, or nowhere.

Messages of one conversation are handled one at a time through its lane, each person's
in order and people taking turns; different conversations run concurrently (the model
limiter bounds generation). The access policy and flood control decide, before a
message queues, whether it may.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llamabot.access import command_refusal, refusal
from llamabot.adapters.base import Adapter
from llamabot.config import Config, LimitsSection, Resolved
from llamabot.context import CommandContext
from llamabot.conversation import Conversation
from llamabot.events import Inbound
from llamabot.flood import FloodControl, OncePer
from llamabot.metrics import Metrics
from llamabot.plugin_host import PluginHost, PluginTimeout, guarded
from llamabot.plugins import Command, UsageError
from llamabot.streaming import STOPPED_NOTICE, send_text

log = logging.getLogger(__name__)

ContextFactory = Callable[[Inbound, Adapter, Resolved, str], CommandContext[Any]]

# How often one person hears a "slow down" notice in one conversation.
FLOOD_NOTICE_EVERY_S = 60.0
# Discord shows at most 25 suggestions, and wants them within 3 s of the keystroke.
MAX_SUGGESTIONS = 25
AUTOCOMPLETE_TIMEOUT_S = 2.0
# How often one person hears why they may not talk to the bot (per reason).
REFUSAL_EVERY_S = 3600.0


@dataclass(frozen=True, slots=True)
class _Reading:
    """What a message asks of the bot under the config in force: its text, persona,
    the command it names (the words after the prefix, or None) and whether it was
    spoken to the bot."""

    text: str
    resolved: Resolved
    command: str | None
    spoken_to: bool


def _read(config: Config, inbound: Inbound) -> _Reading | None:
    """``None`` for an empty message; read once when queued, again when handled
    (a reload in between may have changed the persona or the prefix)."""
    text = inbound.text.strip()
    resolved = config.persona_for(inbound.channel)
    if inbound.invocation is not None:  # a native command: the platform parsed it
        return _Reading(text, resolved, inbound.invocation.name, True)
    if not text and not inbound.images:
        return None
    prefix = config.bot.command_prefix
    command = text[len(prefix) :] if text.startswith(prefix) and len(text) > len(prefix) else None
    spoken_to = inbound.channel.is_private or resolved.respond == "always" or inbound.addressed
    return _Reading(text, resolved, command, spoken_to)


@dataclass(slots=True)
class _Item:
    inbound: Inbound
    adapter: Adapter
    done: asyncio.Future[None]
    person: str


@dataclass
class _Lane:
    """One conversation's waiting messages, one queue per person, served in turn.

    Each person's messages keep their order; between people the lane takes turns, so a
    person with a backlog delays the others by at most one message.
    """

    queues: dict[str, deque[_Item]] = field(default_factory=dict)
    turns: deque[str] = field(default_factory=deque)
    current: _Item | None = None
    size: int = 0
    worker: asyncio.Task[None] | None = None

    def push(self, item: _Item) -> None:
        queue = self.queues.get(item.person)
        if queue is None:
            queue = self.queues[item.person] = deque()
            self.turns.append(item.person)
        queue.append(item)
        self.size += 1

    def pop(self) -> _Item:
        person = self.turns.popleft()
        queue = self.queues[person]
        item = queue.popleft()
        if queue:
            self.turns.append(person)
        else:
            del self.queues[person]
        self.size -= 1
        return item

    def count(self, person: str) -> int:
        """Messages of ``person`` waiting here, the one being handled included."""
        queue = self.queues.get(person)
        mine = len(queue) if queue is not None else 0
        current = self.current
        return mine + (1 if current is not None and current.person == person else 0)

    def take_all(self) -> list[_Item]:
        items = [item for queue in self.queues.values() for item in queue]
        self.queues.clear()
        self.turns.clear()
        self.size = 0
        return items


class Router:
    """Decides what each message is for, and keeps each conversation in order.

    In front of the queues sit the access policy (``[access]``) and flood control
    (``[limits]``): a message either queues or is answered at once with a short notice.
    """

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        conversation: Conversation,
        plugins: PluginHost,
        context: ContextFactory,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._conversation = conversation
        self._plugins = plugins
        self._context = context
        self._metrics = metrics or Metrics("")
        self._lanes: dict[str, _Lane] = {}
        # Per person, the conversations where they have messages waiting.
        self._people: dict[str, set[str]] = {}
        self._flood = FloodControl()
        self._flood_notices = OncePer(FLOOD_NOTICE_EVERY_S)
        self._refusals = OncePer(REFUSAL_EVERY_S)
        self._notices: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._running = asyncio.Event()
        self._running.set()

    def submit(self, inbound: Inbound, adapter: Adapter) -> asyncio.Future[None]:
        """Queue a message in its conversation's lane; the future completes once handled.

        A message nobody asked the bot to answer, from someone the access policy refuses,
        or past a flood limit completes at once (with a notice where one is due). After
        ``drain`` the future is cancelled at once: the message was not handled.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closed:
            done.cancel()
            return done
        person = inbound.author.qualified_id(inbound.channel.platform)
        key = inbound.channel.key
        lane = self._lanes.get(key)
        self._metrics.received(inbound.channel.platform)
        verdict = self._screen(inbound, person, lane)
        if verdict is not None:
            if verdict:
                self._post_notice(inbound, adapter, verdict)
            done.set_result(None)
            return done
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.push(_Item(inbound, adapter, done, person))
        self._people.setdefault(person, set()).add(key)
        if lane.worker is None:
            self._idle.clear()
            lane.worker = asyncio.create_task(self._work(key, lane), name=f"lane:{key}")
        return done

    def _screen(self, inbound: Inbound, person: str, lane: _Lane | None) -> str | None:
        """``None`` to queue the message; else the notice to answer it with ("" for none)."""
        config = self._config()
        reading = _read(config, inbound)
        if reading is None:
            return ""
        resolved = reading.resolved
        if not reading.spoken_to:
            if reading.command is None:
                return ""  # group chatter: not for the bot
            if self._plugins.command(reading.command.partition(" ")[0]) is None:
                return ""  # perhaps another bot's command
        reason = refusal(config, resolved.access, inbound)
        if reason is not None:
            self._metrics.skipped(inbound.channel.platform, "access")
            return reason if self._refusals.due(person, reason) else ""
        platform = inbound.channel.platform
        if platform == "console" or config.is_admin(platform, inbound.author.id):
            return None
        return self._flood_check(inbound, person, lane, resolved.limits)

    def _flood_check(
        self, inbound: Inbound, person: str, lane: _Lane | None, limits: LimitsSection
    ) -> str | None:
        key = inbound.channel.key
        waiting = lane.count(person) if lane is not None else 0
        elsewhere = self._people.get(person, set()) - {key}
        if waiting >= limits.max_queued_per_person:
            notice = (
                f"Slow down: {waiting} of your messages are still waiting here, so I skipped "
                "this one. Send it again once I have answered."
            )
        elif lane is not None and lane.size >= limits.max_queued_per_conversation:
            notice = (
                f"This chat is busy ({lane.size} messages are waiting), so I skipped your "
                "message. Please send it again in a moment."
            )
        elif len(elsewhere) >= limits.max_conversations_per_person:
            notice = (
                f"You have messages waiting in {len(elsewhere)} other chats; I skipped this "
                "one. Send it again once those are answered."
            )
        elif not self._flood.take_message(person, limits):
            notice = (
                "Slow down: you are sending messages faster than I answer "
                f"(about {limits.messages_per_minute:g} a minute), so I skipped this one."
            )
        else:
            return None
        log.info("flood control skipped a message of %s in %s", person, key)
        self._metrics.skipped(inbound.channel.platform, "flood")
        return notice if self._flood_notices.due(person, key) else ""

    def _post_notice(self, inbound: Inbound, adapter: Adapter, text: str) -> None:
        task = asyncio.create_task(self._notice(inbound, adapter, text))
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def queued(self) -> int:
        """Messages waiting in every conversation (not counting those being answered)."""
        return sum(lane.size for lane in self._lanes.values())

    def deepest(self) -> int:
        """Messages waiting in the busiest conversation."""
        return max((lane.size for lane in self._lanes.values()), default=0)

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
        """Wait until every queued message has been handled and every notice sent."""
        await self._idle.wait()
        while self._notices:
            await asyncio.gather(*list(self._notices), return_exceptions=True)

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
        for task in list(self._notices):
            task.cancel()
        workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _work(self, key: str, lane: _Lane) -> None:
        try:
            await self._running.wait()
            while lane.size and not self._closed:
                item = lane.current = lane.pop()
                try:
                    await self._handle(item.inbound, item.adapter)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("handling a message in %s failed", key)
                finally:
                    lane.current = None
                    self._settled(item.person, key, lane)
                    if not item.done.done():
                        item.done.set_result(None)
        finally:
            for item in lane.take_all():
                self._settled(item.person, key, lane)
                if not item.done.done():
                    item.done.cancel()
            lane.worker = None
            self._lanes.pop(key, None)
            if not self._lanes:
                self._idle.set()

    def _settled(self, person: str, key: str, lane: _Lane) -> None:
        """``person`` may have nothing left waiting in ``key``: forget the pairing then."""
        if lane.count(person):
            return
        keys = self._people.get(person)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._people[person]

    async def _handle(self, inbound: Inbound, adapter: Adapter) -> None:
        config = self._config()
        reading = _read(config, inbound)
        if reading is None:
            return
        text, resolved = reading.text, reading.resolved
        if reading.command is not None:
            await self._command(inbound, adapter, resolved, reading.command, reading.spoken_to)
            return
        if not reading.spoken_to:
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
        name, _, text_arguments = body.partition(" ")
        name = name.strip().lower()
        arguments: str | Mapping[str, object] = text_arguments
        if inbound.invocation is not None:
            arguments = inbound.invocation.options
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
        arguments: str | Mapping[str, object],
    ) -> None:
        config = self._config()
        prefix = config.bot.command_prefix
        denied = await command_refusal(command, inbound, adapter, config, resolved.access)
        if denied is not None:
            await self._notice(inbound, adapter, denied)
            return
        person = inbound.author.qualified_id(inbound.channel.platform)
        if not config.is_admin(inbound.channel.platform, inbound.author.id):
            cooldown_s = max(resolved.limits.command_cooldown_s, command.cooldown_s)
            wait = self._flood.command_wait(person, command.name, cooldown_s)
            if wait > 0:
                if self._flood_notices.due(person, inbound.channel.key, command.name):
                    await self._notice(
                        inbound,
                        adapter,
                        f"Please wait {wait:.0f} s before using {prefix}{command.name} again.",
                    )
                return
        try:
            if isinstance(arguments, str):
                values = command.parse(arguments)
            else:
                values = command.bind(arguments)
        except UsageError as exc:
            await self._notice(inbound, adapter, f"Usage: {command.usage_line(prefix)} ({exc})")
            return
        ctx = self._context(inbound, adapter, resolved, command.plugin)
        try:
            await guarded(
                command.handler(ctx, *values),
                what=f"command {prefix}{command.name}",
                plugin=command.plugin,
                timeout_s=config.plugins.hook_timeout_s,
            )
        except UsageError as exc:
            await self._notice(inbound, adapter, f"Usage: {command.usage_line(prefix)} ({exc})")
        except PluginTimeout:
            await self._notice(
                inbound,
                adapter,
                f"Sorry, {prefix}{command.name} took too long and was stopped. "
                "The admin log has details.",
            )
        except Exception:
            log.exception("command %s%s (plugin %s) failed", prefix, command.name, command.plugin)
            await self._notice(
                inbound,
                adapter,
                f"Sorry, {prefix}{command.name} failed. The admin log has details.",
            )

    async def autocomplete(
        self, inbound: Inbound, adapter: Adapter, name: str, option: str, typed: str
    ) -> list[str | int | float]:
        """What the command's plugin suggests for ``option`` while the person types
        ``typed`` (at most 25, in time for Discord's 3 s); nothing on any failure."""
        command = self._plugins.command(name)
        if command is None:
            return []
        suggest = command.autocomplete.get(option)
        if suggest is None:
            return list(command.choices.get(option, ()))[:MAX_SUGGESTIONS]
        config = self._config()
        resolved = config.persona_for(inbound.channel)
        if refusal(config, resolved.access, inbound) is not None:
            return []
        ctx = self._context(inbound, adapter, resolved, command.plugin)
        timeout_s = min(AUTOCOMPLETE_TIMEOUT_S, config.plugins.hook_timeout_s)
        what = f"autocomplete of {option} of {config.bot.command_prefix}{name}"
        try:
            found = await guarded(
                suggest(ctx, typed), what=what, plugin=command.plugin, timeout_s=timeout_s
            )
        except PluginTimeout:
            return []
        except Exception:
            log.exception("%s (plugin %s) failed", what, command.plugin)
            return []
        return list(found)[:MAX_SUGGESTIONS]

    async def _run_message_hooks(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved
    ) -> bool:
        timeout_s = self._config().plugins.hook_timeout_s
        for plugin in self._plugins.plugins():
            for hook in plugin.message_hooks:
                ctx = self._context(inbound, adapter, resolved, plugin.name)
                what = f"message hook {hook.__name__}"
                try:
                    if await guarded(hook(ctx), what=what, plugin=plugin.name, timeout_s=timeout_s):
                        return True
                except PluginTimeout:
                    pass  # logged by guarded; the message goes on to the model
                except Exception:
                    log.exception("%s of plugin %s failed", what, plugin.name)
        return False

    async def _run_reply_hooks(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved, reply: str
    ) -> None:
        timeout_s = self._config().plugins.hook_timeout_s
        for plugin in self._plugins.plugins():
            for hook in plugin.reply_hooks:
                ctx = self._context(inbound, adapter, resolved, plugin.name)
                what = f"reply hook {hook.__name__}"
                try:
                    await guarded(
                        hook(ctx, reply), what=what, plugin=plugin.name, timeout_s=timeout_s
                    )
                except PluginTimeout:
                    pass  # logged by guarded
                except Exception:
                    log.exception("%s of plugin %s failed", what, plugin.name)

    async def _notice(self, inbound: Inbound, adapter: Adapter, text: str) -> None:
        await send_text(adapter, inbound.channel, text, inbound.message_id, only_author=True)
