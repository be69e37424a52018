"""Which adapters bot.toml enables. Platform libraries are imported only when enabled."""

from __future__ import annotations

from llamabot.adapters.base import Adapter
from llamabot.config import Config


def adapters_for(config: Config) -> list[Adapter]:
    """The platform adapters enabled in bot.toml (the console is started by ``chat``)."""
    adapters: list[Adapter] = []
    if config.discord.enabled:
        from llamabot.adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(config.discord))
    if config.telegram.enabled:
        from llamabot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(config.telegram))
    return adapters
