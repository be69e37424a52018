"""One reply: persona + history window + model stream -> reply stream -> store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence

from llamabot.adapters.base import Adapter
from llamabot.config import Config, Resolved
from llamabot.events import ImageRef, Inbound
from llamabot.images import ImageRejected, PreparedImage, prepare
from llamabot.llm.base import ChatMessage, ChatModel, ToolCall
from llamabot.llm.errors import ModelError, ReplyCut
from llamabot.memory import NOTHING, Memory, WindowMemory
from llamabot.metrics import Metrics
from llamabot.storage.history import HistoryStore, NewMessage, Turn
from llamabot.streaming import RESTART_NOTICE, STOPPED_NOTICE, ReplyStream, send_text
from llamabot.tools import ToolResult, TurnTools, describe_call
from llamabot.window import ShownTurns, build_window, calls_to_store, speaker_line

log = logging.getLogger(__name__)


def _image_refs(inbound: Inbound, pictures: list[PreparedImage]) -> str | None:
    """The pictures as the history keeps them: references, never the bytes."""
    if not pictures:
        return None
    return json.dumps(
        [
            {"source": ref.source, "mime": ref.mime, "sha256": picture.sha256}
            for ref, picture in zip(inbound.images, pictures, strict=True)
        ]
    )


# Makes the tools one reply may call (see PluginContexts.tools_for).
ToolsFor = Callable[[Inbound, Adapter, Resolved], TurnTools]

# Persona prompts whose token count is kept (a reload may bring new ones).
MAX_PROMPTS_COUNTED = 256
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
        tools: ToolsFor | None = None,
        memory: Memory | None = None,
    ) -> None:
        self._config = config
        self._model = model
        self._store = store
        self._limiter = limiter
        self._metrics = metrics or Metrics("")
        self._tools = tools
        self._memory = memory
        self._shown: ShownTurns = {}  # what the last windows made of their turns
        self._prompt_tokens: dict[str, int] = {}  # persona prompt -> its tokens

    async def respond(self, inbound: Inbound, adapter: Adapter, resolved: Resolved) -> str | None:
        """Stream an answer to ``inbound`` into its channel; returns the stored reply text."""
        config = self._config()
        persona = resolved.persona
        channel = inbound.channel
        speaker = None if channel.is_private else inbound.author.name
        budget = await self._token_budget(resolved, config)
        pictures: list[PreparedImage] = []
        if inbound.images:
            try:
                pictures = await self._pictures(inbound, adapter, resolved, config)
            except ImageRejected as exc:
                await send_text(adapter, channel, exc.user_message, inbound.message_id)
                return None
        try:
            conversation_id = await self._store.conversation_id(channel, inbound.chat_title)
            remembered = await self._remembered(conversation_id, resolved, inbound)
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
                    images=_image_refs(inbound, pictures),
                ),
                config.history.max_messages,
                max(budget - remembered.tokens, 1),
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
        tools = await self._tools_for(inbound, adapter, resolved)
        seen = await self._seen_pictures(turns, pictures, adapter, resolved, config)
        messages = build_window(
            persona.prompt + remembered.text,
            turns,
            private=channel.is_private,
            tools=tools is not None,
            pictures=seen,
            memo=self._shown,
        )

        reply = ReplyStream(adapter, channel, inbound.message_id)
        reply.start()
        started = time.monotonic()
        asked: float | None = None  # when the model had a free slot and was asked
        first: float | None = None
        status, notice = "ok", ""
        said: list[str] = []  # the model's own text (kept tool lines are not)
        tool_turns: list[NewMessage] = []
        try:
            rounds = 0
            while True:
                offered = (
                    tools.specs if tools is not None and rounds < config.tools.max_rounds else []
                )
                calls: list[ToolCall] = []
                start = len(said)
                async with self._limiter, self._writing():
                    asked = asked or time.monotonic()
                    # Without tools, the call a ChatModel written before tools knows.
                    stream = (
                        self._model.stream_chat(
                            persona.model, messages, persona.options(), tools=offered
                        )
                        if offered
                        else self._model.stream_chat(persona.model, messages, persona.options())
                    )
                    async with contextlib.aclosing(stream):  # type: ignore[type-var]
                        async for delta in stream:
                            if isinstance(delta, str):
                                if first is None:
                                    first = time.monotonic()
                                said.append(delta)
                                reply.feed(delta)
                            elif offered:
                                calls.append(delta)
                if not calls or tools is None:
                    break
                rounds += 1
                text = "".join(said[start:])
                messages.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
                tool_turns.append(self._calls_turn(resolved, text, calls))
                for call in calls:
                    result = await self._run_call(tools, call, reply, config.tools.show_calls)
                    shown = await self._tool_pictures(result.images, persona.model, config)
                    messages.append(
                        ChatMessage(
                            "tool",
                            result.text,
                            tool_name=call.name,
                            tool_call_id=call.id,
                            images=shown,
                        )
                    )
                    tool_turns.append(self._result_turn(resolved, call, result.text))
        except ModelError as exc:
            level = logging.INFO if isinstance(exc, ReplyCut) else logging.WARNING
            log.log(level, "reply in %s ended early: %s", channel.key, exc)
            status, notice = _ended_early(exc, reply.text)
        except asyncio.CancelledError as exc:
            await reply.cancel(STOPPED_NOTICE if exc.args == (STOPPED_NOTICE,) else RESTART_NOTICE)
            await self._store_reply(
                conversation_id, resolved, reply.text, "interrupted", None, 0, tool_turns
            )
            raise
        except Exception as exc:
            log.exception("reply in %s failed unexpectedly", channel.key)
            status, notice = _ended_early(UnexpectedFailure(repr(exc)), reply.text)
        answer = "".join(said)
        if status == "ok" and not answer.strip():
            status, notice = "failed", EMPTY_REPLY
        await reply.finish(notice)
        if reply.delivery_failed is not None and status == "ok":
            status = "undelivered"
        done = time.monotonic()
        elapsed_ms = int((done - started) * 1000)
        first_id = reply.messages[0].message_id if reply.messages else None
        tokens = await self._store_reply(
            conversation_id, resolved, answer, status, first_id, elapsed_ms, tool_turns
        )
        if self._memory is not None and status == "ok":
            try:
                window_start = turns[0].id if turns else 0
                await self._memory.after_reply(conversation_id, resolved, inbound, window_start)
            except Exception:  # memory is a help, never a reason for a reply to fail
                log.exception("memory: could not queue the work after a reply")
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

    async def _pictures(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved, config: Config
    ) -> list[PreparedImage]:
        """The message's pictures, fetched and prepared for the model; ImageRejected
        (with the line to tell the person) when the model cannot see them or one fails."""
        persona, limits = resolved.persona, resolved.limits
        if not await self._model.supports_vision(persona.model):
            raise ImageRejected(
                f"This persona's model ({self._model.served_model(persona.model)}) cannot see "
                "images; an admin can give it a vision model such as llama3.2-vision."
            )
        if len(inbound.images) > limits.max_images_per_message:
            most = limits.max_images_per_message
            raise ImageRejected(
                f"Please send at most {most} {'image' if most == 1 else 'images'} in one message."
            )
        return [await self._fetch(image, adapter, resolved, config) for image in inbound.images]

    async def _fetch(
        self, image: ImageRef, adapter: Adapter, resolved: Resolved, config: Config
    ) -> PreparedImage:
        """One picture from the platform, prepared for the model; ImageRejected if not."""
        try:
            async with asyncio.timeout(config.llm.image_fetch_timeout_s):
                data = await adapter.fetch_image(image, resolved.limits.max_image_bytes)
        except TimeoutError:
            raise ImageRejected(
                "Fetching that image took too long; please send it again."
            ) from None
        return await asyncio.to_thread(prepare, data, config.llm.image_max_side)

    async def _seen_pictures(
        self,
        turns: list[Turn],
        current: list[PreparedImage],
        adapter: Adapter,
        resolved: Resolved,
        config: Config,
    ) -> dict[int, tuple[bytes, ...]]:
        """The pictures the model sees, by turn: those of the newest ``[history]
        image_turns`` turns (this message's as prepared; older ones kept by the bot or
        fetched again, and left to their note when that fails)."""
        newest = max(len(turns) - config.history.image_turns, 0)
        chosen = [
            i for i in range(newest, len(turns)) if turns[i].role == "user" and turns[i].images
        ]
        seen: dict[int, tuple[bytes, ...]] = {}
        if current and chosen and chosen[-1] == len(turns) - 1:
            seen[chosen.pop()] = tuple(p.data for p in current)
            if config.history.store_images:
                await self._keep(current)
        if not chosen or not await self._model.supports_vision(resolved.persona.model):
            return seen
        for index in chosen:
            found = []
            for ref in json.loads(turns[index].images or "[]"):
                data = await self._picture_again(ref, adapter, resolved, config)
                if data is not None:
                    found.append(data)
            if found:
                seen[index] = tuple(found)
        return seen

    async def _picture_again(
        self, ref: dict[str, str], adapter: Adapter, resolved: Resolved, config: Config
    ) -> bytes | None:
        """An earlier picture: kept by the bot, or fetched from the platform again."""
        if config.history.store_images:
            kept = await self._store.kept_image(ref["sha256"])
            if kept is not None:
                return kept
        image = ImageRef(ref["source"], ref.get("mime"))
        try:
            return (await self._fetch(image, adapter, resolved, config)).data
        except ImageRejected as exc:  # an expired link, a deleted file: the note stays
            log.info("an earlier picture is not shown again: %s", exc.user_message)
            return None

    async def _keep(self, pictures: list[PreparedImage]) -> None:
        try:
            for picture in pictures:
                await self._store.keep_image(picture.sha256, picture.mime, picture.data)
        except Exception:  # the reply matters more than keeping the picture
            log.exception("could not keep a picture ([history] store_images)")

    async def _remembered(
        self, conversation_id: int, resolved: Resolved, inbound: Inbound
    ) -> WindowMemory:
        """What memory adds after the persona prompt; nothing if it cannot be read."""
        if self._memory is None:
            return NOTHING
        try:
            return await self._memory.for_window(conversation_id, resolved, inbound)
        except Exception:
            log.exception("memory: could not read the summary and facts; answering without")
            return NOTHING

    def _writing(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around a model call for a reply: memory's background work waits."""
        if self._memory is None:
            return contextlib.nullcontext()
        return self._memory.replying()

    async def _tools_for(
        self, inbound: Inbound, adapter: Adapter, resolved: Resolved
    ) -> TurnTools | None:
        """The tools this reply may offer the model: none when the persona lists none,
        none of them exists for this person, or the model cannot call tools."""
        if self._tools is None or not (resolved.persona.tools or resolved.keeps_facts):
            return None
        tools = self._tools(inbound, adapter, resolved)
        if not tools.tools:
            return None
        try:
            able = await self._model.supports_tools(resolved.persona.model)
        except Exception as exc:  # cannot tell: answer without tools rather than not at all
            log.warning("could not learn whether %s calls tools: %s", resolved.persona.model, exc)
            able = False
        return dataclasses.replace(tools, observe=self._metrics.tool_called) if able else None

    async def _tool_pictures(
        self, images: tuple[bytes, ...], model: str, config: Config
    ) -> tuple[bytes, ...]:
        """A tool's pictures as a vision model sees a person's (shrunk to
        ``[llm] image_max_side``); none for other models, which read the text alone."""
        if not images:
            return ()
        try:
            if not await self._model.supports_vision(model):
                return ()
        except Exception:
            return ()
        shown = []
        for data in images[: config.limits.max_images_per_message]:
            try:
                shown.append(
                    (await asyncio.to_thread(prepare, data, config.llm.image_max_side)).data
                )
            except ImageRejected:
                log.info("a tool's picture could not be read; the model reads its text only")
        return tuple(shown)

    async def _run_call(
        self, tools: TurnTools, call: ToolCall, reply: ReplyStream, show: str
    ) -> ToolResult:
        """Run one tool call, showing a line for it as ``[tools] show_calls`` says."""
        line = describe_call(call.name, call.arguments)
        if show == "keep":
            reply.feed(("\n" if reply.text and not reply.text.endswith("\n") else "") + line + "\n")
        elif show == "while_running":
            reply.set_status(line)
        try:
            return await tools.call(call.name, call.arguments)
        finally:
            reply.set_status(None)

    def _calls_turn(self, resolved: Resolved, text: str, calls: list[ToolCall]) -> NewMessage:
        stored = calls_to_store(calls)
        return NewMessage(
            role="assistant",
            content=text,
            tokens=self._model.count_tokens(text + stored),
            persona=resolved.name,
            model=self._model.served_model(resolved.persona.model),
            tool_calls=stored,
        )

    def _result_turn(self, resolved: Resolved, call: ToolCall, result: str) -> NewMessage:
        return NewMessage(
            role="tool",
            content=result,
            tokens=self._model.count_tokens(result),
            persona=resolved.name,
            tool_name=call.name,
            tool_call_id=call.id,
        )

    async def _store_reply(
        self,
        conversation_id: int,
        resolved: Resolved,
        text: str,
        status: str,
        message_id: str | None,
        reply_ms: int,
        tool_turns: Sequence[NewMessage] = (),
    ) -> int:
        """Store the reply, after the tool calls and results that led to it (with its
        status: a failed reply's tool turns never enter a window); returns its tokens."""
        before = [dataclasses.replace(turn, status=status) for turn in tool_turns]
        if not text.strip() and status != "ok":
            if before:
                await self._store.append(conversation_id, *before)
            return 0  # nothing was said; the person's message alone records the attempt
        tokens = self._model.count_tokens(text)
        await self._store.append(
            conversation_id,
            *before,
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
        system_tokens = self._prompt_tokens.get(persona.prompt)
        if system_tokens is None:  # once per prompt: the embedded model's tokenizer is real work
            if len(self._prompt_tokens) > MAX_PROMPTS_COUNTED:
                self._prompt_tokens.clear()  # prompts edited again and again: start over
            system_tokens = self._prompt_tokens[persona.prompt] = self._model.count_tokens(
                persona.prompt
            )
        budget = config.history.max_tokens - system_tokens
        context = persona.num_ctx or await self._model.context_length(persona.model)
        if context:
            answer = persona.num_predict if persona.num_predict and persona.num_predict > 0 else 0
            answer = answer or min(DEFAULT_ANSWER_TOKENS, context // 4)
            budget = min(budget, context - system_tokens - answer)
        return max(budget, 1)
