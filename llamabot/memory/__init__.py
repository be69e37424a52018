"""Memory: what keeps a long conversation coherent on a model with a small context.

Memory is part of building the window, not a second history: :meth:`Memory.for_window`
gives the text placed after the persona prompt (the facts kept about the person
speaking, then the rolling summary of the turns that left the window) and its tokens,
which the window leaves room for. Making summaries and taking facts from idle
conversations is background work (:meth:`Memory.after_reply` queues it): one job at a
time, only while no reply is being written, and a reply that starts cancels the job
running (it is queued again), so a person never waits on memory. A failed or slow job
leaves what was kept before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from llamabot.durations import seconds
from llamabot.llm.base import ChatMessage, ChatModel, GenerationOptions
from llamabot.memory.prompts import facts_request, memory_text, parse_facts, summary_request
from llamabot.memory.recall import BATCH, Embedder, RecallIndex
from llamabot.memory.store import Fact, MemoryStore, OldTurn

if TYPE_CHECKING:
    from llamabot.config import Config, Persona, Resolved
    from llamabot.events import Inbound
    from llamabot.storage.history import FoundMessage

log = logging.getLogger(__name__)

# Summaries are on by default for models whose context is under this many tokens.
SMALL_CONTEXT = 16_000
# Turns that left the window are folded into the summary once they add up to this many
# tokens (fewer model calls: one per few turns, not one per turn), and at most
# FOLD_TOKENS in one call.
FOLD_MIN_TOKENS = 300
FOLD_TOKENS = 1_500
SUMMARY_OPTIONS = GenerationOptions(temperature=0.2, num_predict=320)
FACTS_OPTIONS = GenerationOptions(temperature=0.0, num_predict=200)
# A background job running longer is given up (what was kept before stays).
JOB_TIMEOUT_S = 300.0

__all__ = ["NOTHING", "Fact", "Memory", "MemoryStore", "WindowMemory"]


@dataclass(frozen=True)
class WindowMemory:
    """What memory adds to a reply's window: text after the persona prompt, its tokens."""

    text: str = ""
    tokens: int = 0


NOTHING = WindowMemory()


@dataclass(frozen=True)
class Job:
    """One piece of background work: a conversation's ``summary``, the ``facts`` of its
    people once it has been idle, or embedding its new messages (``embed``)."""

    kind: Literal["summary", "facts", "embed"]
    conversation_id: int
    persona: str
    private: bool = False


