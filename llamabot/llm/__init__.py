"""Model backends: the ChatModel protocol, llama.cpp in-process and Ollama."""

from __future__ import annotations

from llamabot.llm.base import (
    ChatMessage,
    ChatModel,
    GenerationOptions,
    Health,
    ModelInfo,
    estimate_tokens,
)
from llamabot.llm.errors import (
    ContextTooLong,
    GenerationTimeout,
    ModelError,
    ModelNotFound,
    ModelUnavailable,
)

__all__ = [
    "ChatMessage",
    "ChatModel",
    "ContextTooLong",
    "GenerationOptions",
    "GenerationTimeout",
    "Health",
    "ModelError",
    "ModelInfo",
    "ModelNotFound",
    "ModelUnavailable",
    "estimate_tokens",
]
