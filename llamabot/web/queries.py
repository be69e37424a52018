"""The admin page's reads of the history: small, indexed, paginated by keyset (``before``
an id), so every page costs the same with a million messages stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.storage.models import Conversation, Message

PAGE = 50


@dataclass(frozen=True)
class Activity:
    """The last hour, for the overview."""

    messages: int
    replies: int
    failed: int
    replies_per_minute: float
    first_reply_p50_ms: int | None
    first_reply_p99_ms: int | None


@dataclass(frozen=True)
class ConversationRow:
    id: int
    key: str
    platform: str
    private: bool
    last_at: datetime | None
    title: str | None


@dataclass(frozen=True)
class TranscriptLine:
    id: int
    role: str
    author_id: str | None
    author_name: str | None
    content: str
    persona: str | None
    model: str | None
    status: str
    at: datetime


def _hour_ago() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)


async def activity(engine: AsyncEngine) -> Activity:
    since = _hour_ago()
    async with engine.connect() as conn:
        # The newest messages by id (created_at grows with it), read through the primary
        # key: the last hour costs what it holds, not what the table holds.
        # Through the created_at index (min(id) would walk the ids from the oldest).
        first = (
            await conn.execute(
                select(Message.id)
                .where(Message.created_at >= since)
                .order_by(Message.created_at)
                .limit(1)
            )
        ).scalar()
        if first is None:
            return Activity(0, 0, 0, 0.0, None, None)
        rows = (
            await conn.execute(
                select(Message.role, Message.status, Message.reply_ms).where(Message.id >= first)
            )
        ).all()
    messages = sum(1 for role, _, _ in rows if role == "user")
    replies = [(status, ms) for role, status, ms in rows if role == "assistant"]
    times = sorted(ms for status, ms in replies if ms is not None and status == "ok")

    def rank(fraction: float) -> int | None:
        if not times:
            return None
        return int(times[min(len(times) - 1, max(0, round(fraction * len(times)) - 1))])

    return Activity(
        messages=messages,
        replies=len(replies),
        failed=sum(1 for status, _ in replies if status not in ("ok",)),
        replies_per_minute=len(replies) / 60,
        first_reply_p50_ms=rank(0.5),
        first_reply_p99_ms=rank(0.99),
    )


async def conversations(
    engine: AsyncEngine, *, platform: str = "", before: int | None = None, limit: int = PAGE
) -> list[ConversationRow]:
    """Conversations, newest first (by id), with their last message's time."""
    # The newest message through the (conversation_id, id) index: one row read, however
    # long the conversation (max(created_at) would read them all).
    last = (
        select(Message.created_at)
        .where(Message.conversation_id == Conversation.id)
        .order_by(Message.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    query = select(
        Conversation.id,
        Conversation.key,
        Conversation.platform,
        Conversation.is_private,
        last,
        Conversation.title,
    ).order_by(Conversation.id.desc())
    if platform:
        query = query.where(Conversation.platform == platform)
    if before is not None:
        query = query.where(Conversation.id < before)
    async with engine.connect() as conn:
        return [ConversationRow(*row) for row in await conn.execute(query.limit(limit))]


async def conversation(engine: AsyncEngine, conversation_id: int) -> ConversationRow | None:
    found = await conversations(engine, before=conversation_id + 1, limit=1)
    return found[0] if found and found[0].id == conversation_id else None


async def transcript(
    engine: AsyncEngine,
    conversation_id: int,
    *,
    before: int | None = None,
    person: str = "",
    until: datetime | None = None,
    limit: int = PAGE,
) -> list[TranscriptLine]:
    """A conversation's messages, newest first, through the (conversation_id, id) index;
    ``until`` starts the page at that time (a date to go to)."""
    query = (
        select(
            Message.id,
            Message.role,
            Message.author_id,
            Message.author_name,
            Message.content,
            Message.persona,
            Message.model,
            Message.status,
            Message.created_at,
        )
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.id.desc())
    )
    if before is not None:
        query = query.where(Message.id < before)
    if person:
        query = query.where(Message.author_id == person)
    if until is not None:
        query = query.where(Message.created_at < until)
    async with engine.connect() as conn:
        return [TranscriptLine(*row) for row in await conn.execute(query.limit(limit))]
