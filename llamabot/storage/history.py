"""HistoryStore: conversations and their messages, and the window the model sees."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llamabot.events import ChannelRef
from llamabot.storage.engine import is_in_memory
from llamabot.storage.models import Conversation, Message, StoredImage
from llamabot.storage.pooled import PooledGroups
from llamabot.storage.recent import RecentTurns
from llamabot.storage.serial import SerialConnection

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """What was stored about a message: enough to report how a reply went."""

    id: int
    role: str
    status: str
    tokens: int
    reply_ms: int | None


class Turn(NamedTuple):
    """A stored message as the history window returns it.

    ``tool_calls`` is an assistant turn's calls as stored (JSON text); a ``tool`` turn
    names the tool and the call it answers; ``images`` a person's pictures (JSON
    references). A tuple in the window query's column order: made from a row at a fifth
    of a frozen dataclass's cost (a window makes one per message it shows).
    """

    role: str
    content: str
    author_name: str | None
    tokens: int
    tool_calls: str | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    images: str | None = None
    id: int = 0  # the message's id (memory folds the turns older than a window's first)


@dataclass(frozen=True, slots=True)
class FoundMessage:
    """A message a search of the history found."""

    role: str
    author_name: str | None
    content: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store. ``author_id`` is ``platform:user_id`` for people."""

    role: str
    content: str
    tokens: int
    author_id: str | None = None
    author_name: str | None = None
    persona: str | None = None
    model: str | None = None
    status: str = "ok"
    platform_message_id: str | None = None
    reply_ms: int | None = None
    tool_calls: str | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    images: str | None = None


# Search words: letters and digits in any script; the rest of a query is not syntax.
_WORD = re.compile(r"\w+")
_MOST_WORDS = 16


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _vacuum_incrementally(connection: Connection) -> None:
    # The pragma frees one page per step of the statement, and Python's sqlite3 steps a
    # statement that returns no columns only once: run it once per free page.
    cursor = connection.connection.cursor()
    try:
        cursor.execute("PRAGMA freelist_count")
        row = cursor.fetchone()
        free = int(row[0]) if row else 0
        for _ in range(free):
            cursor.execute("PRAGMA incremental_vacuum")
    finally:
        cursor.close()


def _naive_utc(moment: datetime) -> datetime:
    # Timestamps are stored as naive UTC (SQLite has no time zones).
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


# The per-message statements run on the DB-API cursor with SQL compiled once from the
# models: SQLAlchemy's per-execute work was a third of the time a message spends here.
_MESSAGE_COLUMNS = [c.name for c in Message.__table__.columns if c.name != "id"]
_MESSAGE_VALUES: dict[str, Any] = {name: bindparam(name) for name in _MESSAGE_COLUMNS}
_WINDOW_SELECT = (
    select(
        Message.role,
        Message.content,
        Message.author_name,
        Message.tokens,
        Message.tool_calls,
        Message.tool_name,
        Message.tool_call_id,
        Message.images,
        Message.id,
    )
    .where(Message.conversation_id == bindparam("cid"), Message.status == "ok")
    .order_by(Message.id.desc())
    .limit(bindparam("n"))
)
# A person's message already stored (a replayed platform update) inserts nothing.
_SQLITE = sqlite.dialect(paramstyle="named")
_INSERT_SQL = str(
    sqlite.insert(Message).values(_MESSAGE_VALUES).on_conflict_do_nothing().compile(dialect=_SQLITE)
)
_WINDOW = _WINDOW_SELECT.compile(dialect=_SQLITE)
_WINDOW_SQL = str(_WINDOW)
_WINDOW_CONSTANTS = dict(_WINDOW.params)  # status = 'ok', OFFSET 0
# Other databases (PostgreSQL through asyncpg) run the same statements through
# SQLAlchemy, whose asyncpg dialect prepares each statement once per connection.
_INSERT_RETURNING = (
    postgresql.insert(Message)
    .values(_MESSAGE_VALUES)
    .on_conflict_do_nothing()
    .returning(Message.id)
)


def sqlite_timestamp(moment: datetime) -> str:
    """A naive timestamp as SQLAlchemy's SQLite DateTime stores it ("%Y-%m-%d
    %H:%M:%S.%f"), which the raw inserts must match; a third of strftime's cost."""
    return moment.isoformat(" ", "microseconds")


def is_sqlite(conn: Connection) -> bool:
    """Whether ``conn`` talks to SQLite (whose hot path runs on the DB-API cursor)."""
    return conn.dialect.name == "sqlite"


