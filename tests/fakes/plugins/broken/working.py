"""A fine plugin beside broken ones, whose command handler raises on request."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("working")


@plugin.command("hello")
async def hello(ctx: CommandContext) -> None:
    await ctx.reply("hello back")


@plugin.command("boom")
async def boom(ctx: CommandContext) -> None:
    raise RuntimeError("the handler broke")


@plugin.on_message
async def fragile(ctx: CommandContext) -> bool:
    raise RuntimeError("the message hook broke")


@plugin.on_start
async def fragile_start(ctx: object) -> None:
    raise RuntimeError("the start hook broke")
