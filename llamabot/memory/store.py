"""Where memory is kept: the ``summaries`` and ``person_facts`` tables.

Reads for a reply (a conversation's summary, a person's facts) are cached in memory and
the cache is updated by every write made here, so a reply with memory on costs no
database round trip once a conversation has been seen. Writes run off the reply's path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from llamabot.storage.models import Conversation, Message, PersonFact, Summary


@dataclass(frozen=True)
class SavedSummary:
    """A conversation's rolling summary: its text, tokens and the newest message it covers."""

    text: str
    tokens: int
    covers_through: int
    facts_through: int


@dataclass(frozen=True)
class Fact:
    """One fact about a person, as ``/memory`` numbers them (oldest first)."""

    id: int
    persona: str
    text: str
    private: bool


@dataclass(frozen=True)
class OldTurn:
    """A stored turn as the summariser and the fact extractor read it."""

    id: int
    role: str
    author_id: str | None
    author_name: str | None
    content: str


@dataclass(frozen=True)
class Waiting:
    """A conversation whose people's newest words facts were not taken from yet."""

    conversation_id: int
    platform: str
    chat_id: str
    thread_id: str | None
    is_private: bool
    said_at: datetime | None


_NO_SUMMARY = SavedSummary("", 0, 0, 0)
_TURN = (Message.id, Message.role, Message.author_id, Message.author_name, Message.content)


