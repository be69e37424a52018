"""/start: the greeting Telegram sends for when someone first opens a chat with the bot."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("start", description="Greets a new chat.")


@plugin.command("start")
async def start(ctx: CommandContext) -> None:
    """Say hello and how to find the commands."""
    settings = ctx.bot.config.bot
    await ctx.reply(
        f"Hi, I'm {settings.name}. Just write to me, and I'll answer. "
        f"Send {settings.command_prefix}help for my commands."
    )