class Memory:
    """Summaries and facts for the reply loop, and the background queue that makes them."""

    def __init__(self, store: MemoryStore, model: ChatModel, config: Callable[[], Config]):
        self.store = store
        self.index = RecallIndex(store.engine)
        self._model = model
        self._config = config
        self._embedder: Embedder | None = None
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._queued: set[Job] = set()
        self._replying = 0
        self._quiet = asyncio.Event()  # set while no reply is being written
        self._quiet.set()
        self._running: tuple[Job, asyncio.Task[None]] | None = None
        self._current: Job | None = None  # taken from the queue, waiting or running
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._windows: dict[int, int] = {}  # conversation -> its window's oldest message
        self._worker: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self.jobs_done = 0  # background jobs finished (for tests and the benchmark)
        self._done = asyncio.Condition()

    # -- lifespan ----------------------------------------------------------------------

    def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="memory")
        self._catching_up = asyncio.create_task(self._catch_up(), name="memory catch-up")

    async def _catch_up(self) -> None:
        """Idle timers live in memory: at start, set them again (or queue the work at
        once) for the conversations whose facts were not taken before the stop."""
        from llamabot.events import ChannelRef

        config = self._config()
        if not any(p.memory.facts for p in config.personas.values()):
            return
        try:
            waiting = await self.store.waiting_for_facts()
        except Exception:
            log.exception("memory: could not find the conversations waiting for facts")
            return
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC).replace(tzinfo=None)
        for found in waiting:
            channel = ChannelRef(
                found.platform, found.chat_id, found.thread_id, is_private=found.is_private
            )
            resolved = config.persona_for(channel)
            if not resolved.keeps_facts or found.conversation_id in self._timers:
                continue
            job = Job("facts", found.conversation_id, resolved.name, found.is_private)
            idle = seconds(resolved.persona.memory.idle_after)
            waited = (now - found.said_at).total_seconds() if found.said_at else idle
            if waited >= idle:
                self._enqueue(job)
            else:
                self._timers[found.conversation_id] = loop.call_later(
                    idle - waited, self._enqueue, job
                )

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        running = [self._running[1]] if self._running is not None else []
        if self._catching_up is not None:
            running.append(self._catching_up)
        if self._worker is not None:
            running.append(self._worker)
            self._worker = None
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    # -- what a reply asks -------------------------------------------------------------

    async def summaries_on(self, resolved: Resolved) -> bool:
        """Whether this persona keeps rolling summaries here."""
        if not resolved.memory:
            return False
        persona = resolved.persona
        if persona.memory.summaries is not None:
            return persona.memory.summaries
        context = persona.num_ctx or await self._model.context_length(persona.model)
        return context is not None and 0 < context < SMALL_CONTEXT

    async def for_window(
        self, conversation_id: int, resolved: Resolved, inbound: Inbound
    ) -> WindowMemory:
        """The facts about the person speaking and the conversation's summary, as the
        text after the persona prompt (nothing when memory is off here)."""
        summary = ""
        if await self.summaries_on(resolved):
            summary = (await self.store.summary(conversation_id)).text
        facts: list[Fact] = []
        if resolved.keeps_facts:
            person = inbound.author.qualified_id(inbound.channel.platform)
            facts = self.usable(await self.store.facts(person), resolved, inbound)
        if not summary and not facts:
            return NOTHING
        text = "\n\n" + memory_text(summary, facts, inbound.author.name)
        return WindowMemory(text, self._model.count_tokens(text))

    @staticmethod
    def usable(facts: list[Fact], resolved: Resolved, inbound: Inbound) -> list[Fact]:
        """The facts this persona may use here: its own, and in a group only those not
        learned in a DM (unless ``share_dm_memory``)."""
        shared = inbound.channel.is_private or resolved.persona.memory.share_dm_memory
        return [f for f in facts if f.persona == resolved.name and (shared or not f.private)]

    def replying(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Around a reply's model call: background jobs wait, and the one running is
        cancelled (and queued again)."""
        return _Replying(self)

    def _reply_began(self) -> None:
        self._replying += 1
        self._quiet.clear()
        if self._running is not None:
            _, task = self._running
            if not task.done():
                task.cancel()

    def _reply_ended(self) -> None:
        self._replying -= 1
        if not self._replying:
            self._quiet.set()

    async def after_reply(
        self, conversation_id: int, resolved: Resolved, inbound: Inbound, window_start: int
    ) -> None:
        """Queue the background work a stored reply calls for. ``window_start``: the id
        of the oldest message the reply's window held (older ones left it)."""
        if await self.summaries_on(resolved):
            known = self._windows.get(conversation_id, 0)
            self._windows[conversation_id] = max(known, window_start)
            self._enqueue(Job("summary", conversation_id, resolved.name))
        if resolved.memory and self._config().memory.embed_model:
            self._enqueue(Job("embed", conversation_id, resolved.name))
        if resolved.keeps_facts:
            old = self._timers.pop(conversation_id, None)
            if old is not None:
                old.cancel()
            idle = seconds(resolved.persona.memory.idle_after)
            job = Job("facts", conversation_id, resolved.name, inbound.channel.is_private)
            self._timers[conversation_id] = asyncio.get_running_loop().call_later(
                idle, self._enqueue, job
            )

    async def remember(self, person: str, resolved: Resolved, text: str, *, private: bool) -> bool:
        """Keep a fact the model was told (the ``remember`` tool); False if known."""
        return await self.store.add_fact(
            person,
            resolved.name,
            text.strip(),
            private=private,
            source="tool",
            keep=resolved.persona.memory.max_facts,
        )

    async def settled(self) -> None:
        """Wait until no background job is queued or running (idle timers aside)."""
        async with self._done:
            await self._done.wait_for(lambda: not self._queued and self._current is None)

    async def recall(
        self, conversation_id: int, query: str, limit: int
    ) -> list[FoundMessage] | None:
        """The conversation's messages closest in meaning to ``query`` (None when no
        ``[memory] embed_model`` is set)."""
        embedder = self._embedder_now()
        if embedder is None:
            return None
        [vector] = await embedder.embed([query])
        return await self.index.nearest(conversation_id, embedder.model, vector, limit)

    def _embedder_now(self) -> Embedder | None:
        section = self._config().memory
        if not section.embed_model:
            return None
        host = section.embed_host or self._config().llm.ollama.all_hosts[0]
        embedder = self._embedder
        if embedder is None or embedder.model != section.embed_model:
            embedder = self._embedder = Embedder(host, section.embed_model)
        return embedder

    # -- the background queue ----------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        if job.kind == "facts":
            self._timers.pop(job.conversation_id, None)
        if job not in self._queued:
            self._queued.add(job)
            self._jobs.put_nowait(job)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            self._queued.discard(job)
            self._current = job
            while self._replying:
                await self._quiet.wait()
            task = asyncio.create_task(self._run(job))
            self._running = (job, task)
            try:
                await asyncio.wait({task})
            finally:
                self._running = None
            if task.cancelled():
                self._enqueue(job)  # a reply came first: again once it is written
            elif task.exception() is not None:
                log.warning(
                    "memory: the %s of conversation %s failed (%s); what was kept before stays",
                    job.kind,
                    job.conversation_id,
                    task.exception(),
                )
            else:
                self.jobs_done += 1
            self._current = None
            async with self._done:
                self._done.notify_all()

    async def _run(self, job: Job) -> None:
        persona = self._config().personas.get(job.persona)
        if persona is None:
            return
        async with asyncio.timeout(JOB_TIMEOUT_S):
            if job.kind == "summary":
                await self._summarize(job, persona)
            elif job.kind == "facts":
                await self._take_facts(job, persona)
            else:
                await self._embed(job)

    async def _summarize(self, job: Job, persona: Persona) -> None:
        conversation_id = job.conversation_id
        window_start = self._windows.get(conversation_id, 0)
        saved = await self.store.summary(conversation_id)
        if window_start <= saved.covers_through + 1:
            return  # nothing left the window that the summary lacks
        turns = await self.store.turns_before(
            conversation_id, window_start, saved.covers_through, limit=500
        )
        counts = [self._model.count_tokens(turn.content) for turn in turns]
        if not turns or (sum(counts) < FOLD_MIN_TOKENS and len(turns) < 500):
            return  # a few more first
        chunk: list[OldTurn] = []
        used = 0
        for turn, tokens in zip(turns, counts, strict=True):
            if chunk and used + tokens > FOLD_TOKENS:
                break
            chunk.append(turn)
            used += tokens
        bot = self._config().bot.name
        text = await self._complete(
            persona.memory.summary_model or persona.model,
            summary_request(saved.text, chunk, bot),
            SUMMARY_OPTIONS,
        )
        if not text:
            raise RuntimeError("the model wrote an empty summary")
        await self.store.save_summary(
            conversation_id,
            text=text,
            tokens=self._model.count_tokens(text),
            covers_through=chunk[-1].id,
        )
        log.info(
            "memory: conversation %s summarised through message %s",
            conversation_id,
            chunk[-1].id,
        )
        if len(chunk) < len(turns):
            self._enqueue(job)  # more to fold in

    async def _take_facts(self, job: Job, persona: Persona) -> None:
        conversation_id = job.conversation_id
        saved = await self.store.summary(conversation_id)
        turns = await self.store.said_after(conversation_id, saved.facts_through, limit=200)
        people: dict[str, list[OldTurn]] = {}
        for turn in turns:
            if turn.author_id:
                people.setdefault(turn.author_id, []).append(turn)
        for person, said in people.items():
            name = said[-1].author_name or "the person"
            answer = await self._complete(
                persona.memory.summary_model or persona.model,
                facts_request(name, said),
                FACTS_OPTIONS,
            )
            for fact in parse_facts(answer):
                await self.store.add_fact(
                    person,
                    job.persona,
                    fact,
                    private=job.private,
                    source="idle",
                    keep=persona.memory.max_facts,
                )
        if turns:
            await self.store.save_summary(conversation_id, facts_through=turns[-1].id)

    async def _embed(self, job: Job) -> None:
        embedder = self._embedder_now()
        if embedder is None:
            return
        todo = await self.index.unembedded(job.conversation_id, embedder.model, BATCH)
        if not todo:
            return
        vectors = await embedder.embed([text for _, text in todo])
        await self.index.add(
            job.conversation_id,
            embedder.model,
            [(message_id, vector) for (message_id, _), vector in zip(todo, vectors, strict=True)],
        )
        if len(todo) == BATCH:
            self._enqueue(job)  # more to embed

    async def _complete(
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> str:
        pieces: list[str] = []
        async for delta in self._model.stream_chat(model, messages, options):
            if isinstance(delta, str):
                pieces.append(delta)
        return "".join(pieces).strip()


class _Replying:
    """``Memory.replying()``: a class, not a generator (it wraps every reply)."""

    __slots__ = ("_memory",)

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    async def __aenter__(self) -> None:
        self._memory._reply_began()

    async def __aexit__(self, *exc_info: object) -> None:
        self._memory._reply_ended()
