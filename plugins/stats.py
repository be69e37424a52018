"""/stats: messages, tokens and median reply time, for this conversation and overall."""

from __future__ import annotations

from llamabot import CommandContext, Plugin
from llamabot.storage.stats import Usage, usage

plugin = Plugin("stats", description="Shows how much the bot was used.")


def _describe(figures: Usage) -> str:
    text = f"{figures.messages:,} messages, {figures.tokens:,} tokens"
    if figures.median_reply_ms is not None:
        text += f", median reply time {figures.median_reply_ms / 1000:.1f} s"
    return text


@plugin.command("stats")
async def stats(ctx: CommandContext) -> None:
    """Messages, tokens and median reply time, here and overall."""
    conversation = await ctx.store.conversation_id(ctx.inbound.channel)
    here = await usage(ctx.store, conversation)
    overall = await usage(ctx.store)
    await ctx.reply(
        f"This conversation: {_describe(here)}.\n"
        f"Overall ({overall.conversations:,} conversation"
        f"{'' if overall.conversations == 1 else 's'}): {_describe(overall)}."
    )
