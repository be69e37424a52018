"""Recall by meaning: messages embedded in the background, found by cosine similarity.

With ``[memory] embed_model`` set, memory's background queue embeds a conversation's new
messages after each reply (Ollama's ``/api/embed``), and the ``recall`` tool embeds the
question and scans that conversation's vectors. A plain scan, on SQLite and PostgreSQL
alike: one conversation holds thousands of messages, not millions, so no vector
extension is needed. Vectors are stored normalised, as float32, and go with their
message (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import array
import heapq
import math
import operator
from collections.abc import Sequence

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from llamabot.storage.history import FoundMessage, found_messages
from llamabot.storage.models import Message, MessageEmbedding

# Messages embedded per request to the embedding model.
BATCH = 32


def pack(vector: Sequence[float]) -> bytes:
    """A vector, normalised to length 1, as float32 bytes."""
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return array.array("f", (x / norm for x in vector)).tobytes()


def unpack(data: bytes) -> array.array[float]:
    vector = array.array("f")
    vector.frombytes(data)
    return vector


class Embedder:
    """Asks an Ollama server for embeddings."""

    def __init__(self, host: str, model: str) -> None:
        import ollama

        self.model = model
        self._client = ollama.AsyncClient(host=host, timeout=60)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        answer = await self._client.embed(model=self.model, input=texts)
        return [list(vector) for vector in answer.embeddings]


class RecallIndex:
    """The stored embeddings of messages, by conversation."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def unembedded(
        self, conversation_id: int, model: str, limit: int
    ) -> list[tuple[int, str]]:
        """Complete messages of the conversation without an embedding by ``model``."""
        done = select(MessageEmbedding.message_id).where(
            MessageEmbedding.conversation_id == conversation_id, MessageEmbedding.model == model
        )
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(Message.id, Message.content)
                .where(
                    Message.conversation_id == conversation_id,
                    Message.status == "ok",
                    Message.role.in_(("user", "assistant")),
                    Message.content != "",
                    Message.id.not_in(done),
                )
                .order_by(Message.id)
                .limit(limit)
            )
            return [(int(row[0]), str(row[1])) for row in rows]

    async def add(
        self, conversation_id: int, model: str, vectors: Sequence[tuple[int, Sequence[float]]]
    ) -> None:
        rows = [
            {
                "message_id": message_id,
                "conversation_id": conversation_id,
                "model": model,
                "vector": pack(vector),
            }
            for message_id, vector in vectors
        ]
        if not rows:
            return
        async with self.engine.begin() as conn:
            # A message deleted meanwhile (the person asked to be forgotten) is skipped.
            alive = set(
                (
                    await conn.execute(
                        select(Message.id).where(Message.id.in_([r["message_id"] for r in rows]))
                    )
                ).scalars()
            )
            kept = [row for row in rows if row["message_id"] in alive]
            if kept:
                await conn.execute(insert(MessageEmbedding), kept)

    async def nearest(
        self, conversation_id: int, model: str, query: Sequence[float], limit: int
    ) -> list[FoundMessage]:
        """The conversation's messages closest in meaning to ``query``, best first."""
        wanted = unpack(pack(query))
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(MessageEmbedding.message_id, MessageEmbedding.vector).where(
                    MessageEmbedding.conversation_id == conversation_id,
                    MessageEmbedding.model == model,
                )
            )
            scored = [
                (sum(map(operator.mul, wanted, unpack(vector))), int(message_id))
                for message_id, vector in rows
                if len(vector) == len(wanted) * 4
            ]
            best = heapq.nlargest(limit, scored)
            if not best:
                return []
            return await found_messages(conn, [message_id for _, message_id in best])
