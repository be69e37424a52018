"""/stats: messages, tokens and median reply time, for this conversation and overall.

Everyone sees this conversation's figures and their own; only the bot's admins see the
figures of every conversation.
"""

from __future__ import annotations

from llamabot import CommandContext, Plugin, Usage

plugin = Plugin("stats", description="Shows how much the bot was used.")


def _describe(figures: Usage) -> str:
    noun = "message" if figures.messages == 1 else "messages"
    text = f"{figures.messages:,} {noun}, {figures.tokens:,} tokens"
    if figures.median_reply_ms is not None:
        text += f", median reply time {figures.median_reply_ms / 1000:.1f} s"
    return text


@plugin.command("stats")
async def stats(ctx: CommandContext[None]) -> None:
    """Messages, tokens and median reply time: here, yours, and (admins) overall."""
    here = await ctx.history.usage()
    lines = [f"This conversation: {_describe(here)}."]
    if ctx.is_admin:
        overall = await ctx.history.usage_everywhere()
        lines.append(
            f"Overall ({overall.conversations:,} conversation"
            f"{'' if overall.conversations == 1 else 's'}): {_describe(overall)}."
        )
    else:
        yours = await ctx.history.usage_everywhere(author_id=ctx.author_id)
        lines.append(f"Your messages, everywhere: {_describe(yours)}.")
    await ctx.reply("\n".join(lines))
