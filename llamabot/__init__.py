"""llamabot: chat bots for Discord, Telegram and the terminal that answer with a local Llama."""

from __future__ import annotations

from llamabot.adapters.base import Adapter, CommandSpec, DeliveryError, PlatformLimits
from llamabot.app import Bot
from llamabot.config import Config, ConfigError, Persona, load_config, parse_config
from llamabot.errors import StartupError
from llamabot.events import Author, ChannelRef, Inbound, SentMessage
from llamabot.llm.base import ChatMessage, ChatModel, GenerationOptions
from llamabot.plugins import CommandContext, JobContext, Plugin, UsageError
from llamabot.streaming import ReplyStream, split_message

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
