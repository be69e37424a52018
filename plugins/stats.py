"""/stats: messages, tokens and median reply time, for this conversation and overall.

Everyone sees this conversation's figures and their own; only the bot's admins see the
figures of every conversation.
"""

from __future__ import annotations

from llamabot import CommandContext, Plugin
from llamabot.storage.stats import Usage, usage

plugin = Plugin("stats", description="Shows how much the bot was used.")


def _describe(figures: Usage) -> str:
    noun = "message" if figures.messages == 1 else "messages"
    text = f"{figures.messages:,} {noun}, {figures.tokens:,} tokens"
    if figures.median_reply_ms is not None:
        text += f", median reply time {figures.median_reply_ms / 1000:.1f} s"
    return text


@plugin.command("stats")
async def stats(ctx: CommandContext) -> None:
    """Messages, tokens and median reply time: here, yours, and (admins) overall."""
    conversation = await ctx.store.conversation_id(ctx.inbound.channel)
    here = await usage(ctx.store, conversation)
    lines = [f"This conversation: {_describe(here)}."]
    if ctx.is_admin:
        overall = await usage(ctx.store)
        lines.append(
            f"Overall ({overall.conversations:,} conversation"
            f"{'' if overall.conversations == 1 else 's'}): {_describe(overall)}."
        )
    else:
        yours = await usage(ctx.store, author_id=ctx.author_id)
        lines.append(f"Your messages, everywhere: {_describe(yours)}.")
    await ctx.reply("\n".join(lines))
