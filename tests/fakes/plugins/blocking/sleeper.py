"""A plugin that blocks the event loop (time.sleep in a command): the watchdog names it."""

from __future__ import annotations

import time

from llamabot import CommandContext, Plugin

plugin = Plugin("sleeper", description="Naps on the event loop.")


@plugin.command("nap")
async def nap(ctx: CommandContext) -> None:
    """Block the whole bot for 0.3 s, as a careless plugin would."""
    time.sleep(0.3)
    await ctx.reply("yawn")
