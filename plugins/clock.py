"""The ``time`` tool: the model asks what time it is where the bot runs."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from llamabot import CommandContext, Plugin

plugin = Plugin("clock", description="Tells the model the date and time (tool: time).")


@plugin.tool("time")
async def now(ctx: CommandContext[None]) -> str:
    """The current date, time and weekday in the bot's time zone."""
    zone = ctx.bot_config.bot.timezone
    moment = datetime.now(ZoneInfo(zone))
    return f"{moment:%A %Y-%m-%d %H:%M} ({zone}, UTC{moment:%z})"