async def _forget_remember_turns(conn: AsyncConnection, texts: Sequence[str]) -> None:
    """Delete the stored ``remember`` calls (and their results) that noted ``texts``: a
    forgotten fact must not live on in the history the model is shown."""
    for text in texts:
        await conn.execute(
            delete(Message).where(
                or_(
                    Message.tool_calls.contains('"remember"')
                    & Message.tool_calls.contains(text, autoescape=True),
                    (Message.tool_name == "remember")
                    & Message.content.contains(text, autoescape=True),
                )
            )
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class MemoryStore:
    """Summaries and facts, on the bot's database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._summaries: dict[int, SavedSummary] = {}
        self._facts: dict[str, list[Fact]] = {}  # person -> every persona's facts

    # -- summaries ---------------------------------------------------------------------

    async def summary(self, conversation_id: int) -> SavedSummary:
        """The conversation's summary (empty text when there is none yet)."""
        cached = self._summaries.get(conversation_id)
        if cached is not None:
            return cached
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(
                        Summary.text, Summary.tokens, Summary.covers_through, Summary.facts_through
                    ).where(Summary.conversation_id == conversation_id)
                )
            ).first()
        found = SavedSummary(*row) if row is not None else _NO_SUMMARY
        self._summaries[conversation_id] = found
        return found

    async def save_summary(
        self,
        conversation_id: int,
        *,
        text: str | None = None,
        tokens: int | None = None,
        covers_through: int | None = None,
        facts_through: int | None = None,
    ) -> SavedSummary:
        """Change the given fields of the conversation's summary row (made if missing)."""
        old = await self.summary(conversation_id)
        new = SavedSummary(
            old.text if text is None else text,
            old.tokens if tokens is None else tokens,
            old.covers_through if covers_through is None else covers_through,
            old.facts_through if facts_through is None else facts_through,
        )
        values = {
            "text": new.text,
            "tokens": new.tokens,
            "covers_through": new.covers_through,
            "facts_through": new.facts_through,
            "updated_at": _now(),
        }
        async with self.engine.begin() as conn:
            changed = await conn.execute(
                update(Summary).where(Summary.conversation_id == conversation_id).values(values)
            )
            if not changed.rowcount:
                await conn.execute(
                    insert(Summary).values(conversation_id=conversation_id, **values)
                )
        self._summaries[conversation_id] = new
        return new

    async def turns_before(
        self, conversation_id: int, before: int, after: int, limit: int
    ) -> list[OldTurn]:
        """The complete turns between messages ``after`` and ``before`` (a window's
        oldest), oldest first, at most ``limit``."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(*_TURN)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.status == "ok",
                    Message.role.in_(("user", "assistant")),
                    Message.id > after,
                    Message.id < before,
                )
                .order_by(Message.id)
                .limit(limit)
            )
            return [OldTurn(*row) for row in rows]

    async def said_after(self, conversation_id: int, after: int, limit: int) -> list[OldTurn]:
        """What people said in the conversation after message ``after``, oldest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(
                    Message.id,
                    Message.role,
                    Message.author_id,
                    Message.author_name,
                    Message.content,
                )
                .where(
                    Message.conversation_id == conversation_id,
                    Message.status == "ok",
                    Message.role == "user",
                    Message.id > after,
                )
                .order_by(Message.id)
                .limit(limit)
            )
            return [OldTurn(*row) for row in rows]

    async def waiting_for_facts(self) -> list[Waiting]:
        """Conversations with messages from people that facts were not taken from yet
        (a restart lost their idle timers)."""
        last_said = (
            select(func.max(Message.id))
            .where(
                Message.conversation_id == Conversation.id,
                Message.role == "user",
                Message.status == "ok",
            )
            .correlate(Conversation)  # not to said_at's messages, below
            .scalar_subquery()
        )
        taken = (
            select(Summary.facts_through)
            .where(Summary.conversation_id == Conversation.id)
            .scalar_subquery()
        )
        said_at = select(Message.created_at).where(Message.id == last_said).scalar_subquery()
        query = select(
            Conversation.id,
            Conversation.platform,
            Conversation.chat_id,
            Conversation.thread_id,
            Conversation.is_private,
            said_at,
        ).where(last_said > func.coalesce(taken, 0))
        async with self.engine.connect() as conn:
            return [Waiting(*row) for row in await conn.execute(query)]

    # -- facts -------------------------------------------------------------------------

    async def facts(self, person: str) -> list[Fact]:
        """Every fact kept about ``person`` (``platform:user_id``), oldest first."""
        cached = self._facts.get(person)
        if cached is not None:
            return cached
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(PersonFact.id, PersonFact.persona, PersonFact.text, PersonFact.private)
                .where(PersonFact.person == person)
                .order_by(PersonFact.id)
            )
            found = [Fact(*row) for row in rows]
        self._facts[person] = found
        return found

    async def add_fact(
        self, person: str, persona: str, text: str, *, private: bool, source: str, keep: int
    ) -> bool:
        """Keep a fact (False when this persona already has it); then only the newest
        ``keep`` of the person's facts for this persona remain."""
        known = await self.facts(person)
        if any(f.persona == persona and f.text.casefold() == text.casefold() for f in known):
            return False
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(PersonFact).values(
                    person=person,
                    persona=persona,
                    text=text,
                    private=private,
                    source=source,
                    created_at=_now(),
                )
            )
            mine = select(PersonFact.id).where(
                PersonFact.person == person, PersonFact.persona == persona
            )
            count = (
                await conn.execute(select(func.count()).select_from(mine.subquery()))
            ).scalar_one()
            if count > keep:
                oldest = mine.order_by(PersonFact.id).limit(count - keep)
                await conn.execute(delete(PersonFact).where(PersonFact.id.in_(oldest)))
        self._facts.pop(person, None)
        return True

    async def forget_facts(self, person: str, ids: Sequence[int]) -> int:
        """Delete some of a person's facts (all of them when ``ids`` is empty), with the
        ``remember`` calls that noted them in the history."""
        condition = PersonFact.person == person
        if ids:
            condition = condition & PersonFact.id.in_(list(ids))
        async with self.engine.begin() as conn:
            texts = list((await conn.execute(select(PersonFact.text).where(condition))).scalars())
            removed = (await conn.execute(delete(PersonFact).where(condition))).rowcount or 0
            await _forget_remember_turns(conn, texts)
        self._facts.pop(person, None)
        return int(removed)

    # -- forgetting --------------------------------------------------------------------

    async def forget_conversation(self, conversation_id: int) -> None:
        """Drop the conversation's summary (its history was cleared)."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(Summary).where(Summary.conversation_id == conversation_id))
        self._summaries.pop(conversation_id, None)

    async def forget_person(self, person: str) -> tuple[int, int]:
        """Delete the person's facts, and the summaries of every conversation they spoke
        in (a summary may name them); (facts, summaries) deleted. Call before their
        messages are deleted: their messages say which conversations they were in."""
        async with self.engine.begin() as conn:
            spoke_in = select(Message.conversation_id).where(Message.author_id == person)
            conversations = [
                row[0]
                for row in await conn.execute(
                    select(Summary.conversation_id).where(Summary.conversation_id.in_(spoke_in))
                )
            ]
            if conversations:
                await conn.execute(
                    delete(Summary).where(Summary.conversation_id.in_(conversations))
                )
            texts = list(
                (
                    await conn.execute(select(PersonFact.text).where(PersonFact.person == person))
                ).scalars()
            )
            facts = await conn.execute(delete(PersonFact).where(PersonFact.person == person))
            await _forget_remember_turns(conn, texts)
        for conversation in conversations:
            self._summaries.pop(conversation, None)
        self._facts.pop(person, None)
        return int(facts.rowcount or 0), len(conversations)
