"""llamabot: chat bots for Discord, Telegram and the terminal that answer with a local Llama.

Everything a plugin may use is importable from here (``__all__``); the rest of the
package is the bot's own and may change between versions. Writing a plugin:
``docs/plugins.md``; testing one: :mod:`llamabot.testing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llamabot.adapters.base import Adapter, CommandSpec, DeliveryError, PlatformLimits
from llamabot.config import Config, ConfigError, Persona, Resolved, load_config, parse_config
from llamabot.config_editor import ConfigEditor
from llamabot.context import CommandContext, JobContext
from llamabot.durations import parse_duration
from llamabot.errors import StartupError
from llamabot.events import Author, ChannelRef, Inbound, SentMessage
from llamabot.llm.base import ChatMessage, ChatModel, GenerationOptions, ModelInfo
from llamabot.llm.errors import ModelError
from llamabot.plugins import Plugin, UsageError
from llamabot.services import (
    CommandCatalog,
    CommandInfo,
    ConversationHistory,
    ModelAccess,
    PersonMemory,
    PluginScheduler,
)
from llamabot.streaming import ReplyStream, split_message
from llamabot.tools import ToolOutput

if TYPE_CHECKING:
    from llamabot.app import Bot
    from llamabot.memory.store import Fact
    from llamabot.scheduler import ScheduledJob
    from llamabot.storage.history import FoundMessage, Turn
    from llamabot.storage.stats import Usage

# Names whose modules bring the database layer or the scheduler: `llamabot check` and
# `--help` should not pay for them, so they are imported on first use.
_LAZY = {
    "Bot": "llamabot.app",
    "Fact": "llamabot.memory.store",
    "FoundMessage": "llamabot.storage.history",
    "ScheduledJob": "llamabot.scheduler",
    "Turn": "llamabot.storage.history",
    "Usage": "llamabot.storage.stats",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'llamabot' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Adapter",
    "Author",
    "Bot",
    "ChannelRef",
    "ChatMessage",
    "ChatModel",
    "CommandCatalog",
    "CommandContext",
    "CommandInfo",
    "CommandSpec",
    "Config",
    "ConfigEditor",
    "ConfigError",
    "ConversationHistory",
    "DeliveryError",
    "Fact",
    "FoundMessage",
    "GenerationOptions",
    "Inbound",
    "JobContext",
    "ModelAccess",
    "ModelError",
    "ModelInfo",
    "PersonMemory",
    "Persona",
    "PlatformLimits",
    "Plugin",
    "PluginScheduler",
    "ReplyStream",
    "Resolved",
    "ScheduledJob",
    "SentMessage",
    "StartupError",
    "ToolOutput",
    "Turn",
    "Usage",
    "UsageError",
    "load_config",
    "parse_config",
    "parse_duration",
    "split_message",
]
