"""What a model backend is to the rest of llamabot: the ChatModel protocol and its data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asking to call a tool: ``id`` pairs the call with its result."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool as the model is told of it: ``parameters`` is a JSON schema (an object)."""

    name: str
    description: str
    parameters: Mapping[str, Any]


class ChatMessage(NamedTuple):
    """One turn sent to the model.

    An assistant turn may carry ``tool_calls``; a ``tool`` turn is one call's result,
    naming the tool (``tool_name``) and the call it answers (``tool_call_id``). A user
    turn may carry ``images``. Immutable; a tuple rather than a frozen dataclass because
    every reply builds one per turn of its window, at a third of the cost.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None
    tool_call_id: str | None = None
    images: tuple[bytes, ...] = ()  # encoded pictures on a user turn, for a vision model


# What a model's stream yields: text as it is written, or a call of one of the tools.
Delta = str | ToolCall


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling options; ``None`` leaves the backend's own default in force."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repeat_penalty: float | None = None
    num_ctx: int | None = None
    num_predict: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    keep_alive: str | None = None
    # The persona's LoRA adapter (as bot.toml names it) and its strength; only the
    # embedded backend applies one per reply.
    adapter: str | None = None
    adapter_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a backend can serve."""

    name: str
    size_bytes: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    host: str | None = None


@dataclass(frozen=True, slots=True)
class Health:
    """The result of a backend health check: ``detail`` says what to do when not ok."""

    ok: bool
    detail: str
    checks: tuple[tuple[str, bool, str], ...] = field(default_factory=tuple)


class ChatModel(Protocol):
    """A model backend. ``stream_chat`` yields text deltas as the model produces them,
    and the tool calls it makes when it was offered ``tools``.

    Failures are raised as :class:`llamabot.llm.errors.ModelError` subclasses, whose
    ``user_message`` is safe to show to the person chatting.
    """

    name: str

    def stream_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]: ...

    async def supports_tools(self, model: str) -> bool:
        """Whether ``model`` can call tools; a model that cannot is never offered any."""
        ...

    async def supports_vision(self, model: str) -> bool:
        """Whether ``model`` can see images; a model that cannot is never sent any."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def served_model(self, requested: str) -> str:
        """The model that really answers when a persona asks for ``requested``."""
        ...

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        """Put new first-token and idle timeouts in force (hot reload of bot.toml)."""
        ...

    async def context_length(self, model: str) -> int | None: ...

    async def list_models(self) -> list[ModelInfo]: ...

    async def health(self) -> Health: ...

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        """Of ``names``, the models some server lacks, with those servers."""
        ...

    def install_hint(self, model: str) -> str:
        """What the admin does so that a missing ``model`` is served (for logs and doctor)."""
        ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (about four characters a token for English text)."""
    return max(1, (len(text) + 3) // 4)
