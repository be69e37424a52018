"""Usage figures from the history: messages, tokens and reply times."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from llamabot.storage.history import HistoryStore
from llamabot.storage.models import Message


@dataclass(frozen=True, slots=True)
class Usage:
    """Messages and tokens stored, and the median time a complete reply took."""

    messages: int
    tokens: int
    conversations: int
    median_reply_ms: int | None


async def usage(
    store: HistoryStore, conversation_id: int | None = None, author_id: str | None = None
) -> Usage:
    """Figures for one conversation, or for all of them; only one person's messages
    when ``author_id`` (``platform:user_id``) is given."""
    scope = [] if conversation_id is None else [Message.conversation_id == conversation_id]
    if author_id is not None:
        scope.append(Message.author_id == author_id)
    totals = (
        select(
            func.count(),
            func.coalesce(func.sum(Message.tokens), 0),
            func.count(func.distinct(Message.conversation_id)),
        )
        .select_from(Message)
        .where(*scope)
    )
    timed = [
        *scope,
        Message.role == "assistant",
        Message.status == "ok",
        Message.reply_ms.is_not(None),
    ]
    async with store.engine.connect() as conn:
        messages, tokens, conversations = (await conn.execute(totals)).one()
        count = int(await conn.scalar(select(func.count()).select_from(Message).where(*timed)) or 0)
        median: int | None = None
        if count:
            # SQLite has no median: read the one or two middle values in order.
            middle = (
                select(Message.reply_ms)
                .where(*timed)
                .order_by(Message.reply_ms)
                .offset((count - 1) // 2)
                .limit(2 - count % 2)
            )
            values = [v for v in (await conn.scalars(middle)).all() if v is not None]
            median = round(sum(values) / len(values))
    return Usage(int(messages), int(tokens), int(conversations), median)
