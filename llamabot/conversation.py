"""One reply: persona + history window + model stream -> reply stream -> store."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from llamabot.adapters.base import Adapter
from llamabot.config import Config, Resolved
from llamabot.events import Inbound
from llamabot.llm.base import ChatModel
from llamabot.llm.errors import ModelError, ReplyCut
from llamabot.metrics import Metrics
from llamabot.storage.history import HistoryStore, NewMessage
from llamabot.streaming import RESTART_NOTICE, STOPPED_NOTICE, ReplyStream, send_text
from llamabot.window import build_window, speaker_line

log = logging.getLogger(__name__)

# Room kept for the answer when the persona does not set num_predict.
DEFAULT_ANSWER_TOKENS = 512
EMPTY_REPLY = "The model gave an empty answer. Try rephrasing your message."
# For failures nobody foresaw (a malformed server answer, a bug): the log has the traceback.
UNEXPECTED_FAILURE = "Something went wrong while answering; the bot's admin can see why in the log."


class UnexpectedFailure(ModelError):
    """A reply ended by an exception nobody foresaw (a malformed server answer, a bug)."""

    user_message = UNEXPECTED_FAILURE
    partial_status = "failed"


def _ended_early(error: ModelError, text: str) -> tuple[str, str]:
    """The stored status and the closing notice of a reply that ``error`` ended."""
    if text.strip():
        return error.partial_status, error.marker()
    return "failed", error.user_message


STORE_FAILURE = (
    "I can't save messages right now, so I haven't answered; please try again later. "
    "The bot's admin can see why in the log (a full disk, perhaps)."
)


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
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._model = model
        self._store = store
        self._limiter = limiter
        self._metrics = metrics or Metrics("")

    async def respond(self, inbound: Inbound, adapter: Adapter, resolved: Resolved) -> str | None:
        """Stream an answer to ``inbound`` into its channel; returns the stored reply text."""
        config = self._config()
        persona = resolved.persona
        channel = inbound.channel
        speaker = None if channel.is_private else inbound.author.name
        budget = await self._token_budget(resolved, config)
        try:
            conversation_id = await self._store.conversation_id(channel)
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
        except Exception:
            # Answering without storing would fork what the person saw from the history.
            log.exception("could not store a message in %s; not answering it", channel.key)
            await send_text(adapter, channel, STORE_FAILURE, inbound.message_id)
            return None
        if turns is None:
            log.info(
                "message %s in %s was taken before; not answering it again",
                inbound.message_id,
                channel.key,
            )
            return None
        messages = build_window(persona.prompt, turns, private=channel.is_private)

        reply = ReplyStream(adapter, channel, inbound.message_id)
        reply.start()
        started = time.monotonic()
        asked: float | None = None  # when the model had a free slot and was asked
        first: float | None = None
        status, notice = "ok", ""
        try:
            async with self._limiter:
                asked = time.monotonic()
                stream = self._model.stream_chat(persona.model, messages, persona.options())
                async with contextlib.aclosing(stream):  # type: ignore[type-var]
                    async for delta in stream:
                        if first is None:
                            first = time.monotonic()
                        reply.feed(delta)
        except ModelError as exc:
            level = logging.INFO if isinstance(exc, ReplyCut) else logging.WARNING
            log.log(level, "reply in %s ended early: %s", channel.key, exc)
            status, notice = _ended_early(exc, reply.text)
        except asyncio.CancelledError as exc:
            await reply.cancel(STOPPED_NOTICE if exc.args == (STOPPED_NOTICE,) else RESTART_NOTICE)
            await self._store_reply(conversation_id, resolved, reply.text, "interrupted", None, 0)
            raise
        except Exception as exc:
            log.exception("reply in %s failed unexpectedly", channel.key)
            status, notice = _ended_early(UnexpectedFailure(repr(exc)), reply.text)
        answer = reply.text
        if status == "ok" and not answer.strip():
            status, notice = "failed", EMPTY_REPLY
        await reply.finish(notice)
        if reply.delivery_failed is not None and status == "ok":
            status = "undelivered"
        done = time.monotonic()
        elapsed_ms = int((done - started) * 1000)
        first_id = reply.messages[0].message_id if reply.messages else None
        tokens = await self._store_reply(
            conversation_id, resolved, answer, status, first_id, elapsed_ms
        )
        if self._metrics.enabled and asked is not None:
            self._metrics.replied(
                channel.platform,
                self._model.name,
                status,
                sends=len(reply.messages),
                edits=reply.edits,
                first_token_s=None if first is None else first - asked,
                total_s=done - asked,
                tokens=tokens,
            )
        return answer if status == "ok" else None

    async def _store_reply(
        self,
        conversation_id: int,
        resolved: Resolved,
        text: str,
        status: str,
        message_id: str | None,
        reply_ms: int,
    ) -> int:
        """Store the reply; returns its length in tokens."""
        if not text.strip() and status != "ok":
            return 0  # nothing was said; the person's message alone records the attempt
        tokens = self._model.count_tokens(text)
        await self._store.append(
            conversation_id,
            NewMessage(
                role="assistant",
                content=text,
                tokens=tokens,
                persona=resolved.name,
                model=self._model.served_model(resolved.persona.model),
                status=status,
                platform_message_id=message_id,
                reply_ms=reply_ms,
            ),
        )
        return tokens

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
