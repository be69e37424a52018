from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("first")


@plugin.command("same")
async def same(ctx: CommandContext) -> None:
    await ctx.reply("first")