def _insert(conn: Connection, conversation_id: int, message: NewMessage) -> int:
    """Store one message; returns its id, or 0 when it was stored before."""
    now = _now()
    values: dict[str, Any] = {
        "conversation_id": conversation_id,
        "role": message.role,
        "author_id": message.author_id,
        "author_name": message.author_name,
        "content": message.content,
        "persona": message.persona,
        "model": message.model,
        "tokens": message.tokens,
        "status": message.status,
        "platform_message_id": message.platform_message_id,
        "reply_ms": message.reply_ms,
        "created_at": now,
        "tool_calls": message.tool_calls,
        "tool_name": message.tool_name,
        "tool_call_id": message.tool_call_id,
        "images": message.images,
    }
    if not is_sqlite(conn):
        return int(conn.execute(_INSERT_RETURNING, values).scalar() or 0)
    values["created_at"] = sqlite_timestamp(now)
    cursor = conn.connection.cursor()
    try:
        cursor.execute(_INSERT_SQL, values)
        return int(cursor.lastrowid or 0) if cursor.rowcount else 0
    finally:
        cursor.close()


def _read_window(conn: Connection, conversation_id: int, count: int, tokens: int) -> list[Turn]:
    return _fit(_window_rows(conn, conversation_id, count), tokens)


def _window_rows(conn: Connection, conversation_id: int, count: int) -> list[Turn]:
    """The newest ``count`` complete turns, newest first."""
    if not is_sqlite(conn):
        rows: Sequence[Sequence[Any]] = conn.execute(
            _WINDOW_SELECT, {"cid": conversation_id, "n": count}
        ).all()
    else:
        cursor = conn.connection.cursor()
        try:
            cursor.execute(_WINDOW_SQL, {**_WINDOW_CONSTANTS, "cid": conversation_id, "n": count})
            rows = cursor.fetchall()
        finally:
            cursor.close()
    return [Turn._make(row) for row in rows]


def _data_version(conn: Connection) -> int:
    cursor = conn.connection.cursor()
    try:
        cursor.execute("PRAGMA data_version")
        row = cursor.fetchone()
        return int(row[0]) if row else 0
    finally:
        cursor.close()


def _turn_of(message: NewMessage, message_id: int) -> Turn:
    """A stored message as the window query returns it."""
    return Turn(
        message.role,
        message.content,
        message.author_name,
        message.tokens,
        message.tool_calls,
        message.tool_name,
        message.tool_call_id,
        message.images,
        message_id,
    )


def _fit(newest_first: Sequence[Turn], max_tokens: int) -> list[Turn]:
    """The newest turns within ``max_tokens``, oldest first."""
    turns: list[Turn] = []
    used = 0
    for turn in newest_first:
        tokens = turn.tokens
        if turns and used + tokens > max_tokens:
            break
        used += tokens
        turns.append(turn)
    turns.reverse()
    return turns


async def found_messages(conn: AsyncConnection, ids: Sequence[int]) -> list[FoundMessage]:
    """The messages ``ids`` (a search's, best first) in that order; deleted ones left out."""
    rows = await conn.execute(
        select(
            Message.id, Message.role, Message.author_name, Message.content, Message.created_at
        ).where(Message.id.in_(list(ids)))
    )
    by_id = {int(row[0]): FoundMessage(*row[1:]) for row in rows}
    return [by_id[i] for i in ids if i in by_id]


