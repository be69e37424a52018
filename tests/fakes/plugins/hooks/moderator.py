"""Message and reply hooks, and start/stop hooks that post where the test tells them."""

from __future__ import annotations

from llamabot import ChannelRef, CommandContext, JobContext, Plugin

plugin = Plugin("moderator")

LOG = ChannelRef("console", "log")


@plugin.on_message
async def intercept(ctx: CommandContext) -> bool:
    if "secret" in ctx.message.text:
        await ctx.reply("I won't pass that on to the model.")
        return True
    return False


@plugin.on_reply
async def count(ctx: CommandContext, reply: str) -> None:
    await ctx.reply(f"(the model said {len(reply)} characters)")


@plugin.on_start
async def started(ctx: JobContext) -> None:
    await ctx.send(LOG, "moderator started")


@plugin.on_stop
async def stopping(ctx: JobContext) -> None:
    await ctx.send(LOG, "moderator stopping")
