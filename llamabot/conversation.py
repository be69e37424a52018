"""One reply: persona + history window + model stream -> reply stream -> store."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from llamabot.adapters.base import Adapter
from llamabot.config import Config, Resolved
from llamabot.events import ChannelRef, Inbound
from llamabot.llm.base import ChatMessage, ChatModel
from llamabot.llm.errors import ModelError
from llamabot.storage.history import HistoryStore, NewMessage, Turn
from llamabot.streaming import ReplyStream

log = logging.getLogger(__name__)

# Room kept for the answer when the persona does not set num_predict.
DEFAULT_ANSWER_TOKENS = 512
EMPTY_REPLY = "The model gave an empty answer. Try rephrasing your message."


def speaker_line(name: str | None, text: str) -> str:
    """How a person's turn reaches the model in a group: prefixed with their name."""
    return f"{name}: {text}" if name else text


class Conversation:
    """Answers one message with the channel's persona and stores both turns.

    The person's message is stored before the model runs, so it is kept even when the
    reply fails; a reply that failed or was cut off is stored with its status and never
    enters a later history window.
    """

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        model: ChatModel,
        store: HistoryStore,
        limiter: asyncio.Semaphore,
    ) -> None:
        self._config = config
        self._model = model
        self._store = store
        self._limiter = limiter

    async def respond(self, inbound: Inbound, adapter: Adapter, resolved: Resolved) -> str | None:
        """Stream an answer to ``inbound`` into its channel; returns the stored reply text."""
        config = self._config()
        persona = resolved.persona
        channel = inbound.channel
        speaker = None if channel.is_private else inbound.author.name
        conversation_id = await self._store.conversation_id(channel)
        budget = await self._token_budget(resolved, config)
        turns = await self._store.append_and_window(
            conversation_id,
            NewMessage(
                role="user",
                content=inbound.text,
                tokens=self._model.count_tokens(speaker_line(speaker, inbound.text)),
                author_id=inbound.author.qualified_id(channel.platform),
                author_name=inbound.author.name,
                persona=resolved.name,
                platform_message_id=inbound.message_id,
            ),
            config.history.max_messages,
            budget,
        )
        if turns is None:
            log.info(
                "message %s in %s was taken before; not answering it again",
                inbound.message_id,
                channel.key,
            )
            return None
        messages = [ChatMessage("system", persona.prompt), *self._as_messages(turns, channel)]

        reply = ReplyStream(adapter, channel, inbound.message_id)
        reply.start()
        started = time.monotonic()
        status, notice = "ok", ""
        try:
            async with self._limiter:
                async for delta in self._model.stream_chat(
                    persona.model, messages, persona.options()
                ):
                    reply.feed(delta)
        except ModelError as exc:
            log.warning("reply in %s failed: %s", channel.key, exc)
            status = "interrupted" if reply.text.strip() else "failed"
            notice = exc.user_message
        except asyncio.CancelledError:
            await reply.cancel()
            await self._store_reply(conversation_id, resolved, reply.text, "interrupted", None, 0)
            raise
        answer = reply.text
        if status == "ok" and not answer.strip():
            status, notice = "failed", EMPTY_REPLY
        if notice and answer.strip():
            notice = f"\n\n[interrupted: {notice}]"
        await reply.finish(notice)
        if reply.delivery_failed is not None and status == "ok":
            status = "undelivered"
        elapsed_ms = int((time.monotonic() - started) * 1000)
        first_id = reply.messages[0].message_id if reply.messages else None
        await self._store_reply(conversation_id, resolved, answer, status, first_id, elapsed_ms)
        return answer if status == "ok" else None

    async def _store_reply(
        self,
        conversation_id: int,
        resolved: Resolved,
        text: str,
        status: str,
        message_id: str | None,
        reply_ms: int,
    ) -> None:
        if not text.strip() and status != "ok":
            return  # nothing was said; the person's message alone records the attempt
        await self._store.append(
            conversation_id,
            NewMessage(
                role="assistant",
                content=text,
                tokens=self._model.count_tokens(text),
                persona=resolved.name,
                model=resolved.persona.model,
                status=status,
                platform_message_id=message_id,
                reply_ms=reply_ms,
            ),
        )

    async def _token_budget(self, resolved: Resolved, config: Config) -> int:
        """History tokens: ``[history] max_tokens``, and what the model's context leaves."""
        persona = resolved.persona
        system_tokens = self._model.count_tokens(persona.prompt)
        budget = config.history.max_tokens - system_tokens
        context = persona.num_ctx or await self._model.context_length(persona.model)
        if context:
            answer = persona.num_predict if persona.num_predict and persona.num_predict > 0 else 0
            answer = answer or min(DEFAULT_ANSWER_TOKENS, context // 4)
            budget = min(budget, context - system_tokens - answer)
        return max(budget, 1)

    @staticmethod
    def _as_messages(turns: list[Turn], channel: ChannelRef) -> list[ChatMessage]:
        private = channel.is_private
        messages: list[ChatMessage] = []
        for turn in turns:
            if turn.role == "user":
                name = None if private else turn.author_name
                messages.append(ChatMessage("user", speaker_line(name, turn.content)))
            elif turn.role == "assistant":
                messages.append(ChatMessage("assistant", turn.content))
        return messages
