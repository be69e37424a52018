from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("second")


@plugin.command("same")
async def same(ctx: CommandContext) -> None:
    await ctx.reply("second")
