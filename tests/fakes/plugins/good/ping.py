"""A plugin as small as it gets: /ping, and /add with typed arguments."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("ping", description="Answers /ping.")


@plugin.command("ping")
async def ping(ctx: CommandContext) -> None:
    """Answer pong."""
    await ctx.reply("pong")


@plugin.command("add", usage="<a> <b>")
async def add(ctx: CommandContext, a: int, b: int) -> None:
    """Add two whole numbers."""
    await ctx.reply(str(a + b))


@plugin.command("shutdown", permission="admin")
async def shutdown(ctx: CommandContext) -> None:
    """Pretend to do something only admins may."""
    await ctx.reply("shutting down (not really)")
