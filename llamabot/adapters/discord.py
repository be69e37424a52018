"""Discord through discord.py, running on llamabot's event loop (never ``Client.run``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import discord
import discord.gateway
import discord.http
import yarl

from llamabot.adapters.base import BotHandle, DeliveryError, PlatformLimits
from llamabot.adapters.discord_commands import (
    InteractionReplies,
    answer_autocomplete,
    channel_of,
    invocation_inbound,
    options_of,
    sync_commands,
)
from llamabot.config import DiscordSection
from llamabot.errors import StartupError
from llamabot.events import Author, ChannelRef, ImageRef, Inbound, SentMessage
from llamabot.images import download, too_large

log = logging.getLogger(__name__)

T = TypeVar("T")

# The model's output must never ping anyone: no @everyone/@here, roles, users or the
# author of the message being answered.
NO_PINGS = discord.AllowedMentions.none()

# Discord shows "is typing" for about 10 s; renew a little before it lapses.
TYPING_INTERVAL_S = 8.0
MAX_CHARS = 2000

# Back-off between attempts to reach Discord while it fails (discord.py itself retries a
# 5xx answer a few times within ~16 s, a refused connection not at all).
RETRY_BACKOFF_S = 0.5
RETRY_BACKOFF_MAX_S = 4.0
# Failures worth another try: Discord's servers or the network, not a refusal.
_TRANSIENT = (discord.DiscordServerError, aiohttp.ClientError, OSError, TimeoutError)

# Error codes Discord answers when a reply's original message is gone.
_UNKNOWN_MESSAGE = 10008
_INVALID_FORM_BODY = 50035


class DiscordStartError(StartupError, RuntimeError):
    """The Discord adapter cannot start; the message says what the admin should do."""


class MessageContentIntentError(DiscordStartError):
    """The bot's application lacks the privileged Message Content intent."""


def _client_options(proxy: str | None, guild_ready_timeout: float) -> dict[str, Any]:
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    return {
        "intents": intents,
        "proxy": proxy,
        "guild_ready_timeout": guild_ready_timeout,
        "max_messages": None,  # replies are edited by id; no message cache needed
        "chunk_guilds_at_startup": False,
    }


