"""Inbox: platform messages taken in and not handled yet, kept across a restart.

An adapter confirms a message to its platform only once it is in the inbox; the bot
deletes it once handled. Whatever a stop left here is handled at the next start.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from llamabot.events import Author, ChannelRef, Inbound
from llamabot.storage.history import HistoryStore, is_sqlite
from llamabot.storage.models import InboxEntry

_VALUES: dict[str, Any] = {
    "conversation_key": bindparam("key"),
    "platform_message_id": bindparam("message_id"),
    "inbound": bindparam("inbound"),
    "received_at": bindparam("received_at"),
}
_DONE = delete(InboxEntry).where(InboxEntry.id == bindparam("id"))
# SQLite: compiled once, run on the DB-API cursor; this is on every message's path.
_DIALECT = sqlite.dialect(paramstyle="named")
_PUT_SQL = str(
    sqlite.insert(InboxEntry).values(_VALUES).on_conflict_do_nothing().compile(dialect=_DIALECT)
)
_DONE_SQL = str(_DONE.compile(dialect=_DIALECT))
_TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"
# Other databases (PostgreSQL): the same statements through SQLAlchemy.
_PUT = (
    postgresql.insert(InboxEntry).values(_VALUES).on_conflict_do_nothing().returning(InboxEntry.id)
)
T = TypeVar("T")


def _plain(value: object) -> dict[str, Any]:
    # dataclasses.asdict deep-copies every field: a tenth of a millisecond per message.
    return {f.name: getattr(value, f.name) for f in fields(value)}  # type: ignore[arg-type]


def _as_json(inbound: Inbound) -> str:
    data = _plain(inbound)
    data["channel"] = _plain(inbound.channel)
    data["author"] = _plain(inbound.author)
    data["received_at"] = inbound.received_at.isoformat()
    return json.dumps(data, ensure_ascii=False)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    """``cls(**data)`` with only the fields ``cls`` has now.

    Rows written by another version of llamabot still load: a field added since gets
    its default, a field removed since is left out.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return cls(**values)


def _from_json(text: str) -> Inbound:
    data: dict[str, Any] = json.loads(text)
    data["channel"] = _build(ChannelRef, data["channel"])
    data["author"] = _build(Author, data["author"])
    data["received_at"] = datetime.fromisoformat(data["received_at"])
    return _build(Inbound, data)


def _put(conn: Connection, params: dict[str, Any]) -> int | None:
    if not is_sqlite(conn):
        entry = conn.execute(_PUT, params).scalar()
        return int(entry) if entry is not None else None
    cursor = conn.connection.cursor()
    try:
        cursor.execute(
            _PUT_SQL, {**params, "received_at": params["received_at"].strftime(_TIMESTAMP)}
        )
        return int(cursor.lastrowid or 0) if cursor.rowcount else None
    finally:
        cursor.close()


def _put_all(conn: Connection, rows: list[dict[str, Any]]) -> list[int | None]:
    return [_put(conn, params) for params in rows]


class Inbox:
    """The durable queue in front of the router, in the history database.

    Messages arriving while a write is under way are kept together in the next one
    (a group commit): under a burst, one transaction takes many messages.
    """

    def __init__(self, store: HistoryStore) -> None:
        self._store = store
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[int | None]]] = []
        self._writing: asyncio.Task[None] | None = None

    async def put(self, inbound: Inbound) -> int | None:
        """Keep a message until it is handled; ``None`` when it is already kept."""
        params: dict[str, Any] = {
            "key": inbound.channel.key,
            "message_id": inbound.message_id,
            "inbound": _as_json(inbound),
            "received_at": datetime.now(UTC).replace(tzinfo=None),
        }
        kept: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((params, kept))
        if self._writing is None:
            self._writing = asyncio.create_task(self._write())
        return await kept

    async def _write(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    rows = [params for params, _ in batch]
                    entries = await self._store.run(functools.partial(_put_all, rows=rows))
                except BaseException as exc:
                    for _, kept in batch:
                        if not kept.done():
                            kept.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                # In arrival order: the callers go on to the router in that order.
                for (_, kept), entry in zip(batch, entries, strict=True):
                    if not kept.done():
                        kept.set_result(entry)
        finally:
            self._writing = None

    async def done(self, *entry_ids: int) -> None:
        """The messages were handled: forget them (one transaction)."""
        rows = [{"id": entry_id} for entry_id in entry_ids]

        def work(conn: Connection) -> None:
            if not is_sqlite(conn):
                conn.execute(_DONE, rows)
                return
            cursor = conn.connection.cursor()
            try:
                cursor.executemany(_DONE_SQL, rows)
            finally:
                cursor.close()

        await self._store.run(work)

    async def pending(self) -> list[tuple[int, Inbound]]:
        """Messages a stop left unhandled, oldest first."""
        query = select(InboxEntry.id, InboxEntry.inbound).order_by(InboxEntry.id)
        rows = await self._store.run(lambda conn: list(conn.execute(query)))
        return [(int(entry_id), _from_json(text)) for entry_id, text in rows]
