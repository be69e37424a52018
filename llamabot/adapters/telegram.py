"""Telegram through python-telegram-bot, on llamabot's own event loop.

Updates arrive by long polling or by webhook (a small aiohttp server); each text message
becomes an ``Inbound`` and is confirmed to Telegram (the next ``getUpdates`` offset, the
webhook's HTTP answer) only once it is durably queued. PTB's ``Updater`` confirms updates
as soon as it has fetched them, so a stop would lose the ones not handled yet.
Replies leave as Telegram HTML converted from the model's Markdown, falling back to plain
text when Telegram refuses the entities.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import os
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiolimiter import AsyncLimiter
from telegram import BotCommand, Message, MessageEntity, ReplyParameters, Update
from telegram.constants import ChatAction, ChatMemberStatus, ChatType, ParseMode
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ApplicationBuilder, ExtBot

from llamabot.adapters.base import BotHandle, DeliveryError, PlatformLimits
from llamabot.adapters.telegram_html import markdown_to_html, visible_text
from llamabot.adapters.telegram_requests import ConnectionPerCall
from llamabot.config import TelegramSection
from llamabot.errors import StartupError
from llamabot.events import Author, ChannelRef, ImageRef, Inbound, SentMessage
from llamabot.images import ImageRejected, download, too_large
from llamabot.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
AnyApplication = Application[ExtBot[None], Any, Any, Any, Any, Any]

PLATFORM = "telegram"
MAX_CHARS = 4096
TYPING_INTERVAL_S = 4.0  # Telegram shows "typing…" for about 5 s per sendChatAction
POLL_TIMEOUT_S = 10
# How long (whole seconds, as Telegram takes them) the start listens for another
# process polling the same token; 0 does not listen.
CONFLICT_PROBE_S = 1
UPDATE_TYPES = ["message"]
NETWORK_BACKOFF_S = 0.5
NETWORK_BACKOFF_MAX_S = 4.0
# Telegram's limit in a group: 20 messages a minute ([telegram] max_messages_per_s is the
# overall one).
GROUP_RATE = 20
# How long an answer to "is this person a group admin?" is trusted.
MODERATOR_CACHE_S = 300.0
GROUP_PERIOD_S = 60.0
POLL_BACKOFF_MAX_S = 10.0
# At stop, how long confirming the last fetched updates to Telegram may take.
CONFIRM_TIMEOUT_S = 3.0
RATE_LIMIT_WAITS = 5
REMEMBERED_MESSAGES = 4096
# Bot API calls in flight at once. Telegram accepts about 30 messages a second per bot, which
# 8 parallel calls sustain even at 250 ms round trips; more only open connections, and
# httpcore's pool bookkeeping grows with them (200 busy chats ran 3x slower with 64), while
# PTB's pool gives up on a free connection after 1 s. Beyond this, calls wait here.
MAX_IN_FLIGHT = 8
SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")
# Closing tags and whitespace that end an HTML message; opening tags and whitespace that
# start one (whitespace inside an opening tag separates its attributes and stays).
_HTML_TAIL = re.compile(r"(?:\s|</[A-Za-z][A-Za-z0-9-]*>)+$")
_HTML_HEAD = re.compile(r"^(?:\s|<[A-Za-z][^<>]*>)+")
_OUTSIDE_TAGS_SPACE = re.compile(r"^\s+|(?<=>)\s+")
COMMAND = re.compile(r"/([A-Za-z0-9_]+)(?:@([A-Za-z0-9_]+))?(?=\s|$)")
# Loggers that may print the token: httpx logs each URL (the token is in its path) and
# PTB's Bot logs its base URLs at DEBUG. A filter acts only on its own logger, so each.
TOKEN_LOGGERS = ("httpx", "telegram.Bot", "telegram.ext.ExtBot")


@dataclass(slots=True)
class _Shown:
    """What one of the bot's messages shows now, as last sent (stripped, like Telegram)."""

    body: str
    parse_mode: str | None
    plain_only: bool = False


