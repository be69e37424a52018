"""A loopback Telegram Bot API server for tests: the unmodified python-telegram-bot talks to it.

It serves ``/bot<token>/<method>`` (form-encoded, JSON or query parameters, as Telegram
accepts them), keeps an update queue with Telegram's ``offset`` semantics and a held long
poll, parses ``parse_mode=HTML`` the way Telegram does (so a test sees what a user sees),
and answers errors with ``error_code``, ``description`` and ``parameters.retry_after``.

Switches make it misbehave on purpose: rate-limit the next N sends, a chat that blocked
the bot, HTML it refuses, a restart on the same port that keeps the update queue (updates
not confirmed by an offset come again), bursts of HTTP 500 answers or cut connections, and
an outage window of N seconds in which every request fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import ClientError, ClientSession, ClientTimeout, web

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

T = TypeVar("T")

TOKEN = "123456789:TEST-abcdefghijklmnopqrstuvwxyz012345"
MAX_TEXT = 4096
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
BLOCKED = "Forbidden: bot was blocked by the user"
CUT = "connection cut by a restart"  # recorded on a held poll that stop() cut

_INT_FIELDS = {
    "chat_id",
    "message_id",
    "message_thread_id",
    "offset",
    "limit",
    "timeout",
    "reply_to_message_id",
    "max_connections",
}
_BOOL_FIELDS = {
    "drop_pending_updates",
    "disable_notification",
    "allow_sending_without_reply",
    "disable_web_page_preview",
    "protect_content",
}
_JSON_FIELDS = {
    "reply_parameters",
    "allowed_updates",
    "commands",
    "entities",
    "reply_markup",
    "link_preview_options",
    "scope",
}
_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "code": "code",
    "pre": "pre",
    "a": "text_link",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "blockquote": "blockquote",
}
_TAG = re.compile(
    r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[A-Za-z-]+\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))*)\s*>"
)
_ATTRIBUTE = re.compile(r"([A-Za-z-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+))")
_ENTITY = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});")
_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?")
_MENTION = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{5,32}\b")
_BOT_COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, the unit of Telegram's entity offsets."""
    return len(text.encode("utf-16-le")) // 2


def user(
    user_id: int, first_name: str, last_name: str | None = None, username: str | None = None
) -> dict[str, Any]:
    """A Bot API ``User`` object for a person."""
    data: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if last_name:
        data["last_name"] = last_name
    if username:
        data["username"] = username
    return data


class ApiError(Exception):
    """An error the fake answers with, shaped like Telegram's."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            data["parameters"] = {"retry_after": self.retry_after}
        return data


def parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the visible text and its entities, or ``ApiError`` 400."""
    out: list[str] = []
    length = 0  # UTF-16 units of visible text so far
    entities: list[dict[str, Any]] = []
    stack: list[tuple[str, int, dict[str, Any]]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            match = _TAG.match(text, position)
            byte_offset = len(text[:position].encode())
            if match is None:
                raise ApiError(
                    400,
                    "Bad Request: can't parse entities: Unexpected end of name token at byte "
                    f"offset {byte_offset}",
                )
            closing, name, attributes = match.group(1), match.group(2).lower(), match.group(3)
            if closing:
                if not stack or stack[-1][0] != name:
                    expected = stack[-1][0] if stack else ""
                    raise ApiError(
                        400,
                        f"Bad Request: can't parse entities: Unmatched end tag at byte offset "
                        f'{byte_offset}, expected "</{expected}>", found "</{name}>"',
                    )
                _, start, entity = stack.pop()
                if length > start and entity["type"] != "pre_code":
                    entity.update(offset=start, length=length - start)
                    entities.append(entity)
            else:
                if name not in _TAGS:
                    raise ApiError(
                        400,
                        f'Bad Request: can\'t parse entities: Unsupported start tag "{name}" '
                        f"at byte offset {byte_offset}",
                    )
                attrs = {
                    m.group(1).lower(): html.unescape(m.group(2) or m.group(3) or m.group(4) or "")
                    for m in _ATTRIBUTE.finditer(attributes)
                }
                entity = _entity_for(name, attrs, stack, byte_offset)
                stack.append((name, length, entity))
            position = match.end()
            continue
        if char == "&":
            match = _ENTITY.match(text, position)
            if match is None:
                raise ApiError(
                    400,
                    "Bad Request: can't parse entities: Unsupported HTML entity at byte offset "
                    f"{len(text[:position].encode())}",
                )
            decoded = html.unescape(match.group(0))
            out.append(decoded)
            length += utf16_len(decoded)
            position = match.end()
            continue
        out.append(char)
        length += utf16_len(char)
        position += 1
    if stack:
        raise ApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1][0]}"',
        )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _entity_for(
    name: str, attrs: dict[str, str], stack: list[tuple[str, int, dict[str, Any]]], offset: int
) -> dict[str, Any]:
    kind = _TAGS[name]
    entity: dict[str, Any] = {"type": kind}
    if name == "a":
        href = attrs.get("href", "")
        if not href:
            raise ApiError(400, f"Bad Request: can't parse entities: empty href at byte {offset}")
        entity["url"] = href
    if name == "span" and attrs.get("class") != "tg-spoiler":
        raise ApiError(
            400, f'Bad Request: can\'t parse entities: Unsupported start tag "span" at {offset}'
        )
    if name == "code" and stack and stack[-1][0] == "pre":
        # <pre><code class="language-x"> is one pre entity with a language.
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1][2]["language"] = language.removeprefix("language-")
        entity["type"] = "pre_code"
    return entity


