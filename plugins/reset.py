"""/reset: forget this conversation's history, so the model starts fresh.

In a group it forgets everyone's messages there, so only the group's admins may (in a
DM, the person); ``[access.commands] reset = "everyone"`` opens it to all.
"""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("reset", description="Forgets this conversation's history.")


@plugin.command("reset", permission="moderator")
async def reset(ctx: CommandContext[None]) -> None:
    """Forget this conversation's history; the model starts fresh."""
    removed = await ctx.history.clear()
    if removed:
        noun = "message" if removed == 1 else "messages"
        await ctx.reply(f"Forgot {removed} {noun} of this conversation. The model starts fresh.")
    else:
        await ctx.reply("This conversation has no history; the model already starts fresh.")
