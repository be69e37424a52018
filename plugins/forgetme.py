"""/forgetme: delete everything the person said, in every conversation (privacy)."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("forgetme", description="Deletes everything you said, everywhere.")


@plugin.command("forgetme")
async def forget_me(ctx: CommandContext[None]) -> None:
    """Delete everything you said to the bot, in every conversation, and what it remembers
    about you."""
    removed = await ctx.history.forget_person(ctx.author_id)
    noun = "message" if removed == 1 else "messages"
    cancelled = await ctx.scheduler.forget_person(ctx.author_id)
    jobs = "" if not cancelled else f", and cancelled {cancelled} pending reminder(s)"
    await ctx.reply(f"Deleted {removed} {noun} of yours from every conversation{jobs}.")
