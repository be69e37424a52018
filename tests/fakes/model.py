"""An in-process ChatModel for tests that need the core but not a real model's answer.

It records every call (so a test can check the system prompt that reached the model) and
answers with a scripted reply, streamed in small deltas.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from llamabot.llm import ChatMessage, GenerationOptions, Health, ModelInfo, estimate_tokens
from llamabot.llm.base import Delta, ToolCall, ToolSpec


@dataclass
class ModelCall:
    model: str
    messages: list[ChatMessage]
    options: GenerationOptions
    tools: list[ToolSpec] = field(default_factory=list)

    @property
    def system(self) -> str:
        return self.messages[0].content if self.messages[0].role == "system" else ""

    @property
    def last_user(self) -> str:
        return next(m.content for m in reversed(self.messages) if m.role == "user")


def echo(call: ModelCall) -> str:
    """The default script: answer with the last user message, echoed."""
    return f"echo: {call.last_user}"


@dataclass
class ScriptedModel:
    """A ChatModel that answers ``reply(call)`` in chunks of ``chunk`` characters.

    ``reply`` may also return tool calls (a list of ``ToolCall``), which are yielded
    as the model's call of those tools. ``gate``, when set, is awaited before the first
    delta: a test can hold a generation open and release it. ``error`` is raised after
    ``error_after`` deltas. ``tools_able`` is what ``supports_tools`` answers.
    """

    reply: Callable[[ModelCall], str | list[ToolCall]] = echo
    tools_able: bool = True
    chunk: int = 8
    gate: asyncio.Event | None = None
    error: Exception | None = None
    error_after: int = 0
    name: str = "scripted"
    calls: list[ModelCall] = field(default_factory=list)
    call_started: asyncio.Event = field(default_factory=asyncio.Event)
    timeouts: tuple[float, float] | None = None

    async def stream_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]:
        call = ModelCall(model, list(messages), options, list(tools))
        self.calls.append(call)
        self.call_started.set()
        if self.gate is not None:
            await self.gate.wait()
        text = self.reply(call)
        if isinstance(text, list):
            for tool_call in text:
                yield tool_call
            return
        for index, start in enumerate(range(0, len(text), self.chunk)):
            if self.error is not None and index >= self.error_after:
                raise self.error
            yield text[start : start + self.chunk]
            await asyncio.sleep(0)
        if self.error is not None and len(text) <= self.error_after * self.chunk:
            raise self.error

    async def supports_tools(self, model: str) -> bool:
        return self.tools_able

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def served_model(self, requested: str) -> str:
        return requested

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        self.timeouts = (first_token_s, idle_s)

    async def context_length(self, model: str) -> int | None:
        return None

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(name="scripted")]

    async def health(self) -> Health:
        return Health(ok=True, detail="scripted model")

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        return {}

    def install_hint(self, model: str) -> str:
        return f"script a reply for {model}"

    async def aclose(self) -> None:
        return None