class HistoryStore:
    """Reads and writes conversation history. Every write is one transaction.

    The per-message work (store a turn, read the window) runs in group commits: on a
    :class:`SerialConnection` on the event loop (SQLite), or on the async engine's pool
    (:class:`PooledGroups`); the rest uses the async engine.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._ids: dict[str, int] = {}
        self._titles: dict[str, str] = {}  # key -> the chat's name, as stored
        # SQLite: the history's own connection. In memory, another connection would see
        # another database; other databases are served by the async engine's pool.
        serial = engine.dialect.name == "sqlite" and not is_in_memory(engine.url)
        # Only the serial connection's units touch it, one group at a time (SQLite files).
        self._recent = RecentTurns[Turn]() if serial else None
        self._serial = (
            SerialConnection(engine.url, on_rollback=self._recent.clear, on_begin=self._check)
            if self._recent is not None
            else None
        )
        # Where the units run: that connection, or (other databases, and SQLite in memory)
        # group commits on the engine's pool.
        self._units: SerialConnection | PooledGroups = self._serial or PooledGroups(engine)

    def _check(self, conn: Connection) -> None:
        # Once a transaction: what other connections changed empties the cache.
        if self._recent is not None:
            self._recent.check(_data_version(conn))

    async def aclose(self) -> None:
        """Close the serial connection (the engine belongs to whoever created it)."""
        if self._serial is not None:
            await self._serial.aclose()

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run ``work(connection)`` as one transaction on the history connection."""
        return await self._unit(work)

    async def _unit(self, work: Callable[[Connection], T]) -> T:
        return await self._units.run(work)

    async def conversation_id(self, channel: ChannelRef, title: str | None = None) -> int:
        """The conversation row for a channel, created on first use; ``title`` (the
        chat's name, when the platform gives one) is kept up to date."""
        key = channel.key
        cached = self._ids.get(key)
        if cached is not None and (title is None or self._titles.get(key) == title):
            return cached

        def find_or_create(conn: Connection) -> int:
            found = conn.execute(
                select(Conversation.id, Conversation.title).where(Conversation.key == key)
            ).first()
            if found is None:
                result = conn.execute(
                    insert(Conversation).values(
                        key=key,
                        platform=channel.platform,
                        chat_id=channel.chat_id,
                        thread_id=channel.thread_id,
                        is_private=channel.is_private,
                        created_at=_now(),
                        title=title,
                    )
                )
                created = result.inserted_primary_key[0] if result.inserted_primary_key else None
                if created is None:
                    raise RuntimeError(f"could not create a conversation for {key}")
                return int(created)
            if title is not None and found.title != title:
                conn.execute(
                    update(Conversation).where(Conversation.id == found.id).values(title=title)
                )
            return int(found.id)

        self._ids[key] = await self._unit(find_or_create)
        if title is not None:
            self._titles[key] = title
        return self._ids[key]

    async def append(self, conversation_id: int, *messages: NewMessage) -> list[int]:
        """Store messages in one transaction; returns their ids in order."""

        def work(conn: Connection) -> list[int]:
            ids = [_insert(conn, conversation_id, message) for message in messages]
            if self._recent is not None:
                for stored, message in zip(ids, messages, strict=True):
                    if stored and message.status == "ok":
                        self._recent.add(conversation_id, _turn_of(message, stored))
            return ids

        return await self._unit(work)

    async def append_and_window(
        self, conversation_id: int, message: NewMessage, max_messages: int, max_tokens: int
    ) -> list[Turn] | None:
        """Store a person's message and read the window that ends with it, in one go.

        The newest turn is always included, even when it alone is over ``max_tokens``.
        ``None`` when this platform message was stored before (it was answered already).
        """

        def work(conn: Connection) -> list[Turn] | None:
            recent = self._recent
            stored = _insert(conn, conversation_id, message)
            if not stored:
                return None
            if recent is None:
                return _read_window(conn, conversation_id, max_messages, max_tokens)
            if message.status == "ok":
                recent.add(conversation_id, _turn_of(message, stored))
            cached = recent.newest(conversation_id, max_messages)
            if cached is not None:
                return _fit(cached, max_tokens)
            rows = _window_rows(conn, conversation_id, max_messages)
            recent.remember(conversation_id, rows, max_messages)
            return _fit(rows, max_tokens)

        return await self._unit(work)

    async def window(self, conversation_id: int, max_messages: int, max_tokens: int) -> list[Turn]:
        """The newest complete turns that fit both limits, oldest first.

        Reads at most ``max_messages`` rows through the (conversation_id, id) index, so
        the cost does not grow with the size of the history.
        """
        return await self._unit(
            lambda conn: _read_window(conn, conversation_id, max_messages, max_tokens)
        )

    async def clear(self, conversation_id: int) -> int:
        """Delete every message of a conversation; returns how many."""
        return await self._delete(Message.conversation_id == conversation_id)

    async def forget_author(self, author_id: str) -> int:
        """Delete everything one person said, in every conversation; returns how many."""
        return await self._delete(Message.author_id == author_id)

    async def prune(self, before: datetime) -> int:
        """Delete every message older than ``before`` (UTC); returns how many."""
        return await self._delete(Message.created_at < _naive_utc(before))

    async def _delete(self, condition: ColumnElement[bool]) -> int:
        # Another connection: the serial one sees data_version change and forgets its
        # cache before the next window (see storage/recent.py).
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(Message).where(condition))
            # A kept picture goes with the last message that names it.
            await conn.execute(
                delete(StoredImage).where(
                    ~select(Message.id).where(Message.images.contains(StoredImage.sha256)).exists()
                )
            )
        removed = int(result.rowcount or 0)
        if removed:
            await self.reclaim_space()
        return removed

    async def reclaim_space(self) -> None:
        """Give freed pages back to the file system and fold the WAL into the database.

        Without the checkpoint, deleted text would live on in the -wal file.
        """
        if self.engine.dialect.name != "sqlite":
            return
        async with self.engine.connect() as conn:
            # Merging the search index's segments drops the deleted text from them too.
            await conn.exec_driver_sql("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
            await conn.run_sync(_vacuum_incrementally)
            await conn.commit()
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def index_for_search(self) -> int:
        """SQLite: put the messages stored since the last call into the full-text index,
        in one statement (storing a message does not touch it); returns how many."""
        if self.engine.dialect.name != "sqlite":
            return 0  # PostgreSQL keeps its GIN index itself
        # The first statement writes, so the transaction holds SQLite's write lock from
        # the start: no message can be stored between the two statements.
        async with self.engine.begin() as conn:
            added = await conn.execute(
                text(
                    "INSERT INTO messages_fts(rowid, content) SELECT id, content FROM messages "
                    "WHERE id > (SELECT indexed FROM messages_fts_progress WHERE id = 1)"
                )
            )
            await conn.execute(
                text(
                    "UPDATE messages_fts_progress SET indexed = "
                    "(SELECT COALESCE(MAX(id), indexed) FROM messages) WHERE id = 1"
                )
            )
        return int(added.rowcount or 0)

    async def keep_image(self, sha256: str, mime: str, data: bytes) -> None:
        """Keep a picture (``[history] store_images``); once per hash."""
        async with self.engine.begin() as conn:
            found = await conn.scalar(
                select(StoredImage.sha256).where(StoredImage.sha256 == sha256)
            )
            if found is None:
                await conn.execute(insert(StoredImage).values(sha256=sha256, mime=mime, data=data))

    async def kept_image(self, sha256: str) -> bytes | None:
        """A picture kept with ``keep_image``, or None."""
        async with self.engine.connect() as conn:
            data = await conn.scalar(select(StoredImage.data).where(StoredImage.sha256 == sha256))
        return None if data is None else bytes(data)

    async def search(
        self, conversation_id: int, query: str, limit: int = 5, *, newest_first: bool = False
    ) -> list[FoundMessage]:
        """Complete messages of one conversation that contain words of ``query``, the
        best matches first (SQLite FTS5; PostgreSQL full-text search), or the newest
        first: an admin's transcript search, which then stops at ``limit`` matches
        instead of ranking every message holding a common word."""
        words = _WORD.findall(query)[:_MOST_WORDS]
        if not words:
            return []
        if self.engine.dialect.name == "sqlite":
            await self.index_for_search()
        async with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                ranked = text(
                    "SELECT m.id FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                    "WHERE messages_fts MATCH :match AND m.conversation_id = :cid "
                    "AND m.status = 'ok' AND m.role IN ('user', 'assistant') "
                    + (
                        "ORDER BY messages_fts.rowid DESC"
                        if newest_first
                        else "ORDER BY messages_fts.rank"
                    )
                    + " LIMIT :n"
                )
                match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
            else:
                ranked = text(
                    "SELECT id FROM messages WHERE conversation_id = :cid AND status = 'ok' "
                    "AND role IN ('user', 'assistant') "
                    "AND to_tsvector('simple', content) @@ to_tsquery('simple', :match) "
                    + (
                        "ORDER BY id DESC LIMIT :n"
                        if newest_first
                        else "ORDER BY ts_rank(to_tsvector('simple', content), "
                        "to_tsquery('simple', :match)) DESC, id DESC LIMIT :n"
                    )
                )
                match = " | ".join(words)
            params = {"match": match, "cid": conversation_id, "n": limit}
            ids = [int(row[0]) for row in await conn.execute(ranked, params)]
            if not ids:
                return []
            return await found_messages(conn, ids)

    async def last_message(self, conversation_id: int) -> StoredMessage | None:
        """The newest message of a conversation (``None`` when it has none)."""
        query = (
            select(Message.id, Message.role, Message.status, Message.tokens, Message.reply_ms)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return StoredMessage(*row) if row is not None else None

    async def count(self, conversation_id: int | None = None) -> int:
        """How many messages are stored (in one conversation, or in all)."""
        query = select(func.count()).select_from(Message)
        if conversation_id is not None:
            query = query.where(Message.conversation_id == conversation_id)
        async with self.engine.connect() as conn:
            return int(await conn.scalar(query) or 0)