class _Client(discord.Client):
    """discord.Client that hands events to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self._adapter = adapter
        self.connected = asyncio.Event()

    async def on_connect(self) -> None:
        if self.connected.is_set():  # a new session after a lost one
            self._adapter.reconnected()
        self.connected.set()

    async def on_resumed(self) -> None:
        self._adapter.reconnected()

    async def on_message(self, message: discord.Message) -> None:
        # discord.py starts one task per event in arrival order; the inbox takes them in
        # that order (one writer thread), so they reach the router in the order sent.
        await self._adapter.receive(message)

    async def on_interaction(self, interaction: discord.Interaction[Any]) -> None:
        await self._adapter.interaction(interaction)


class _ShardedClient(discord.AutoShardedClient, _Client):
    """The same, running some shards of a bot split over processes ([discord] shard_ids)."""

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before each identify after the first; Discord allows
        # max_concurrency identifies per 5 s, which discord.py's own gateway limiter keeps.
        if not initial:
            await super().before_identify_hook(shard_id, initial=initial)


class DiscordAdapter:
    """The Discord platform: servers, threads and DMs, replies streamed by editing."""

    platform = "discord"

    def __init__(
        self,
        section: DiscordSection,
        *,
        token: str | None = None,
        guild_ready_timeout: float = 2.0,
        connect_timeout: float = 60.0,
    ) -> None:
        if token is None:
            token = os.environ.get(section.token_env, "").strip()
            if not token:
                raise DiscordStartError(
                    f"no Discord bot token: set the environment variable {section.token_env} "
                    "to the token from the Discord developer portal (Bot -> Reset Token), or "
                    "change [discord] token_env in bot.toml"
                )
        self._section = section
        self._token = token
        self._guild_ready_timeout = guild_ready_timeout
        self._connect_timeout = connect_timeout
        self.limits = PlatformLimits(
            max_chars=MAX_CHARS,
            edit_interval_s=section.edit_interval,
            supports_edit=True,
            typing_interval_s=TYPING_INTERVAL_S,
            typing_after_s=section.typing_after_s,
        )
        self._bot: BotHandle | None = None
        self._client: _Client | None = None
        self._runner: asyncio.Task[None] | None = None
        self._forbidden: set[str] = set()
        self._mention: re.Pattern[str] | None = None
        self._may_ping: set[str] = set()

    # -- lifespan ------------------------------------------------------------------

    async def start(self, bot: BotHandle) -> None:
        """Log in, connect to the gateway and return once Discord accepted the session."""
        section = self._section
        # discord.py reads both at request/connect time, so setting them here redirects
        # all its traffic (API-compatible proxies, the test server).
        discord.http.Route.BASE = section.api_base.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(section.gateway_url)
        self._bot = bot
        options = _client_options(section.proxy or None, self._guild_ready_timeout)
        client: _Client
        if section.shard_count is None:
            client = _Client(self, **options)
        else:
            options.update(shard_count=section.shard_count, shard_ids=section.shard_ids)
            client = _ShardedClient(self, **options)
        self._client = client
        try:
            await self._connect(client)
        except BaseException:
            await self.stop()
            raise
        await self._sync_slash_commands(client)

    async def _sync_slash_commands(self, client: _Client) -> None:
        """Register the plugins' commands as slash commands (``[discord] commands``)."""
        if self._bot is None:
            return
        specs = [] if self._section.commands == "prefix" else self._bot.command_specs()
        try:
            await sync_commands(client, self._bot, specs)
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            log.warning(
                "could not register the slash commands with Discord (%s); the text commands "
                "work, and the next start tries again",
                exc,
            )

    async def _connect(self, client: _Client) -> None:
        try:
            await client.login(self._token)
        except discord.LoginFailure:
            raise DiscordStartError(
                f"Discord rejected the bot token in {self._section.token_env}; copy a fresh "
                "token from the developer portal (Bot -> Reset Token)"
            ) from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            raise DiscordStartError(
                f"cannot reach Discord at {self._section.api_base}: {exc}; check the network, "
                "[discord] api_base and [discord] proxy"
            ) from None
        assert client.user is not None
        self._mention = re.compile(rf"\s*<@!?{client.user.id}>\s*")
        self._runner = asyncio.create_task(self._run(client), name="discord-gateway")
        connected = asyncio.create_task(client.connected.wait())
        try:
            done, _ = await asyncio.wait(
                {self._runner, connected},
                timeout=self._connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            connected.cancel()
        if self._runner in done:
            raise self._start_error(self._runner.exception()) from None
        if connected not in done:
            raise DiscordStartError(
                f"no answer from the Discord gateway at {self._section.gateway_url} within "
                f"{self._connect_timeout:.0f} s; check the network and [discord] gateway_url"
            )
        log.info("connected to Discord as %s (id %s)", client.user.name, client.user.id)

    def _start_error(self, exc: BaseException | None) -> DiscordStartError:
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            return MessageContentIntentError(
                "Discord refused the Message Content intent: enable 'Message Content Intent' "
                "under Bot -> Privileged Gateway Intents in the Discord developer portal "
                "(https://discord.com/developers/applications), then start the bot again"
            )
        if isinstance(exc, discord.ConnectionClosed) and exc.code == 4004:
            return DiscordStartError(
                f"Discord rejected the bot token in {self._section.token_env} on the gateway; "
                "copy a fresh token from the developer portal"
            )
        return DiscordStartError(f"the Discord gateway connection failed: {exc}")

    async def _run(self, client: _Client) -> None:
        # discord.py reconnects and resumes by itself; it only returns or raises for good.
        try:
            await client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            if client.connected.is_set():
                log.error("%s", self._start_error(discord.PrivilegedIntentsRequired(None)))
            raise
        except Exception as exc:
            if client.connected.is_set():
                log.error("the Discord connection ended: %s", exc)
            raise

    async def stop_receiving(self) -> None:
        """Keep the gateway open until ``stop``.

        Discord never sends a missed message again: one arriving while the bot stops is
        taken into the inbox and answered at the next start.
        """

    async def stop(self) -> None:
        """Close the gateway and the HTTP session."""
        client, runner = self._client, self._runner
        self._client = None
        self._runner = None
        if client is not None:
            await client.close()
        if runner is not None:
            try:
                async with asyncio.timeout(10):
                    await asyncio.shield(runner)
            except TimeoutError:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
            except Exception:  # already reported by _run or start
                pass

    # -- inbound -------------------------------------------------------------------

    async def interaction(self, interaction: discord.Interaction[Any]) -> None:
        """A slash command (or the typing of one of its options) from Discord."""
        bot = self._bot
        if bot is None or self._section.commands == "prefix":
            return
        if interaction.guild_id is None and not self._section.allow_dms:
            return
        author = _author(interaction.user)
        try:
            if interaction.type is discord.InteractionType.autocomplete:
                name, _, focused = options_of(interaction)
                inbound = Inbound(channel_of(interaction), author, "")
                found = await bot.autocomplete(
                    inbound, self, name, focused or "", _typed(interaction, focused)
                )
                await answer_autocomplete(interaction, found)
            elif interaction.type is discord.InteractionType.application_command:
                inbound = invocation_inbound(interaction, author)
                name = inbound.invocation.name if inbound.invocation else ""
                spec = next((s for s in bot.command_specs() if s.name == name), None)
                admin_only = spec is not None and spec.permission == "admin"
                replies = InteractionReplies(self, interaction, ephemeral=admin_only)
                # Not through the durable inbox: an interaction cannot be answered after
                # a restart anyway. Its end tells the interaction it is over.
                handled = bot.submit(inbound, replies)
                handled.add_done_callback(replies.finished)
        except Exception:
            log.exception("could not take a Discord slash command")

    async def receive(self, message: discord.Message) -> None:
        """Hand one gateway message to the bot, if it is one the bot should see."""
        inbound = self.normalize(message)
        if inbound is None or self._bot is None:
            return
        try:
            await self._bot.accept(inbound, self)
        except Exception:
            log.exception("could not queue a Discord message in %s", inbound.channel.key)

    def normalize(self, message: discord.Message) -> Inbound | None:
        """A discord.Message as llamabot's Inbound; ``None`` for messages to ignore."""
        client = self._client
        me = client.user if client is not None else None
        if me is None or message.author.id == me.id:
            return None
        if message.author.bot and self._section.ignore_bots:
            return None
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None  # joins, pins, boosts: nobody is talking
        private = message.guild is None
        if private and not self._section.allow_dms:
            return None
        channel = message.channel
        if isinstance(channel, discord.Thread):
            chat_id, thread_id = str(channel.parent_id), str(channel.id)
        else:
            chat_id, thread_id = str(channel.id), None
        mentioned = any(user.id == me.id for user in message.mentions)
        resolved = message.reference.resolved if message.reference is not None else None
        replied = isinstance(resolved, discord.Message) and resolved.author.id == me.id
        text = message.content
        if self._mention is not None:
            text = self._mention.sub(" ", text)
        text = text.strip()
        images = _images_of(message)
        if not text and not images:
            return None  # a file or a bare mention: nothing to answer
        if self._section.commands == "slash" and self._is_text_command(text):
            return None  # commands are slash commands here; Discord offers them as such
        return Inbound(
            channel=ChannelRef(
                platform=self.platform,
                chat_id=chat_id,
                thread_id=thread_id,
                guild_id=str(message.guild.id) if message.guild is not None else None,
                is_private=private,
            ),
            author=_author(message.author),
            text=text,
            message_id=str(message.id),
            addressed=mentioned or replied,
            images=images,
            chat_title=_title_of(message),
        )

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        """Download an attachment from Discord's CDN."""
        if image.size is not None and image.size > max_bytes:
            raise too_large(max_bytes)
        return await download(image.source, max_bytes=max_bytes)

    def _is_text_command(self, text: str) -> bool:
        bot = self._bot
        if bot is None or not text.startswith(bot.command_prefix):
            return False
        word = text[len(bot.command_prefix) :].split(maxsplit=1)
        return bool(word) and any(spec.name == word[0].lower() for spec in bot.command_specs())

    # -- outbound ------------------------------------------------------------------

    def _target(self, to: ChannelRef) -> discord.PartialMessageable:
        if self._client is None:
            raise DeliveryError("the Discord adapter is not running")
        if to.is_private:
            kind = discord.ChannelType.private
        elif to.thread_id is not None:
            kind = discord.ChannelType.public_thread
        else:
            kind = discord.ChannelType.text
        return self._client.get_partial_messageable(
            int(to.thread_id or to.chat_id),
            guild_id=int(to.guild_id) if to.guild_id else None,
            type=kind,
        )

    def mention(self, user_id: str, name: str) -> str:
        """A mention that notifies the person, for text the bot writes itself (a reminder).

        Only a mention made here may ping, once; the model's text never pings anyone.
        """
        self._may_ping.add(user_id)
        return f"<@{user_id}>"

    def _allowed_mentions(self, text: str) -> discord.AllowedMentions:
        users = [uid for uid in self._may_ping if f"<@{uid}>" in text]
        if not users:
            return NO_PINGS
        self._may_ping.difference_update(users)
        return discord.AllowedMentions(
            everyone=False,
            roles=False,
            replied_user=False,
            users=[discord.Object(id=int(uid)) for uid in users],
        )

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        """Post a message, as a reply to ``reply_to`` when that message still exists."""
        target = self._target(to)
        pings = self._allowed_mentions(text)
        reference = None
        if reply_to is not None:
            # fail_if_not_exists=False: Discord posts a plain message if the original is gone.
            reference = discord.MessageReference(
                message_id=int(reply_to),
                channel_id=target.id,
                guild_id=int(to.guild_id) if to.guild_id else None,
                fail_if_not_exists=False,
            )
        # One nonce for every attempt: Discord (enforce_nonce) answers a repeated send with
        # the message the first one created, so a send that timed out is safe to repeat.
        nonce = random.getrandbits(63)

        async def post() -> discord.Message:
            if reference is None:
                return await target.send(text, allowed_mentions=pings, nonce=nonce)
            return await target.send(
                text,
                reference=reference,
                allowed_mentions=pings,
                mention_author=False,
                nonce=nonce,
            )

        try:
            try:
                message = await self._retrying("a message", to, post)
            except discord.HTTPException as exc:
                if reference is None or exc.code not in (_UNKNOWN_MESSAGE, _INVALID_FORM_BODY):
                    raise
                # A server that ignores fail_if_not_exists: send without the reply.
                reference = None
                message = await self._retrying("a message", to, post)
        except discord.Forbidden as exc:
            raise self._refused(to, exc) from None
        except discord.HTTPException as exc:
            raise DeliveryError(f"Discord refused the message: {exc.status} {exc.text}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"cannot reach Discord: {exc}") from None
        self._forbidden.discard(to.key)
        return SentMessage(channel=to, message_id=str(message.id))

    async def edit(self, sent: SentMessage, text: str) -> None:
        """Replace the text of a message the bot sent."""
        partial = self._target(sent.channel).get_partial_message(int(sent.message_id))
        try:
            await self._retrying(
                "an edit",
                sent.channel,
                lambda: partial.edit(content=text, allowed_mentions=NO_PINGS),
            )
        except discord.Forbidden as exc:
            raise self._refused(sent.channel, exc) from None
        except discord.HTTPException as exc:
            raise DeliveryError(f"Discord refused the edit: {exc.status} {exc.text}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"cannot reach Discord: {exc}") from None

    def reconnected(self) -> None:
        """The gateway connection was lost and made again (for the metrics)."""
        if self._bot is not None:
            self._bot.metrics.reconnected(self.platform)

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        """Discord tells with every message (``Author.is_moderator``); here: not known."""
        return False

    async def typing(self, to: ChannelRef) -> None:
        """Show "is typing" in the channel for the next ~10 seconds."""
        try:
            await self._target(to).typing()
        except discord.Forbidden as exc:
            raise self._refused(to, exc) from None
        except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
            raise DeliveryError(f"typing indicator failed: {exc}") from None

    async def _retrying(self, what: str, to: ChannelRef, op: Callable[[], Awaitable[T]]) -> T:
        """Run ``op``, retrying network and server failures with back-off.

        Retries for up to ``[discord] delivery_retry_s``; then the last failure is raised.
        """
        deadline = time.monotonic() + self._section.delivery_retry_s
        failures = 0
        while True:
            try:
                return await op()
            except _TRANSIENT as exc:
                failures += 1
                left = deadline - time.monotonic()
                if left <= 0 or self._client is None:
                    raise
                if failures == 1:
                    log.info("Discord did not take %s in %s (%s); retrying", what, to.key, exc)
                delay = min(RETRY_BACKOFF_S * 2 ** (failures - 1), RETRY_BACKOFF_MAX_S, left)
                await asyncio.sleep(delay)

    def _refused(self, to: ChannelRef, exc: discord.Forbidden) -> DeliveryError:
        # Logged once per channel: a channel without permission would otherwise log on
        # every message anyone posts there.
        if to.key not in self._forbidden:
            self._forbidden.add(to.key)
            log.warning(
                "Discord forbids the bot to post in channel %s (%s); give its role the "
                "'Send Messages' (and 'Send Messages in Threads') permission there",
                to.thread_id or to.chat_id,
                exc.text or "Missing Permissions",
            )
        return DeliveryError(f"no permission to post in {to.key}", permanent=True)


def _images_of(message: discord.Message) -> tuple[ImageRef, ...]:
    """The message's attachments that are pictures."""
    return tuple(
        ImageRef(a.url, a.content_type, a.size, a.filename)
        for a in message.attachments
        if (a.content_type or "").startswith("image/")
    )


def _typed(interaction: discord.Interaction[Any], focused: str | None) -> str:
    """What the person has typed so far into the option being completed."""
    data: Any = interaction.data or {}
    for option in data.get("options") or []:
        if option.get("name") == focused:
            return str(option.get("value", ""))
    return ""


def _author(user: discord.User | discord.Member) -> Author:
    """The author with what the access policy needs: roles and standing in this server."""
    if isinstance(user, discord.Member):
        permissions = user.guild_permissions
        roles = tuple(
            value
            for role in user.roles
            if not role.is_default()
            for value in (str(role.id), role.name)
        )
        moderator: bool | None = permissions.administrator or permissions.manage_guild
    else:
        roles, moderator = (), None
    return Author(
        id=str(user.id),
        name=user.display_name,
        is_bot=user.bot,
        username=user.name,
        roles=roles,
        is_moderator=moderator,
    )


def _title_of(message: discord.Message) -> str:
    """ "#general (Llama fans)", or "DM with Ada"."""
    if message.guild is None:
        return f"DM with {message.author.display_name}"
    name = getattr(message.channel, "name", None) or str(message.channel.id)
    return f"#{name} ({message.guild.name})"