def _trim(text: str, entities: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Telegram trims leading and trailing whitespace off a message, moving its entities."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    size = utf16_len(stripped)
    kept: list[dict[str, Any]] = []
    for entity in entities:
        start = max(entity["offset"] - lead, 0)
        end = min(entity["offset"] + entity["length"] - lead, size)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return stripped, kept


def auto_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram detects in a person's plain text: a leading command, mentions."""
    entities: list[dict[str, Any]] = []
    command = _COMMAND.match(text)
    if command is not None:
        entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command[0])})
    for mention in _MENTION.finditer(text):
        entities.append(
            {
                "type": "mention",
                "offset": utf16_len(text[: mention.start()]),
                "length": utf16_len(mention[0]),
            }
        )
    return entities


@dataclass
class Call:
    """One request the fake received, and how it answered."""

    method: str
    params: dict[str, Any]
    at: float
    status: int = 0
    error: str | None = None
    result: Any = None


@dataclass
class Chat:
    id: int
    type: str
    title: str | None = None
    is_forum: bool = False
    first_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.title is not None:
            data["title"] = self.title
        if self.first_name is not None:
            data["first_name"] = self.first_name
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass
class Message:
    """A message as the chat shows it now. ``text`` is what the user sees."""

    chat_id: int
    message_id: int
    text: str
    raw: str
    sender: dict[str, Any]
    date: int
    entities: list[dict[str, Any]] = field(default_factory=list)
    parse_mode: str | None = None
    thread_id: int | None = None
    is_topic_message: bool = False
    reply_to: int | None = None
    from_bot: bool = False
    sent_at: float = 0.0
    edits: int = 0
    history: list[str] = field(default_factory=list)
    update_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class FakeTelegram:
    """The fake Bot API server. ``async with FakeTelegram() as fake:`` starts it.

    ``base_url`` is what ``ApplicationBuilder().base_url(...)`` (or ``[telegram] base_url``)
    takes; ``token`` is the only token it accepts.
    """

    def __init__(
        self,
        *,
        token: str = TOKEN,
        bot_id: int = 777000111,
        username: str = "llama_test_bot",
        first_name: str = "Llama",
    ) -> None:
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": first_name,
            "username": username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.port = 0
        self.calls: list[Call] = []
        self.chats: dict[int, Chat] = {}
        self.messages: dict[int, dict[int, Message]] = {}
        self.commands: list[dict[str, Any]] = []
        self.files: dict[str, tuple[str, bytes]] = {}  # file id -> (file path, bytes)
        self.downloads: list[str] = []  # file paths the bot downloaded
        self.webhook: dict[str, Any] = {}
        self.webhook_deliveries: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self.delivered_at: dict[int, float] = {}  # update_id -> first getUpdates delivery
        self.deliveries: list[list[int]] = []  # update ids of every non-empty getUpdates answer
        self.sent_updates: dict[int, dict[str, Any]] = {}  # every update pushed, by id
        # Switches a test sets:
        self.rate_limited: dict[str, int] = {}  # method -> how many calls to answer 429
        self.retry_after = 1
        self.blocked_chats: set[int] = set()
        self.chat_admins: dict[int, set[int]] = {}  # chat id -> user ids getChatMember calls admins
        self.reject_html: Callable[[str], bool] | None = None
        self.listeners: list[Callable[[Call], None]] = []  # told of every answered request
        self.failing: dict[str, list[str]] = {}  # method -> how the next calls fail, in order
        self.outage_until = 0.0  # time.monotonic() before which every request fails
        self.outage_mode = "500"
        # (count, seconds): a group taking more messages and edits than this in any such
        # window answers 429, as Telegram does past its group limit.
        self.group_limit: tuple[int, float] | None = None
        self._group_calls: dict[int, list[float]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(500_000)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._poll_generation = 0
        self._changed = asyncio.Event()  # replaced on every change: a broadcast
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._held: dict[int, web.Request] = {}  # held long polls, by id
        self._webhook_task: asyncio.Task[None] | None = None
        self._webhook_session: ClientSession | None = None

    # -- lifespan --------------------------------------------------------------------

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen on 127.0.0.1: a free port the first time, the same port after a restart."""
        self._stopping = False
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_get("/file/bot{token}/{path:.*}", self._download)
        # A short shutdown timeout: a restart must cut held requests, not wait for them.
        # Handler cancellation: a client that hangs up on a held poll ends it, as on Telegram.
        runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.2, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self._runner = runner
        if self.port == 0:
            self.port = runner.addresses[0][1]
        if self.webhook.get("url"):
            self._start_webhook_delivery()

    async def stop(self) -> None:
        """Stop listening; held long polls lose their connection. The update queue is kept."""
        if self._runner is None:
            return
        self._stopping = True
        self._poke()
        for request in list(self._held.values()):
            if request.transport is not None:
                request.transport.abort()
        await self._stop_webhook_delivery()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def restart(self) -> None:
        """Stop and start again on the same port, keeping the update queue."""
        await self.stop()
        await self.start()

    # -- what a test does ------------------------------------------------------------

    def push_message(
        self,
        chat_id: int,
        text: str,
        *,
        from_user: Mapping[str, Any] | None = None,
        chat_type: str = "private",
        message_thread_id: int | None = None,
        is_topic_message: bool = False,
        reply_to_message: int | Message | None = None,
        entities: list[dict[str, Any]] | None = None,
        chat_title: str | None = None,
        photo: bytes | None = None,
        document: tuple[bytes, str, str] | None = None,
    ) -> Message:
        """A person sends ``text``: enqueue the update and return the message.

        With ``photo`` (the picture's bytes) or ``document`` (bytes, mime type, file
        name) the text is the caption, as Telegram sends it; the file is served by
        ``getFile`` and the file URL.
        """
        sender = dict(from_user) if from_user is not None else user(chat_id, "Alice")
        chat = self.chats.get(chat_id)
        if chat is None:
            chat = Chat(
                id=chat_id,
                type=chat_type,
                title=None if chat_type == "private" else (chat_title or f"Group {chat_id}"),
                first_name=sender.get("first_name") if chat_type == "private" else None,
            )
            self.chats[chat_id] = chat
        if is_topic_message:
            chat.is_forum = True
        message = Message(
            chat_id=chat_id,
            message_id=self._next_message_id(chat_id),
            text=text,
            raw=text,
            sender=sender,
            date=int(time.time()),
            entities=auto_entities(text) if entities is None else entities,
            thread_id=message_thread_id,
            is_topic_message=is_topic_message,
            reply_to=(
                reply_to_message.message_id
                if isinstance(reply_to_message, Message)
                else reply_to_message
            ),
            sent_at=time.monotonic(),
        )
        message.history.append(text)
        if photo is not None:
            message.extra["photo"] = [
                {**self._store_file(photo, "photos", "jpg"), "width": 90, "height": 90},
                {**self._store_file(photo, "photos", "jpg"), "width": 800, "height": 800},
            ]
        if document is not None:
            data, mime, name = document
            stored = self._store_file(data, "documents", name.rsplit(".", 1)[-1])
            message.extra["document"] = {**stored, "mime_type": mime, "file_name": name}
        self.messages.setdefault(chat_id, {})[message.message_id] = message
        update_id = next(self._update_ids)
        message.update_id = update_id
        self._updates.append({"update_id": update_id, "message": self._message_json(message)})
        self.sent_updates[update_id] = self._updates[-1]
        self._poke()
        return message

    def push_update(self, update: dict[str, Any]) -> int:
        """Enqueue a raw update (its ``update_id`` is assigned here)."""
        update_id = next(self._update_ids)
        self._updates.append({**update, "update_id": update_id})
        self.sent_updates[update_id] = self._updates[-1]
        self._poke()
        return update_id

    def replay(self, update_id: int) -> None:
        """Queue an update again, same id, as Telegram does when the bot's confirmation
        (the next offset) never reached it; the next poll without that offset gets it."""
        self._updates.append(self.sent_updates[update_id])
        self._updates.sort(key=lambda update: int(update["update_id"]))
        self._poke()

    def fail_next(self, count: int, method: str = "sendMessage", how: str = "500") -> None:
        """Fail the next ``count`` calls of ``method``: ``500`` (an HTTP 500 answer) or
        ``close`` (the connection is cut before any answer; the call had no effect)."""
        self.failing.setdefault(method, []).extend([how] * count)

    def outage(self, seconds: float, how: str = "500") -> None:
        """For the next ``seconds``, every request fails (see ``fail_next`` for ``how``)."""
        self.outage_until = time.monotonic() + seconds
        self.outage_mode = how

    def rate_limit_next(
        self, count: int, method: str = "sendMessage", retry_after: int = 1
    ) -> None:
        """Answer the next ``count`` calls of ``method`` with 429 Too Many Requests."""
        self.rate_limited[method] = self.rate_limited.get(method, 0) + count
        self.retry_after = retry_after

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test reads better with it inline
    ) -> T:
        """Wait until ``predicate()`` is truthy (checked after every request and push)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    result = predicate()
                    if result:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            recent = [f"{c.method}:{c.status}" for c in self.calls[-10:]]
            hooks = self.webhook_deliveries[-5:]
            raise AssertionError(
                f"condition not met within {timeout}s; last calls: {recent}; "
                f"webhook deliveries: {hooks}; pending updates: {self.pending_updates}"
            ) from None

    def calls_of(self, method: str) -> list[Call]:
        """Every call of one Bot API method, in arrival order."""
        return [c for c in self.calls if c.method == method]

    def bot_messages(self, chat_id: int, thread_id: int | None = None) -> list[Message]:
        """The bot's messages in a chat (or one forum topic of it), oldest first."""
        return [
            m
            for m in self.messages.get(chat_id, {}).values()
            if m.from_bot and (thread_id is None or m.thread_id == thread_id)
        ]

    def replies_to(self, chat_id: int, message_id: int) -> list[Message]:
        """The bot's messages sent in reply to one message."""
        return [m for m in self.bot_messages(chat_id) if m.reply_to == message_id]

    def not_modified_errors(self) -> list[Call]:
        """Edits Telegram would have refused as "message is not modified"."""
        return [c for c in self.calls if c.error and "message is not modified" in c.error]

    @property
    def polls_held(self) -> int:
        """How many getUpdates requests are waiting for an update right now."""
        return len(self._held)

    @property
    def pending_updates(self) -> list[int]:
        """Update ids not yet confirmed by an ``offset``."""
        return [u["update_id"] for u in self._updates]

    # -- the server -----------------------------------------------------------------

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    def _poke(self) -> None:
        """Wake everyone waiting for a change (held polls, ``wait_for``, webhook delivery)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method=method, params=params, at=time.monotonic())
        self.calls.append(call)
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            fault = self._fault(method)
            if fault == "close":
                call.status, call.error = 0, "connection cut"
                if request.transport is not None:
                    request.transport.abort()
                self._answered(call)
                return web.Response(status=500)  # never reaches the client
            if fault == "500":
                raise ApiError(500, "Internal Server Error")
            self._check_group_limit(method, params)
            pending = self.rate_limited.get(method, 0)
            if pending > 0:
                self.rate_limited[method] = pending - 1
                raise ApiError(
                    429,
                    f"Too Many Requests: retry after {self.retry_after}",
                    retry_after=self.retry_after,
                )
            if method == "getUpdates":
                result = await self._api_getUpdates(params, request, call)
            else:
                result = handler(params)
        except ApiError as exc:
            call.status = exc.code
            call.error = exc.description
            self._answered(call)
            return web.json_response(exc.body(), status=exc.code)
        call.status = 200
        call.result = result
        self._answered(call)
        return web.json_response({"ok": True, "result": result})

    def _check_group_limit(self, method: str, params: dict[str, Any]) -> None:
        chat_id = params.get("chat_id")
        if self.group_limit is None or method not in ("sendMessage", "editMessageText"):
            return
        if not isinstance(chat_id, int) or chat_id >= 0:
            return
        count, period = self.group_limit
        now = time.monotonic()
        recent = [at for at in self._group_calls.get(chat_id, []) if at > now - period]
        if len(recent) >= count:
            wait = max(1, int(recent[0] + period - now + 1))
            raise ApiError(429, f"Too Many Requests: retry after {wait}", retry_after=wait)
        self._group_calls[chat_id] = [*recent, now]

    def _fault(self, method: str) -> str | None:
        if time.monotonic() < self.outage_until:
            return self.outage_mode
        queued = self.failing.get(method)
        return queued.pop(0) if queued else None

    def _answered(self, call: Call) -> None:
        for listener in self.listeners:
            listener(call)
        self._poke()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        raw: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    return {**raw, **body}
            else:
                form = await request.post()
                raw.update({k: v for k, v in form.items() if isinstance(v, str)})
        return {key: _decode(key, value) for key, value in raw.items()}

    def _chat(self, params: dict[str, Any]) -> Chat:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id not in self.chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self.blocked_chats:
            raise ApiError(403, BLOCKED)
        return self.chats[chat_id]

    def _render(self, params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        raw = params.get("text")
        if not isinstance(raw, str):
            raise ApiError(400, "Bad Request: message text is empty")
        mode = params.get("parse_mode")
        if mode is None or mode == "":
            text, entities = raw, list(params.get("entities") or [])
        elif str(mode).lower() == "html":
            if self.reject_html is not None and self.reject_html(raw):
                raise ApiError(
                    400,
                    'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte '
                    "offset 0",
                )
            text, entities = parse_html(raw)
        else:
            raise ApiError(400, f"Bad Request: unsupported parse_mode {mode}")
        text, entities = _trim(text, entities)
        if not text:
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT:
            raise ApiError(400, "Bad Request: message is too long")
        return text, entities

    def _message_json(self, message: Message) -> dict[str, Any]:
        chat = self.chats[message.chat_id]
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "from": message.sender,
            "chat": chat.to_json(),
            "date": message.date,
        }
        if "photo" in message.extra or "document" in message.extra:
            for kind in ("photo", "document"):
                if kind in message.extra:
                    data[kind] = message.extra[kind]
            if message.text:
                data["caption"] = message.text
            if message.entities:
                data["caption_entities"] = message.entities
        else:
            data["text"] = message.text
            if message.entities:
                data["entities"] = message.entities
        if message.thread_id is not None:
            data["message_thread_id"] = message.thread_id
        if message.is_topic_message:
            data["is_topic_message"] = True
        if message.edits:
            data["edit_date"] = int(time.time())
        replied = self.messages.get(message.chat_id, {}).get(message.reply_to or -1)
        if replied is not None:
            data["reply_to_message"] = {
                k: v for k, v in self._message_json(replied).items() if k != "reply_to_message"
            }
        elif message.is_topic_message and message.thread_id is not None:
            # In a forum topic every message replies to the topic's creation message.
            data["reply_to_message"] = {
                "message_id": message.thread_id,
                "from": message.sender,
                "chat": chat.to_json(),
                "date": message.date,
                "message_thread_id": message.thread_id,
                "forum_topic_created": {"name": f"Topic {message.thread_id}", "icon_color": 0},
                "is_topic_message": True,
            }
        return data

    # -- Bot API methods ---------------------------------------------------------------

    def _store_file(self, data: bytes, folder: str, extension: str) -> dict[str, Any]:
        number = len(self.files) + 1
        file_id = f"AgAC-file-{number}"
        self.files[file_id] = (f"{folder}/file_{number}.{extension}", data)
        return {"file_id": file_id, "file_unique_id": f"uniq{number}", "file_size": len(data)}

    def _api_getFile(self, params: dict[str, Any]) -> dict[str, Any]:
        stored = self.files.get(str(params.get("file_id")))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        path, data = stored
        return {
            "file_id": params["file_id"],
            "file_unique_id": f"uniq-{path}",
            "file_size": len(data),
            "file_path": path,
        }

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401}, status=401)
        wanted = request.match_info["path"]
        for path, data in self.files.values():
            if path == wanted:
                self.downloads.append(path)
                return web.Response(body=data, content_type="application/octet-stream")
        return web.json_response({"ok": False, "error_code": 404}, status=404)

    def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user

    def _api_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = int(params["chat_id"]), int(params["user_id"])
        person = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if user_id in self.chat_admins.get(chat_id, set()):
            return {
                "status": "administrator",
                "user": person,
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
            }
        return {"status": "member", "user": person}

    def _api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook = {}
        self._poke()  # the delivery loop ends once it sees no webhook
        return True

    def _api_setWebhook(self, params: dict[str, Any]) -> bool:
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ApiError(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook = {
            "url": url,
            "secret_token": None if secret is None else str(secret),
            "allowed_updates": params.get("allowed_updates"),
        }
        self._start_webhook_delivery()
        return True

    async def _api_getUpdates(
        self, params: dict[str, Any], request: web.Request, call: Call
    ) -> Any:
        if self.webhook.get("url"):
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        self._poll_generation += 1
        generation = self._poll_generation
        self._poke()  # wake an older held poll so it answers 409
        self._confirm(params.get("offset"))
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        deadline = time.monotonic() + max(int(params.get("timeout") or 0), 0)
        allowed = params.get("allowed_updates")
        self._held[id(request)] = request
        self._poke()
        try:
            while True:
                if self._stopping:  # stop() cuts the connection; nothing reaches the client
                    raise ApiError(502, CUT)
                if generation != self._poll_generation:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that "
                        "only one bot instance is running",
                    )
                # The first `limit` allowed: a scan of every pending update per poll
                # cost a benchmark's burst more than the bot's own work.
                batch = list(
                    itertools.islice((u for u in self._updates if _allowed(u, allowed)), limit)
                )
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
        except asyncio.CancelledError:
            call.error = CUT if self._stopping else "client hung up"
            self._poke()
            raise
        finally:
            self._held.pop(id(request), None)
        now = time.monotonic()
        if batch:
            self.deliveries.append([u["update_id"] for u in batch])
        for update in batch:
            self.delivered_at.setdefault(update["update_id"], now)
        return batch

    def _confirm(self, offset: Any) -> None:
        if not isinstance(offset, int) or offset == 0:
            return
        if offset < 0:
            self._updates = self._updates[offset:]
            return
        self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params)
        text, entities = self._render(params)
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id", params.get("reply_to_message_id"))
        if reply_to is not None and reply_to not in self.messages.get(chat.id, {}):
            allowed = reply.get(
                "allow_sending_without_reply", params.get("allow_sending_without_reply")
            )
            if not allowed:
                raise ApiError(400, "Bad Request: message to be replied not found")
            reply_to = None
        thread_id = params.get("message_thread_id")
        if thread_id is not None and not chat.is_forum:
            raise ApiError(400, "Bad Request: message thread not found")
        message = Message(
            chat_id=chat.id,
            message_id=self._next_message_id(chat.id),
            text=text,
            raw=params["text"],
            sender=self.bot_user,
            date=int(time.time()),
            entities=entities,
            parse_mode=params.get("parse_mode"),
            thread_id=thread_id,
            is_topic_message=thread_id is not None,
            reply_to=reply_to,
            from_bot=True,
            sent_at=time.monotonic(),
        )
        message.history.append(text)
        self.messages.setdefault(chat.id, {})[message.message_id] = message
        return self._message_json(message)

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        chat = self._chat(params)
        message = self.messages.get(chat.id, {}).get(params.get("message_id", -1))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        if not message.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        text, entities = self._render(params)
        if text == message.text and entities == message.entities:
            raise ApiError(400, NOT_MODIFIED)
        message.text = text
        message.raw = params["text"]
        message.entities = entities
        message.parse_mode = params.get("parse_mode")
        message.edits += 1
        message.history.append(text)
        return self._message_json(message)

    def _api_sendChatAction(self, params: dict[str, Any]) -> bool:
        self._chat(params)
        if params.get("action") not in {
            "typing",
            "upload_photo",
            "record_video",
            "upload_video",
            "record_voice",
            "upload_voice",
            "upload_document",
            "choose_sticker",
            "find_location",
            "record_video_note",
            "upload_video_note",
        }:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        return True

    def _api_setMyCommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        if len(commands) > 100:
            raise ApiError(400, "Bad Request: BOT_COMMANDS_TOO_MUCH")
        for command in commands:
            name = command.get("command", "")
            description = command.get("description", "")
            if not _BOT_COMMAND_NAME.match(name) or not 1 <= len(description) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = commands
        return True

    # -- webhook delivery (what Telegram does once setWebhook is called) -------------------

    def _start_webhook_delivery(self) -> None:
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.get_running_loop().create_task(self._deliver())

    async def _stop_webhook_delivery(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._webhook_session is not None:
            await self._webhook_session.close()
            self._webhook_session = None

    async def _deliver(self) -> None:
        if self._webhook_session is None:
            self._webhook_session = ClientSession(timeout=ClientTimeout(total=5))
        while self.webhook.get("url"):
            if not self._updates:
                await self._changed.wait()
                continue
            if not self.webhook.get("url") or not self._updates:
                continue
            update = self._updates[0]
            headers = {"Content-Type": "application/json"}
            if self.webhook.get("secret_token"):
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook["secret_token"]
            try:
                async with self._webhook_session.post(
                    self.webhook["url"], data=json.dumps(update), headers=headers
                ) as response:
                    status = response.status
            except (OSError, ClientError, TimeoutError):
                status = 0
            self.webhook_deliveries.append((update["update_id"], status))
            self.delivered_at.setdefault(update["update_id"], time.monotonic())
            if 200 <= status < 300:
                self._updates = [u for u in self._updates if u is not update]
            else:
                await asyncio.sleep(0.2)  # Telegram retries a failing webhook later
            self._poke()


def _allowed(update: dict[str, Any], allowed: Any) -> bool:
    if not allowed:
        return True
    return any(kind in update for kind in allowed)


def _decode(key: str, value: Any) -> Any:
    """Form fields arrive as text; Telegram reads numbers, booleans and JSON out of them."""
    if not isinstance(value, str):
        return value
    if key in _INT_FIELDS:
        with contextlib.suppress(ValueError):
            return int(value)
        return value
    if key in _BOOL_FIELDS:
        return value.lower() in ("true", "1")
    if key in _JSON_FIELDS:
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value
