"""llamabot: chat bots for Discord, Telegram and the terminal that answer with a local Llama."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llamabot.adapters.base import Adapter, CommandSpec, DeliveryError, PlatformLimits
from llamabot.config import Config, ConfigError, Persona, load_config, parse_config
from llamabot.errors import StartupError
from llamabot.events import Author, ChannelRef, Inbound, SentMessage
from llamabot.llm.base import ChatMessage, ChatModel, GenerationOptions
from llamabot.plugins import CommandContext, JobContext, Plugin, UsageError
from llamabot.streaming import ReplyStream, split_message

if TYPE_CHECKING:
    from llamabot.app import Bot


def __getattr__(name: str) -> Any:
    # Bot brings the database layer; `llamabot check` and `--help` should not pay for it.
    if name == "Bot":
        from llamabot.app import Bot

        return Bot
    raise AttributeError(f"module 'llamabot' has no attribute {name!r}")


__all__ = [
    "Adapter",
    "Author",
    "Bot",
    "ChannelRef",
    "ChatMessage",
    "ChatModel",
    "CommandContext",
    "CommandSpec",
    "Config",
    "ConfigError",
    "DeliveryError",
    "GenerationOptions",
    "Inbound",
    "JobContext",
    "Persona",
    "PlatformLimits",
    "Plugin",
    "ReplyStream",
    "SentMessage",
    "StartupError",
    "UsageError",
    "load_config",
    "parse_config",
    "split_message",
]
