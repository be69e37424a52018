"""The database schema as SQLAlchemy models. Only Alembic migrations change the tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The declarative base all llamabot tables share."""


class Conversation(Base):
    """One conversation: a channel, DM, thread or forum topic on one platform."""

    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), unique=True)
    platform: Mapped[str] = mapped_column(String(32))
    chat_id: Mapped[str] = mapped_column(String(64))
    thread_id: Mapped[str | None] = mapped_column(String(64))
    is_private: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column()
    title: Mapped[str | None] = mapped_column(String(255))  # the chat's name, as last seen


class Message(Base):
    """One turn: a person's message or the bot's reply.

    ``status`` is ``ok`` for complete turns; an interrupted or failed reply keeps its
    partial text for the record but never enters the model's history window.
    """

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_conversation_id_id", "conversation_id", "id"),
        Index("ix_messages_author_id", "author_id"),
        Index("ix_messages_created_at", "created_at"),
        # A platform message is stored once: a replayed update (a restart, a platform
        # delivering twice) finds its row and is not answered again.
        Index(
            "uq_messages_user_platform_message",
            "conversation_id",
            "platform_message_id",
            unique=True,
            sqlite_where=text("role = 'user'"),
            postgresql_where=text("role = 'user'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))
    author_id: Mapped[str | None] = mapped_column(String(64))
    author_name: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)
    persona: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(255))
    tokens: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="ok")
    platform_message_id: Mapped[str | None] = mapped_column(String(64))
    reply_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column()
    # An assistant turn's tool calls, as JSON [{"id", "name", "arguments"}]; a tool
    # turn (role "tool") names the tool and the call it answers.
    tool_calls: Mapped[str | None] = mapped_column(Text)
    tool_name: Mapped[str | None] = mapped_column(String(64))
    tool_call_id: Mapped[str | None] = mapped_column(String(64))
    # A person's pictures, by reference (JSON [{"source", "mime", "sha256"}]), never
    # their bytes: the platform keeps the file.
    images: Mapped[str | None] = mapped_column(Text)


# The full-text search of messages lives outside the models: an FTS5 table with its
# triggers on SQLite, a GIN expression index on PostgreSQL (migration 0004).
SEARCH_SCHEMA = ("messages_fts", "ix_messages_content_search")


def is_modelled(name: str | None, type_: str, parent_names: object) -> bool:
    """For Alembic's ``include_name``: whether a schema object is declared here (the
    search index is not; see ``SEARCH_SCHEMA``)."""
    return name is None or not name.startswith(SEARCH_SCHEMA)


class StoredImage(Base):
    """A picture kept by the bot (``[history] store_images``), shrunk as the model saw it,
    by the hash of what the person sent; deleted with the last message naming it."""

    __tablename__ = "stored_images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    mime: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Summary(Base):
    """A conversation's rolling summary of the turns that left the window (through
    message ``covers_through``), and how far facts about people were taken from it."""

    __tablename__ = "summaries"

    conversation_id: Mapped[int] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text, default="")
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    covers_through: Mapped[int] = mapped_column(Integer, default=0)
    facts_through: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column()


class PersonFact(Base):
    """One short fact the bot keeps about a person, for one persona; ``private`` when it
    was learned in a DM (kept out of groups unless ``share_dm_memory``)."""

    __tablename__ = "person_facts"
    __table_args__ = (Index("ix_person_facts_person_persona", "person", "persona"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person: Mapped[str] = mapped_column(String(64))  # platform:user_id
    persona: Mapped[str] = mapped_column(String(128))
    text: Mapped[str] = mapped_column(Text)
    private: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))  # tool | idle
    created_at: Mapped[datetime] = mapped_column()


class MessageEmbedding(Base):
    """A message's embedding (float32s) by ``[memory] embed_model``, for ``recall``;
    deleted with its message."""

    __tablename__ = "message_embeddings"

    message_id: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[int] = mapped_column(Integer, index=True)
    model: Mapped[str] = mapped_column(String(255))
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class AuditEntry(Base):
    """One change made from the admin page or by an admin command: who, when, what, and
    for bot.toml the diff."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column()
    who: Mapped[str] = mapped_column(String(255))
    what: Mapped[str] = mapped_column(Text)
    diff: Mapped[str] = mapped_column(Text, default="")


class StateEntry(Base):
    """A small value the bot keeps across restarts (e.g. the hash of the slash commands
    registered with Discord, so they are synced only when they changed)."""

    __tablename__ = "bot_state"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InboxEntry(Base):
    """A platform message taken in but not handled yet.

    Adapters confirm a message to the platform only once it is here; it leaves when it
    was handled, so messages the bot stopped before are handled at the next start.
    """

    __tablename__ = "inbox"
    __table_args__ = (UniqueConstraint("conversation_key", "platform_message_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    conversation_key: Mapped[str] = mapped_column(String(255))
    platform_message_id: Mapped[str | None] = mapped_column(String(64))
    inbound: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column()


class SchedulerJob(Base):
    """A stored job of the scheduler, in the layout APScheduler's SQLAlchemyJobStore expects.

    Only ``llamabot.scheduler`` (through APScheduler) reads and writes it; it is declared
    here so that migrations create it and the schema check covers it.
    """

    __tablename__ = "apscheduler_jobs"

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)