class _RedactToken(logging.Filter):
    """Replaces the bot token in log records with ``<token>``."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg = message.replace(self._token, "<token>")
            record.args = None
        return True


class TelegramAdapter:
    """The Telegram platform: private chats, groups and forum topics.

    ``token`` defaults to the environment variable named by ``section.token_env``; in
    webhook mode the secret token comes from ``section.secret_token_env``.
    """

    platform = PLATFORM

    def __init__(self, section: TelegramSection, *, token: str | None = None) -> None:
        self._section = section
        self._token = token if token is not None else os.environ.get(section.token_env, "")
        if not self._token:
            raise StartupError(
                f"Telegram is enabled but the environment variable {section.token_env} is not "
                "set; set it to the bot token @BotFather gave you (never put it in bot.toml)"
            )
        self._secret = ""
        if section.mode == "webhook":
            self._secret = _webhook_secret(section)
        self.limits = PlatformLimits(
            max_chars=MAX_CHARS,
            edit_interval_s=section.edit_interval,
            supports_edit=True,
            typing_interval_s=TYPING_INTERVAL_S,
            typing_after_s=section.typing_after_s,
        )
        self._app: AnyApplication | None = None
        self._handle: BotHandle | None = None
        self._metrics = Metrics("")  # the bot's, once started
        self._bot_id = 0
        self._username = ""
        self._webhook_runner: web.AppRunner | None = None
        self._poller: asyncio.Task[None] | None = None
        self._offset = 0  # the next update id to fetch: all before it are in the inbox
        self._confirmed = 0  # the offset Telegram has been sent
        self._redaction = _RedactToken(self._token)
        self._moderators: OrderedDict[tuple[str, str], tuple[float, bool]] = OrderedDict()
        self._background: set[asyncio.Task[Any]] = set()
        self._shown: OrderedDict[tuple[str, str], _Shown] = OrderedDict()
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        rate = section.max_messages_per_s
        self._global_limit = AsyncLimiter(rate, 1.0) if rate > 0 else None
        self._group_limits: OrderedDict[int, AsyncLimiter] = OrderedDict()

    @property
    def username(self) -> str:
        """The bot's @username (without the @), known once started."""
        return self._username

    # -- lifespan --------------------------------------------------------------------

    async def start(self, bot: BotHandle) -> None:
        """Connect, publish the command menu, and start receiving updates."""
        if self._app is not None:
            raise RuntimeError("the Telegram adapter is already running")
        self._handle = bot
        self._metrics = bot.metrics
        for name in TOKEN_LOGGERS:
            logging.getLogger(name).addFilter(self._redaction)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        section = self._section
        builder = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(section.base_url)
            .base_file_url(_file_url(section.base_url))
            .job_queue(None)  # llamabot has its own scheduler
            .updater(None)  # updates are fetched here, see the module docstring
            # Replies in flight, plus room for a typing indicator and a lookup beside them.
            .request(ConnectionPerCall(MAX_IN_FLIGHT + 2))
        )
        app = builder.build()
        self._app = app
        try:
            await app.initialize()
        except InvalidToken:
            raise StartupError(
                f"Telegram rejected the bot token in {section.token_env}; copy it again from "
                "@BotFather"
            ) from None
        except TelegramError as exc:
            raise StartupError(
                f"cannot reach the Telegram Bot API at {section.base_url} ({exc}); check the "
                "network or [telegram] base_url"
            ) from None
        self._bot_id = app.bot.id
        self._username = app.bot.username or ""
        await self._publish_commands(app)
        await app.start()
        if section.mode == "webhook":
            await self._start_webhook(app)
        else:
            # A webhook left registered would make every getUpdates fail with a conflict.
            await self._call("deleteWebhook", "polling", lambda: app.bot.delete_webhook())
            await self._refuse_a_second_poller(app)
            self._poller = asyncio.create_task(self._poll(app), name="telegram-polling")
        log.info("Telegram: @%s is %s", self._username, _mode_text(section))

    async def _refuse_a_second_poller(self, app: AnyApplication) -> None:
        """Stop the start if another process polls this token already.

        Telegram answers two pollers' requests with 409 Conflict in turn, each stealing the
        other's updates. Our short probe cuts the other's long poll; it polls again at
        once and cuts ours, so the probe sees 409. The probe confirms nothing.
        """
        if CONFLICT_PROBE_S <= 0:
            return
        try:
            await app.bot.get_updates(
                timeout=CONFLICT_PROBE_S, limit=1, allowed_updates=UPDATE_TYPES
            )
        except Conflict:
            raise StartupError(
                f"another program is already receiving @{self._username}'s updates (Telegram "
                "answered 409 Conflict); one bot token takes one poller: stop the other "
                "process first, or run one process per token"
            ) from None
        except TelegramError as exc:
            log.debug("Telegram: the start's poll probe failed (%s); polling goes on", exc)

    async def stop_receiving(self) -> None:
        """Fetch no more updates (or refuse webhooks); confirm the ones queued."""
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
            await self._confirm_offset()
        if self._webhook_runner is not None:
            runner, self._webhook_runner = self._webhook_runner, None
            await runner.cleanup()

    async def stop(self) -> None:
        """Stop receiving, then close PTB, in the reverse order of ``start``."""
        await self.stop_receiving()
        app, self._app = self._app, None
        background = list(self._background)
        for task in background:
            task.cancel()  # refusals and typing calls not finished yet are not worth waiting for
        await asyncio.gather(*background, return_exceptions=True)
        if app is not None:
            if app.running:
                await app.stop()
            await app.shutdown()
        for name in TOKEN_LOGGERS:
            logging.getLogger(name).removeFilter(self._redaction)

    async def _publish_commands(self, app: AnyApplication) -> None:
        assert self._handle is not None
        commands: list[BotCommand] = []
        for spec in self._handle.command_specs():
            name = spec.name.lower()
            if not COMMAND_NAME.fullmatch(name):
                log.info(
                    "not listing /%s in the Telegram menu: Telegram allows only a-z, 0-9 and _",
                    spec.name,
                )
                continue
            description = (spec.description or spec.usage or name).strip()[:256]
            commands.append(BotCommand(name, description))
        if len(commands) > 100:
            log.info("Telegram lists at most 100 commands; %d are left out", len(commands) - 100)
            commands = commands[:100]
        try:
            await self._call(
                "setMyCommands", "the command menu", lambda: app.bot.set_my_commands(commands)
            )
        except (DeliveryError, BadRequest) as exc:
            log.warning("could not publish the command menu to Telegram: %s", exc)

    async def _start_webhook(self, app: AnyApplication) -> None:
        section = self._section
        path = urlsplit(section.webhook_url).path or "/"
        server = web.Application()
        server.router.add_post(path, self._on_webhook)
        # No access log: admins often put a secret in the webhook path.
        runner = web.AppRunner(server, access_log=None)
        await runner.setup()
        self._webhook_runner = runner
        try:
            await web.TCPSite(runner, section.listen, section.port).start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for Telegram webhooks on {section.listen}:{section.port} "
                f"({exc.strerror}); choose another [telegram] port or stop what uses it"
            ) from None

        async def register() -> bool:
            return await app.bot.set_webhook(
                url=section.webhook_url, secret_token=self._secret, allowed_updates=UPDATE_TYPES
            )

        try:
            await self._call("setWebhook", "the webhook", register)
        except (DeliveryError, BadRequest) as exc:
            raise StartupError(
                f"Telegram refused the webhook {section.webhook_url} ({exc}); check "
                "[telegram] webhook_url"
            ) from None

    # -- receiving ---------------------------------------------------------------------

    async def _poll(self, app: AnyApplication) -> None:
        """Long-poll for updates; a batch is confirmed by the next call's offset."""
        poll_failures = take_failures = 0
        while True:
            try:
                updates = await app.bot.get_updates(
                    offset=self._offset or None,
                    timeout=POLL_TIMEOUT_S,
                    allowed_updates=UPDATE_TYPES,
                )
            except Exception as exc:  # whatever it was, polling must go on
                if isinstance(exc, Conflict) and not poll_failures:
                    # Perhaps a second process probing at its start: answer at once,
                    # so that its probe sees us and it steps aside.
                    poll_failures += 1
                    self._on_poll_error(exc)
                    continue
                poll_failures += 1
                self._on_poll_error(exc)
                if poll_failures == 1:
                    self._metrics.reconnected(PLATFORM)
                await asyncio.sleep(_backoff(poll_failures))
                continue
            poll_failures = 0
            self._confirmed = self._offset
            # A batch is taken together: its messages go into the inbox in one write, and
            # are queued for the bot in the order Telegram sent them.
            taken = await asyncio.gather(
                *(self._take(update) for update in updates), return_exceptions=True
            )
            for update, failure in zip(updates, taken, strict=True):
                if isinstance(failure, BaseException) and not isinstance(failure, Exception):
                    raise failure  # cancelled, or the process is going down
                if isinstance(failure, Exception):  # the database refused it: fetch it again
                    take_failures += 1
                    if take_failures == 1:
                        log.error(
                            "could not queue Telegram update %s",
                            update.update_id,
                            exc_info=failure,
                        )
                    else:
                        log.debug(
                            "could not queue Telegram update %s: %s", update.update_id, failure
                        )
                    await asyncio.sleep(_backoff(take_failures))
                    break
                take_failures = 0
                self._offset = update.update_id + 1

    async def _confirm_offset(self) -> None:
        """Tell Telegram the updates fetched last are taken (as PTB does at stop)."""
        app = self._app
        if app is None or self._offset == self._confirmed:
            return
        try:
            async with asyncio.timeout(CONFIRM_TIMEOUT_S):
                await app.bot.get_updates(
                    offset=self._offset, timeout=0, allowed_updates=UPDATE_TYPES
                )
            self._confirmed = self._offset
        except (TelegramError, TimeoutError) as exc:
            # They come again at the next start; the inbox knows them and skips them.
            log.info("could not confirm the last Telegram updates at stop (%s)", exc)

    async def _on_webhook(self, request: web.Request) -> web.Response:
        app = self._app
        if app is None or self._handle is None:
            return web.Response(status=503)
        offered = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(offered.encode(), self._secret.encode()):
            log.warning("rejected a Telegram webhook request with a wrong secret token")
            return web.Response(status=403)
        try:
            data = await request.json()
            update = Update.de_json(data, app.bot)
        except (ValueError, TypeError, KeyError):
            log.warning("rejected a Telegram webhook request that is not an update")
            return web.Response(status=400)
        try:
            await self._take(update)
        except Exception:  # the database refused it: Telegram delivers it again later
            log.exception("could not queue Telegram update %s", update.update_id)
            return web.Response(status=500)
        return web.Response(status=200)

    def _on_poll_error(self, exc: Exception) -> None:
        if not isinstance(exc, TelegramError):
            log.error("Telegram polling failed; retrying with back-off", exc_info=exc)
        elif isinstance(exc, Conflict):
            log.warning(
                "Telegram: another program is receiving this bot's updates (%s); only one may",
                exc,
            )
        else:
            log.warning("Telegram polling failed (%s); retrying with back-off", exc)

    async def _take(self, update: Update) -> None:
        """Queue a text message for the bot; returns once a restart cannot lose it."""
        message = update.message
        if message is None or self._handle is None:
            return
        try:
            inbound = self.normalize(message)
            if inbound is None:
                return
        except Exception:  # a message this code cannot read is skipped, not fetched forever
            log.exception("could not take a Telegram message in chat %s", message.chat_id)
            return
        await self._handle.accept(inbound, self)

    def normalize(self, message: Message) -> Inbound | None:
        """Turn a Telegram message into an ``Inbound``; ``None`` when it is not for the bot."""
        sender = message.from_user
        images = _images_of(message)
        text = message.text if message.text is not None else message.caption
        if text is None and images:
            text = ""
        if sender is None or sender.is_bot or sender.id == self._bot_id or text is None:
            return None
        chat = message.chat
        private = chat.type == ChatType.PRIVATE
        thread = (
            str(message.message_thread_id)
            if message.is_topic_message and message.message_thread_id is not None
            else None
        )
        channel = ChannelRef(
            platform=PLATFORM, chat_id=str(chat.id), thread_id=thread, is_private=private
        )
        addressed = self._replies_to_bot(message)
        command = COMMAND.match(text)
        if command is not None:
            target = command.group(2)
            if target is not None:
                if target.lower() != self._username.lower():
                    return None  # a command for another bot in the group
                addressed = True
                text = f"/{command.group(1)}{text[command.end() :]}"
        else:
            text, mentioned = self._strip_mentions(message, text)
            addressed = addressed or mentioned
        return Inbound(
            channel=channel,
            author=Author(
                id=str(sender.id),
                name=sender.full_name,
                is_bot=sender.is_bot,
                username=sender.username,
                is_moderator=True if private else None,  # asked of Telegram when needed
            ),
            text=text,
            message_id=str(message.message_id),
            addressed=addressed,
            images=images,
            chat_title=chat.title or f"private chat with {sender.full_name}",
        )

    def _replies_to_bot(self, message: Message) -> bool:
        replied = message.reply_to_message
        if replied is None or replied.from_user is None:
            return False
        # In forum topics every message "replies" to the topic's creation message.
        if replied.forum_topic_created is not None:
            return False
        return replied.from_user.id == self._bot_id

    def _strip_mentions(self, message: Message, text: str) -> tuple[str, bool]:
        spans: list[tuple[int, int]] = []
        mine = f"@{self._username}".lower()
        caption = message.text is None  # a picture's caption has entities of its own
        entities = message.caption_entities if caption else message.entities
        for entity in entities:
            if entity.type == MessageEntity.MENTION:
                said = (
                    message.parse_caption_entity(entity)
                    if caption
                    else message.parse_entity(entity)
                )
                if said.lower() != mine:
                    continue
            elif entity.type == MessageEntity.TEXT_MENTION:
                if entity.user is None or entity.user.id != self._bot_id:
                    continue
            else:
                continue
            spans.append((entity.offset, entity.offset + entity.length))
        if not spans:
            return text, False
        encoded = text.encode("utf-16-le")
        for start, end in sorted(spans, reverse=True):
            before = encoded[: start * 2].decode("utf-16-le").rstrip(" ")
            after = encoded[end * 2 :].decode("utf-16-le").lstrip(" ")
            if not before.strip():
                after = after.lstrip(",:;").lstrip()  # "@bot, hello" -> "hello"
            joined = f"{before} {after}" if before and after else before + after
            encoded = joined.encode("utf-16-le")
        return encoded.decode("utf-16-le").strip(), True

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        """Download a picture by its file id (getFile, then the file URL)."""
        if image.size is not None and image.size > max_bytes:
            raise too_large(max_bytes)
        app = self._running_app()
        try:
            found = await app.bot.get_file(image.source)
        except TelegramError as exc:
            raise ImageRejected(
                f"Telegram would not give me that image ({exc}); please send it again."
            ) from None
        if found.file_size is not None and found.file_size > max_bytes:
            raise too_large(max_bytes)
        if not found.file_path:
            raise ImageRejected("Telegram gave no address for that image; please send it again.")
        return await download(found.file_path, max_bytes=max_bytes)

    # -- sending -------------------------------------------------------------------------

    def mention(self, user_id: str, name: str) -> str:
        """A mention that notifies the person (a text mention, also without a username)."""
        label = name.replace("[", "").replace("]", "") or user_id
        return f"[{label}](tg://user?id={user_id})"

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        """Send a message (Markdown converted to HTML), replying to ``reply_to`` if given."""
        app = self._running_app()
        chat_id = int(to.chat_id)
        thread_id = int(to.thread_id) if to.thread_id is not None else None
        reply = (
            ReplyParameters(message_id=int(reply_to), allow_sending_without_reply=True)
            if reply_to is not None and reply_to.isdigit()
            else None
        )

        async def send_as(body: str, parse_mode: str | None) -> Message:
            return await app.bot.send_message(
                chat_id=chat_id,
                text=body,
                parse_mode=parse_mode,
                message_thread_id=thread_id,
                reply_parameters=reply,
            )

        message, shown = await self._deliver("sendMessage", to, text, None, send_as)
        assert message is not None  # only an edit can be skipped
        sent = SentMessage(channel=to, message_id=str(message.message_id))
        self._remember(sent, shown)
        return sent

    async def edit(self, sent: SentMessage, text: str) -> None:
        """Make a sent message show ``text``; no request when it would not change."""
        app = self._running_app()
        key = (sent.channel.chat_id, sent.message_id)
        previous = self._shown.get(key)
        chat_id = int(sent.channel.chat_id)
        message_id = int(sent.message_id)

        async def edit_as(body: str, parse_mode: str | None) -> None:
            try:
                await app.bot.edit_message_text(
                    text=body, chat_id=chat_id, message_id=message_id, parse_mode=parse_mode
                )
            except BadRequest as exc:
                # Telegram compares what it shows, so this is the edit having arrived.
                if "message is not modified" not in str(exc).lower():
                    raise

        _, shown = await self._deliver("editMessageText", sent.channel, text, previous, edit_as)
        self._remember(sent, shown)

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        """Whether the person is the group's creator or one of its administrators."""
        key = (channel.chat_id, user_id)
        now = time.monotonic()
        known = self._moderators.get(key)
        if known is not None and now - known[0] < MODERATOR_CACHE_S:
            return known[1]
        app = self._running_app()
        member = await app.bot.get_chat_member(chat_id=int(channel.chat_id), user_id=int(user_id))
        answer = member.status in (ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR)
        self._moderators[key] = (now, answer)
        self._moderators.move_to_end(key)
        while len(self._moderators) > REMEMBERED_MESSAGES:
            self._moderators.popitem(last=False)
        return answer

    async def typing(self, to: ChannelRef) -> None:
        """Show "typing…" in the chat (or topic) for a few seconds."""
        app = self._running_app()
        if self._in_flight.locked():
            return  # a typing indicator never waits behind replies
        # ReplyStream cancels its typing loop the moment the reply is sent; a request cut
        # mid-flight also costs its HTTP connection, so the call finishes in the background.
        call = asyncio.create_task(self._send_typing(app, to))
        self._background.add(call)
        call.add_done_callback(self._background.discard)
        error = await asyncio.shield(call)
        if error is not None:
            raise DeliveryError(
                f"typing indicator: {error}", permanent=isinstance(error, Forbidden)
            )

    async def _send_typing(self, app: AnyApplication, to: ChannelRef) -> Exception | None:
        try:
            async with self._in_flight:
                await app.bot.send_chat_action(
                    chat_id=int(to.chat_id),
                    action=ChatAction.TYPING,
                    message_thread_id=int(to.thread_id) if to.thread_id is not None else None,
                )
        except Exception as exc:  # returned, so a call nobody awaits any more stays quiet
            return exc
        return None

    async def _deliver(
        self,
        method: str,
        to: ChannelRef,
        text: str,
        previous: _Shown | None,
        call: Callable[[str, str | None], Awaitable[T]],
    ) -> tuple[T | None, _Shown]:
        """Send or edit as HTML, or as plain text when Telegram refuses the HTML."""
        plain_only = previous is not None and previous.plain_only
        attempts: list[tuple[str, str | None]] = []
        if not plain_only:
            rendered = markdown_to_html(text)
            if visible_text(rendered).strip():
                attempts.append((rendered, ParseMode.HTML))
        attempts.append((text, None))
        fell_back = False
        for body, parse_mode in attempts:
            # Once Telegram refused a message's HTML, its later edits stay plain text.
            shown = _Shown(_as_shown(body, parse_mode), parse_mode, plain_only or fell_back)
            if previous is not None and (previous.body, previous.parse_mode) == (
                shown.body,
                shown.parse_mode,
            ):
                return None, shown
            try:
                await self._throttle(int(to.chat_id))
                result = await self._call(method, to.key, functools.partial(call, body, parse_mode))
            except BadRequest as exc:
                if parse_mode is not None and "can't parse entities" in str(exc).lower():
                    log.info(
                        "Telegram refused the formatting in %s (%s); sending plain text",
                        to.key,
                        exc,
                    )
                    fell_back = True
                    continue
                raise DeliveryError(f"{method}: {exc}", permanent=True) from None
            return result, shown
        raise AssertionError("the plain-text attempt always returns or raises")

    async def _throttle(self, chat_id: int) -> None:
        """Wait until Telegram's limits let a message or an edit leave.

        ``max_messages_per_s`` for all chats, 20 a minute in a group: kept ahead, rather
        than learned from 429 answers.
        """
        if chat_id < 0:  # groups and channels
            group = self._group_limits.get(chat_id)
            if group is None:
                group = self._group_limits[chat_id] = AsyncLimiter(GROUP_RATE, GROUP_PERIOD_S)
                while len(self._group_limits) > REMEMBERED_MESSAGES:
                    self._group_limits.popitem(last=False)
            self._group_limits.move_to_end(chat_id)
            started = time.monotonic()
            await group.acquire()
            self._metrics.waited(PLATFORM, time.monotonic() - started)
        if self._global_limit is not None:
            started = time.monotonic()
            await self._global_limit.acquire()
            self._metrics.waited(PLATFORM, time.monotonic() - started)

    async def _call(self, method: str, where: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one Bot API call with Telegram's retry rules; ``BadRequest`` passes through.

        A network failure or a server error is retried with back-off for up to
        ``[telegram] delivery_retry_s``. A ``sendMessage`` that timed out may have
        arrived; it is sent again all the same (a rare duplicate beats a lost reply).
        """
        deadline = time.monotonic() + self._section.delivery_retry_s
        network_failures = 0
        rate_limits = 0
        while True:
            try:
                async with self._in_flight:
                    return await op()
            except RetryAfter as exc:
                rate_limits += 1
                if rate_limits > RATE_LIMIT_WAITS:
                    raise DeliveryError(f"{method}: still rate limited ({exc})") from None
                delay = _retry_after_seconds(exc)
                log.info("Telegram asked to wait %.1f s before %s in %s", delay, method, where)
                await asyncio.sleep(delay)
            except Forbidden as exc:
                log.warning("Telegram refused %s in %s: %s", method, where, exc)
                raise DeliveryError(f"{method}: {exc}", permanent=True) from None
            except BadRequest:
                raise
            except NetworkError as exc:  # TimedOut and HTTP 5xx are NetworkErrors too
                network_failures += 1
                delay = min(NETWORK_BACKOFF_S * 2 ** (network_failures - 1), NETWORK_BACKOFF_MAX_S)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeliveryError(
                        f"{method}: Telegram unreachable for {self._section.delivery_retry_s:g} s "
                        f"({exc})"
                    ) from None
                if network_failures == 1:
                    log.info("Telegram %s failed in %s (%s); retrying", method, where, exc)
                await asyncio.sleep(min(delay, left))
            except TelegramError as exc:
                raise DeliveryError(f"{method}: {exc}", permanent=True) from None

    def _running_app(self) -> AnyApplication:
        if self._app is None:
            raise DeliveryError("the Telegram adapter is not running")
        return self._app

    def _remember(self, sent: SentMessage, shown: _Shown) -> None:
        key = (sent.channel.chat_id, sent.message_id)
        self._shown[key] = shown
        self._shown.move_to_end(key)
        while len(self._shown) > REMEMBERED_MESSAGES:
            self._shown.popitem(last=False)


def _as_shown(body: str, parse_mode: str | None) -> str:
    """``body`` as Telegram compares it, to skip an edit that would not change anything.

    Telegram trims whitespace around the visible text, also inside the tags that open or
    close the message: a code block streamed line by line ends in whitespace that is never
    shown, and an edit adding it draws "message is not modified".
    """
    body = body.strip()
    if parse_mode != ParseMode.HTML:
        return body
    body = _HTML_TAIL.sub(lambda tail: "".join(tail.group(0).split()), body)
    return _HTML_HEAD.sub(lambda head: _OUTSIDE_TAGS_SPACE.sub("", head.group(0)), body)


def _backoff(failures: int) -> float:
    return float(min(NETWORK_BACKOFF_S * 2**failures, POLL_BACKOFF_MAX_S))


def _retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        # PTB warns that retry_after becomes a timedelta; accept both.
        warnings.simplefilter("ignore")
        value: int | float | timedelta = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _webhook_secret(section: TelegramSection) -> str:
    if not section.webhook_url:
        raise StartupError(
            '[telegram] mode = "webhook" needs webhook_url: the public HTTPS URL Telegram '
            "should post updates to"
        )
    secret = os.environ.get(section.secret_token_env, "")
    if not secret:
        raise StartupError(
            f"Telegram webhook mode needs the environment variable {section.secret_token_env}: "
            "a secret of 1-256 letters, digits, _ or -, which Telegram sends with every update"
        )
    if not SECRET_TOKEN.fullmatch(secret):
        raise StartupError(
            f"the secret in {section.secret_token_env} may only hold 1-256 letters, digits, _ or -"
        )
    return secret


def _images_of(message: Message) -> tuple[ImageRef, ...]:
    """A photo (its largest size) or a picture sent as a file."""
    if message.photo:
        largest = message.photo[-1]
        return (ImageRef(largest.file_id, "image/jpeg", largest.file_size),)
    document = message.document
    if document is not None and (document.mime_type or "").startswith("image/"):
        return (
            ImageRef(document.file_id, document.mime_type, document.file_size, document.file_name),
        )
    return ()


def _file_url(base_url: str) -> str:
    """Files live at ``.../file/bot<token>`` next to ``.../bot<token>`` on any Bot API server."""
    head, bot, tail = base_url.rpartition("/bot")
    return f"{head}/file/bot{tail}" if bot else base_url


def _mode_text(section: TelegramSection) -> str:
    if section.mode == "webhook":
        return f"receiving webhooks on {section.listen}:{section.port}"
    return "polling for updates"
