"""/start: the greeting Telegram sends for when someone first opens a chat with the bot."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("start", description="Greets a new chat.")


@plugin.command("start")
async def start(ctx: CommandContext[None]) -> None:
    """Say hello and how to find the commands."""
    await ctx.reply(
        f"Hi, I'm {ctx.bot_config.bot.name}. Just write to me, and I'll answer. "
        f"Send {ctx.prefix}help for my commands."
    )
