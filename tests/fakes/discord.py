"""A loopback Discord: the gateway websocket and the REST routes discord.py calls.

The real, unmodified discord.py connects to it (point ``discord.http.Route.BASE`` at
``fake.api_base`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` at ``fake.gateway_url``). It
speaks the gateway as Discord does — HELLO, IDENTIFY, heartbeat ACK, READY, GUILD_CREATE,
MESSAGE_CREATE, RESUME/RESUMED with replay of missed events, zlib-stream transport
compression when the client asks for it — and the REST routes a bot uses to talk, with
Discord's error shapes (429 with ``Via`` and ``retry_after``, 403 Missing Permissions,
400 Invalid Form Body).

Faults on purpose: failed sends and edits (``fail_next_sends``), an outage window of N
seconds in which every REST request gets HTTP 500 or a cut connection (``outage``); a
POST with a ``nonce`` it has seen is answered with the first message, as Discord does
with ``enforce_nonce``.

Everything that crosses the wire is recorded: every REST request (method, path, JSON
body, monotonic time, status) and every message with its current content and the
history of its edits, so a test can say what a person would see in the channel.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

import asyncio
import json
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.discord_interactions import InteractionsMixin
from tests.fakes.discord_wire import (
    _RECORD,
    RecordedRequest,
    _body,
    _check_content,
    _form_error,
    _json,
)

DISCORD_EPOCH_MS = 1_420_070_400_000
API_PREFIX = "/api/v10"

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DM_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15

# Gateway opcodes and close codes, as documented by Discord.
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_RESUME = 6
OP_RECONNECT = 7
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
CLOSE_DECODE_ERROR = 4002
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_DISALLOWED_INTENTS = 4014

_MENTION = re.compile(r"<@!?(\d+)>")
_ALL_PERMISSIONS = str((1 << 50) - 1)

Json = dict[str, Any]


def _timestamp() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class FakeUser:
    """A Discord user (a person, another bot, or the bot itself)."""

    id: str
    username: str
    global_name: str | None = None
    bot: bool = False
    nick: str | None = None  # the member nickname in every guild of the fake

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    @property
    def display_name(self) -> str:
        return self.nick or self.global_name or self.username

    def payload(self) -> Json:
        data: Json = {
            "id": self.id,
            "username": self.username,
            "discriminator": "0",
            "global_name": self.global_name,
            "avatar": None,
            "public_flags": 0,
        }
        if self.bot:
            data["bot"] = True
        return data

    def member_payload(self) -> Json:
        return {
            "nick": self.nick,
            "roles": [],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
        }


@dataclass
class FakeChannel:
    """A text channel (type 0), a public thread (type 11) or a DM channel (type 1)."""

    id: str
    name: str
    type: int = 0
    guild_id: str | None = None
    parent_id: str | None = None
    owner_id: str | None = None
    recipient: FakeUser | None = None

    def payload(self) -> Json:
        if self.type == 1:
            assert self.recipient is not None
            return {
                "id": self.id,
                "type": 1,
                "last_message_id": None,
                "recipients": [self.recipient.payload()],
            }
        data: Json = {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "guild_id": self.guild_id,
            "parent_id": self.parent_id,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if self.type in (10, 11, 12):
            data.update(
                owner_id=self.owner_id,
                message_count=0,
                member_count=1,
                total_message_sent=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": "2024-01-01T00:00:00+00:00",
                    "locked": False,
                },
            )
            del data["permission_overwrites"], data["position"], data["topic"]
        return data


@dataclass
class FakeGuild:
    """A server: its channels and active threads are sent in GUILD_CREATE."""

    id: str
    name: str
    owner_id: str
    channels: list[FakeChannel] = field(default_factory=list)
    threads: list[FakeChannel] = field(default_factory=list)


@dataclass
class FakeMessage:
    """A message as the channel shows it now; ``versions`` holds (monotonic time, content)."""

    id: str
    channel_id: str
    author: FakeUser
    content: str
    guild_id: str | None
    reference_id: str | None
    payload: Json
    versions: list[tuple[float, str]] = field(default_factory=list)
    deleted: bool = False
    ephemeral_to: str | None = None  # an ephemeral answer: the one user who sees it
    dispatched_at: float | None = None  # a person's message: when MESSAGE_CREATE went out
    posted_at: float | None = None  # the bot's message: when its POST arrived

    @property
    def edits(self) -> int:
        return len(self.versions) - 1

    def show(self, content: str) -> None:
        """The message now reads ``content`` (an edit, kept in ``versions``)."""
        self.content = content
        self.payload["content"] = content
        self.versions.append((time.monotonic(), content))


@dataclass
class _Failure:
    status: int
    retry_after: float
    is_global: bool


class _Connection:
    """One gateway websocket. Sends go through one zlib stream when the client asked."""

    def __init__(self, ws: web.WebSocketResponse, compress: str | None) -> None:
        self.ws = ws
        self._deflate = zlib.compressobj() if compress == "zlib-stream" else None
        self._lock = asyncio.Lock()
        self.session: _Session | None = None

    async def send(self, frame: Json) -> None:
        raw = json.dumps(frame, separators=(",", ":"))
        async with self._lock:
            if self.ws.closed:
                return
            try:
                if self._deflate is None:
                    await self.ws.send_str(raw)
                else:
                    # zlib-stream: one shared context; every frame ends in a Z_SYNC_FLUSH.
                    data = self._deflate.compress(raw.encode()) + self._deflate.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await self.ws.send_bytes(data)
            except ConnectionResetError:
                # The client is gone; the event stays in the session for a RESUME.
                return


@dataclass
class _Session:
    id: str
    intents: int
    seq: int = 0
    events: list[Json] = field(default_factory=list)
    connection: _Connection | None = None
    invalid: bool = False
    shard: tuple[int, int] = (0, 1)  # (shard id, shard count) from IDENTIFY


class FakeDiscord(InteractionsMixin):
    """The fake Discord server. Use as ``async with FakeDiscord() as fake:``.

    Build the world before the bot connects (``add_guild``, ``add_channel``,
    ``add_thread``, ``add_user``, ``dm_channel``); things added later are announced on
    the gateway with the matching *_CREATE event.
    """

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        bot_name: str = "Llama",
        heartbeat_interval_ms: int = 41_250,
        message_content_intent_enabled: bool = True,
    ) -> None:
        self.token = token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.message_content_intent_enabled = message_content_intent_enabled
        self._last_id = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self.bot_user = FakeUser(self._snowflake(), bot_name, bot=True)
        self.application_id = self._snowflake()
        self.users: dict[str, FakeUser] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[str, FakeGuild] = {}
        self.channels: dict[str, FakeChannel] = {}
        self.messages: dict[str, FakeMessage] = {}
        self.replies_to: dict[str, FakeMessage] = {}  # message id -> the bot's reply to it
        # Told of every first reply (the message answered, the reply): cheaper than a
        # condition re-checked on every request by each of many waiters (a benchmark).
        self.reply_listeners: list[Callable[[FakeMessage, FakeMessage], None]] = []
        self.requests: list[RecordedRequest] = []
        self.gateway_log: list[tuple[float, str, Json]] = []  # (time, "recv"/"send", frame)
        self.connections: list[str] = []  # path and query of every gateway connection
        self.identifies = 0
        self.resumes = 0
        self.forbidden_channels: set[str] = set()
        self.outage_until = 0.0  # time.monotonic() before which every REST request fails
        self.lost_answers = 0  # the next N message POSTs take effect, but the answer is lost
        self.outage_mode = "500"
        self._by_nonce: dict[str, FakeMessage] = {}
        self._send_failures: list[_Failure] = []
        self._edit_failures: list[_Failure] = []
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None
        # Sharded clients: the live session of each shard id; events go to the shard of
        # their guild ((guild_id >> 22) % shard_count), DMs to shard 0, as Discord routes.
        self._shards: dict[int, _Session] = {}
        self.shard_count = 1
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._init_interactions()
        self.cdn: dict[str, tuple[bytes, str]] = {}  # attachment path -> (bytes, type)
        self.cdn_downloads: list[str] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/", self._gateway)
        app.router.add_get("/resume", self._gateway)
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{name}", self._cdn)
        api = API_PREFIX
        app.router.add_get(api + "/users/@me", self._get_me)
        app.router.add_get(api + "/oauth2/applications/@me", self._get_application)
        app.router.add_get(api + "/gateway", self._get_gateway)
        app.router.add_get(api + "/gateway/bot", self._get_gateway_bot)
        app.router.add_post(api + "/channels/{channel_id}/messages", self._post_message)
        app.router.add_patch(
            api + "/channels/{channel_id}/messages/{message_id}", self._patch_message
        )
        app.router.add_delete(
            api + "/channels/{channel_id}/messages/{message_id}", self._delete_message
        )
        app.router.add_post(api + "/channels/{channel_id}/typing", self._post_typing)
        self._add_interaction_routes(app, api)
        app.router.add_route("*", api + "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        session = self._session
        if session is not None and session.connection is not None:
            await session.connection.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and session.connection is not None

    # -- the world ----------------------------------------------------------------------

    def _snowflake(self) -> str:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(self._last_id + 1, now)
        return str(self._last_id)

    def add_user(
        self,
        username: str,
        *,
        global_name: str | None = None,
        nick: str | None = None,
        bot: bool = False,
    ) -> FakeUser:
        user = FakeUser(self._snowflake(), username, global_name, bot=bot, nick=nick)
        self.users[user.id] = user
        return user

    async def add_guild(self, name: str) -> FakeGuild:
        guild = FakeGuild(self._snowflake(), name, owner_id=self.bot_user.id)
        self.guilds[guild.id] = guild
        await self._dispatch("GUILD_CREATE", self._guild_payload(guild))
        return guild

    async def add_channel(self, guild: FakeGuild, name: str) -> FakeChannel:
        channel = FakeChannel(self._snowflake(), name, 0, guild_id=guild.id)
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        await self._dispatch("CHANNEL_CREATE", channel.payload())
        return channel

    async def add_thread(self, parent: FakeChannel, name: str) -> FakeChannel:
        assert parent.guild_id is not None, "threads live in server channels"
        thread = FakeChannel(
            self._snowflake(),
            name,
            11,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.bot_user.id,
        )
        self.guilds[parent.guild_id].threads.append(thread)
        self.channels[thread.id] = thread
        await self._dispatch("THREAD_CREATE", {**thread.payload(), "newly_created": True})
        return thread

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        """The DM channel between ``user`` and the bot (Discord creates it on first use)."""
        for channel in self.channels.values():
            if channel.type == 1 and channel.recipient is user:
                return channel
        channel = FakeChannel(self._snowflake(), "", 1, recipient=user)
        self.channels[channel.id] = channel
        return channel

    # -- what tests push and inspect ----------------------------------------------------

    async def send_message(
        self,
        channel_id: str,
        content: str,
        *,
        author: FakeUser,
        mentions: list[FakeUser] | None = None,
        guild_id: str | None = None,
        referenced_message: str | None = None,
        attachments: list[tuple[str, bytes, str]] | None = None,
        declared_size: int | None = None,
    ) -> FakeMessage:
        """A person posts ``content``: the fake stores it and sends MESSAGE_CREATE.

        ``attachments`` are (file name, bytes, content type), served from the fake's CDN
        (``declared_size``, when given, is the size the message claims for each).

        Mentions are taken from ``<@id>`` in the content, as Discord does, plus ``mentions``.
        """
        channel = self.channels[channel_id]
        guild_id = guild_id or channel.guild_id
        mentioned = [self.users[m] for m in _MENTION.findall(content) if m in self.users]
        for user in mentions or []:
            if user not in mentioned:
                mentioned.append(user)
        referenced = self.messages.get(referenced_message) if referenced_message else None
        message = self._new_message(channel, author, content, referenced, guild_id)
        message.payload["mentions"] = [self._mention_payload(u, guild_id) for u in mentioned]
        message.payload["attachments"] = [
            self._attachment(channel.id, name, data, kind, declared_size)
            for name, data, kind in attachments or []
        ]
        event = message.payload
        if self._withholds_content(message, mentioned):
            event = {**event, "content": "", "embeds": [], "attachments": [], "components": []}
        message.dispatched_at = time.monotonic()
        await self._dispatch("MESSAGE_CREATE", event)
        return message

    def _attachment(
        self, channel_id: str, name: str, data: bytes, kind: str, declared: int | None
    ) -> Json:
        attachment_id = self._snowflake()
        path = f"/attachments/{channel_id}/{attachment_id}/{name}"
        self.cdn[path] = (data, kind)
        url = f"http://127.0.0.1:{self.port}{path}"
        return {
            "id": attachment_id,
            "filename": name,
            "size": len(data) if declared is None else declared,
            "url": url,
            "proxy_url": url,
            "content_type": kind,
        }

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        """Discord's CDN: attachments by URL, without the bot's token."""
        found = self.cdn.get(request.path)
        if found is None:
            return web.Response(status=404, text="Not Found")
        self.cdn_downloads.append(request.path)
        data, kind = found
        return web.Response(body=data, content_type=kind)

    def _withholds_content(self, message: FakeMessage, mentioned: list[FakeUser]) -> bool:
        # Without the Message Content intent Discord sends empty content, except in DMs,
        # when the bot is mentioned, or for the bot's own messages.
        session = self._session
        if session is None or session.intents & INTENT_MESSAGE_CONTENT:
            return False
        return (
            message.guild_id is not None
            and message.author is not self.bot_user
            and self.bot_user not in mentioned
        )

    async def delete_message(self, message_id: str) -> None:
        """Someone deletes a message (MESSAGE_DELETE is sent)."""
        message = self.messages[message_id]
        message.deleted = True
        event: Json = {"id": message.id, "channel_id": message.channel_id}
        if message.guild_id:
            event["guild_id"] = message.guild_id
        await self._dispatch("MESSAGE_DELETE", event)

    def bot_messages(self, channel_id: str) -> list[FakeMessage]:
        """The bot's messages in a channel that everyone sees, oldest first, as they read
        now (ephemeral answers to slash commands are their user's alone)."""
        return [
            m
            for m in self.messages.values()
            if m.channel_id == channel_id
            and m.author is self.bot_user
            and not m.deleted
            and m.ephemeral_to is None
        ]

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        """Recorded requests whose path matches the regular expression ``pattern``."""
        compiled = re.compile(pattern)
        return [r for r in self.requests if r.method == method and compiled.fullmatch(r.path)]

    def fail_next_sends(
        self, count: int, status: int = 429, *, retry_after: float = 0.25, is_global: bool = False
    ) -> None:
        """Answer the next ``count`` message POSTs with ``status`` (429, 403, 500, ...)."""
        self._send_failures += [_Failure(status, retry_after, is_global)] * count

    def outage(self, seconds: float, how: str = "500") -> None:
        """For ``seconds``, every REST request fails: ``500`` (an HTTP 500 answer) or
        ``close`` (the connection is cut before any answer; the request had no effect)."""
        self.outage_until = time.monotonic() + seconds
        self.outage_mode = how

    def fail_next_edits(
        self, count: int, status: int = 429, *, retry_after: float = 0.25, is_global: bool = False
    ) -> None:
        """Answer the next ``count`` message PATCHes with ``status``."""
        self._edit_failures += [_Failure(status, retry_after, is_global)] * count

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds; it is checked after every request and event."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(
                f"fake Discord: condition not met within {timeout}s; last requests: "
                f"{[(r.method, r.path, r.status) for r in self.requests[-5:]]}"
            ) from None

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway connection (the session stays resumable)."""
        session = self._session
        if session is None or session.connection is None:
            raise AssertionError("the bot is not connected to the fake gateway")
        connection = session.connection
        session.connection = None
        await connection.ws.close(code=code, message=b"dropped by the test")
        await self._notify()

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT, as Discord does before moving a session."""
        session = self._session
        if session is None or session.connection is None:
            raise AssertionError("the bot is not connected to the fake gateway")
        await session.connection.send({"op": OP_RECONNECT, "d": None})

    # -- gateway ------------------------------------------------------------------------

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def shards_connected(self) -> set[int]:
        """The shard ids with a live gateway connection."""
        return {n for n, session in self._shards.items() if session.connection is not None}

    def shard_of(self, guild_id: str | None) -> int:
        """The shard a guild's events go to (DMs: shard 0)."""
        return 0 if guild_id is None else (int(guild_id) >> 22) % self.shard_count

    def _session_for(self, event: str, data: Json) -> _Session | None:
        if not self._shards:
            return self._session
        guild_id = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
        return self._shards.get(self.shard_of(guild_id))

    async def _dispatch(self, event: str, data: Json) -> None:
        session = self._session_for(event, data)
        if session is None:
            return  # not connected yet: READY and GUILD_CREATE will carry the world
        await self._send_to(session, event, data)

    async def _send_to(self, session: _Session, event: str, data: Json) -> None:
        """An event for one session (its READY and its own guilds)."""
        session.seq += 1
        frame = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.connection is not None:
            await self._send(session.connection, frame)
        await self._notify()

    async def _send(self, connection: _Connection, frame: Json) -> None:
        self.gateway_log.append((time.monotonic(), "send", frame))
        await connection.send(frame)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.connections.append(request.path_qs)
        query = request.query
        connection = _Connection(ws, query.get("compress"))
        try:
            if query.get("encoding", "json") != "json" or query.get("compress") not in (
                None,
                "zlib-stream",
            ):
                await ws.close(code=CLOSE_DECODE_ERROR, message=b"unsupported encoding")
                return ws
            hello = {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            await self._send(connection, hello)
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    # Clients never compress what they send; anything else is a decode error.
                    await ws.close(code=CLOSE_DECODE_ERROR, message=b"decode error")
                    break
                frame = json.loads(msg.data)
                self.gateway_log.append((time.monotonic(), "recv", frame))
                await self._on_frame(connection, frame)
                await self._notify()
        finally:
            if connection.session is not None and connection.session.connection is connection:
                connection.session.connection = None
            await self._notify()
        return ws

    async def _on_frame(self, connection: _Connection, frame: Json) -> None:
        op = frame.get("op")
        data = frame.get("d")
        if op == OP_HEARTBEAT:
            await self._send(connection, {"op": OP_HEARTBEAT_ACK})
        elif op == OP_IDENTIFY:
            await self._identify(connection, data)
        elif op == OP_RESUME:
            await self._resume(connection, data)

    async def _identify(self, connection: _Connection, data: Json) -> None:
        if data.get("token") != self.token:
            await connection.ws.close(
                code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed."
            )
            return
        intents = int(data.get("intents", 0))
        if intents & INTENT_MESSAGE_CONTENT and not self.message_content_intent_enabled:
            await connection.ws.close(
                code=CLOSE_DISALLOWED_INTENTS, message=b"Disallowed intent(s)."
            )
            return
        self.identifies += 1
        shard_id, shard_count = (int(n) for n in (data.get("shard") or (0, 1)))
        sharded = shard_count > 1
        previous = self._shards.get(shard_id) if sharded else self._session
        if previous is not None:
            previous.invalid = True
        session = _Session(
            id=self._snowflake(),
            intents=intents,
            connection=connection,
            shard=(shard_id, shard_count),
        )
        self._sessions[session.id] = session
        self._session = session
        if sharded:
            self.shard_count = shard_count
            self._shards[shard_id] = session
        connection.session = session
        mine = [g for g in self.guilds.values() if not sharded or self.shard_of(g.id) == shard_id]
        ready = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": g.id, "unavailable": True} for g in mine],
            "shard": [shard_id, shard_count],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume",
            "application": {"id": self.application_id, "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
        await self._send_to(session, "READY", ready)
        for guild in mine:
            await self._send_to(session, "GUILD_CREATE", self._guild_payload(guild))

    async def _resume(self, connection: _Connection, data: Json) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or session.invalid or data.get("token") != self.token:
            await self._send(connection, {"op": OP_INVALID_SESSION, "d": False})
            return
        self.resumes += 1
        session.connection = connection
        connection.session = session
        last = int(data.get("seq") or 0)
        for frame in session.events:
            if frame["s"] > last:
                await self._send(connection, frame)
        await self._dispatch("RESUMED", {})

    def _guild_payload(self, guild: FakeGuild) -> Json:
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "owner_id": guild.owner_id,
            "unavailable": False,
            "large": False,
            "member_count": 1,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "features": [],
            "emojis": [],
            "stickers": [],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_flags": 0,
            "roles": [
                {
                    "id": guild.id,  # @everyone has the guild's id
                    "name": "@everyone",
                    "permissions": _ALL_PERMISSIONS,
                    "position": 0,
                    "color": 0,
                    "hoist": False,
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "members": [{**self.bot_user.member_payload(), "user": self.bot_user.payload()}],
            "channels": [c.payload() for c in guild.channels],
            "threads": [t.payload() for t in guild.threads],
        }

    def _mention_payload(self, user: FakeUser, guild_id: str | None) -> Json:
        data = user.payload()
        if guild_id is not None:
            data["member"] = user.member_payload()
        return data

    def _new_message(
        self,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        referenced: FakeMessage | None,
        guild_id: str | None,
    ) -> FakeMessage:
        message_id = self._snowflake()
        payload: Json = {
            "id": message_id,
            "channel_id": channel.id,
            "author": author.payload(),
            "content": content,
            "timestamp": _timestamp(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if guild_id is not None:
            payload["guild_id"] = guild_id
            payload["member"] = author.member_payload()
        if referenced is not None:
            payload["type"] = 19
            reference: Json = {
                "type": 0,
                "message_id": referenced.id,
                "channel_id": referenced.channel_id,
            }
            if referenced.guild_id:
                reference["guild_id"] = referenced.guild_id
            payload["message_reference"] = reference
            payload["referenced_message"] = None if referenced.deleted else referenced.payload
        message = FakeMessage(
            message_id,
            channel.id,
            author,
            content,
            guild_id,
            referenced.id if referenced else None,
            payload,
            versions=[(time.monotonic(), content)],
        )
        self.messages[message_id] = message
        return message

    # -- REST -----------------------------------------------------------------------------

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
        record = RecordedRequest(
            request.method,
            request.path.removeprefix(API_PREFIX),
            body,
            time.monotonic(),
            dict(request.headers),
        )
        self.requests.append(record)
        request[_RECORD] = record
        if time.monotonic() < self.outage_until:
            if self.outage_mode == "close" and request.transport is not None:
                request.transport.abort()
            response: web.StreamResponse = _json(
                {"message": "500: Internal Server Error", "code": 0}, 500
            )
        elif self.needs_bot_token(request.path) and (
            request.headers.get("Authorization") != f"Bot {self.token}"
        ):
            response = _json({"message": "401: Unauthorized", "code": 0}, 401)
        else:
            response = await handler(request)
            lose = self.lost_answers and request.method == "POST" and response.status == 200
            if lose and request.path.endswith("/messages") and request.transport is not None:
                self.lost_answers -= 1
                request.transport.abort()  # done, but the client never hears of it
        record.status = response.status
        await self._notify()
        return response

    async def _get_me(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0}
        )

    async def _get_application(self, request: web.Request) -> web.StreamResponse:
        owner = self.bot_user.payload()
        return _json(
            {
                "id": self.application_id,
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": "0" * 64,
                "owner": owner,
                "team": None,
                "flags": 0,
                "rpc_origins": [],
                "interactions_endpoint_url": None,
                "bot": owner,
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.StreamResponse:
        return _json({"url": self.gateway_url.rstrip("/")})

    async def _get_gateway_bot(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": self.shard_count,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 86_400_000,
                    "max_concurrency": 1,
                },
            }
        )

    def _channel_or_error(self, channel_id: str) -> tuple[FakeChannel | None, web.Response | None]:
        channel = self.channels.get(channel_id)
        if channel is None:
            return None, _json({"message": "Unknown Channel", "code": 10003}, 404)
        if channel_id in self.forbidden_channels:
            return None, _json({"message": "Missing Permissions", "code": 50013}, 403)
        return channel, None

    async def _post_message(self, request: web.Request) -> web.StreamResponse:
        channel, error = self._channel_or_error(request.match_info["channel_id"])
        if error is not None:
            return error
        assert channel is not None
        if self._send_failures:
            return _failure(self._send_failures.pop(0), "messages-post")
        body = _body(request)
        nonce = str(body.get("nonce")) if body.get("enforce_nonce") else None
        if nonce is not None and nonce in self._by_nonce:
            return _json(self._by_nonce[nonce].payload)  # a repeated send: the same message
        content = body.get("content") or ""
        invalid = _check_content(content, body)
        if invalid is not None:
            return invalid
        referenced: FakeMessage | None = None
        reference = body.get("message_reference")
        if reference:
            referenced = self.messages.get(str(reference.get("message_id")))
            if referenced is None or referenced.deleted:
                if reference.get("fail_if_not_exists", True):
                    return _form_error(
                        "message_reference", "REPLIES_UNKNOWN_MESSAGE", "Unknown message"
                    )
                referenced = None  # Discord posts it as a plain message
        message = self._new_message(channel, self.bot_user, content, referenced, channel.guild_id)
        message.posted_at = request[_RECORD].at
        if referenced is not None and referenced.id not in self.replies_to:
            self.replies_to[referenced.id] = message
            for listener in self.reply_listeners:
                listener(referenced, message)
        if nonce is not None:
            self._by_nonce[nonce] = message
        await self._dispatch("MESSAGE_CREATE", message.payload)
        return _json(message.payload)

    async def _patch_message(self, request: web.Request) -> web.StreamResponse:
        _, error = self._channel_or_error(request.match_info["channel_id"])
        if error is not None:
            return error
        message = self.messages.get(request.match_info["message_id"])
        if (
            message is None
            or message.deleted
            or message.channel_id != request.match_info["channel_id"]
        ):
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        if message.author is not self.bot_user:
            return _json(
                {"message": "Cannot edit a message authored by another user", "code": 50005}, 403
            )
        if self._edit_failures:
            return _failure(self._edit_failures.pop(0), "messages-patch")
        body = _body(request)
        if "content" in body:
            content = body["content"] or ""
            invalid = _check_content(content, body)
            if invalid is not None:
                return invalid
            message.show(content)
        message.payload["edited_timestamp"] = _timestamp()
        await self._dispatch("MESSAGE_UPDATE", message.payload)
        return _json(message.payload)

    async def _delete_message(self, request: web.Request) -> web.StreamResponse:
        message = self.messages.get(request.match_info["message_id"])
        if message is None or message.deleted:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        await self.delete_message(message.id)
        return web.Response(status=204)

    async def _post_typing(self, request: web.Request) -> web.StreamResponse:
        _, error = self._channel_or_error(request.match_info["channel_id"])
        if error is not None:
            return error
        return web.Response(status=204)

    async def _not_found(self, request: web.Request) -> web.StreamResponse:
        return _json({"message": "404: Not Found", "code": 0}, 404)


def _failure(failure: _Failure, bucket: str) -> web.Response:
    if failure.status == 429:
        reset_after = failure.retry_after
        headers = {
            # discord.py retries a 429 only when it came through Discord's proxy (Via).
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(reset_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{bucket}",
            "X-RateLimit-Scope": "user",
        }
        if failure.is_global:
            headers["X-RateLimit-Global"] = "true"
            headers["X-RateLimit-Scope"] = "global"
        body = {
            "message": "You are being rate limited.",
            "retry_after": failure.retry_after,
            "global": failure.is_global,
        }
        return _json(body, 429, headers)
    if failure.status == 403:
        return _json({"message": "Missing Permissions", "code": 50013}, 403)
    return _json({"message": f"{failure.status}: fake failure", "code": 0}, failure.status)
