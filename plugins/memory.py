"""What the bot remembers: the ``remember`` tool, ``/memory`` and ``/summary``.

A persona keeps facts about people with ``[personas.NAME.memory] facts = true``: the
model notes them with ``remember`` (offered to such a persona by itself), and the bot
takes more from a conversation once it has been idle. ``/memory`` shows a person what
is kept about them, numbered; ``/memory forget N`` and ``/memory forget all`` delete.
"""

from __future__ import annotations

from llamabot import CommandContext, Plugin, UsageError

plugin = Plugin("memory", description="Shows and forgets what the bot remembers about you.")


@plugin.tool("remember")
async def remember(ctx: CommandContext[None], fact: str) -> str:
    """Remember a short fact the person told about themselves, for later chats.

    Args:
        fact: The fact, short and about the person, e.g. "is called Sam" or "prefers metric units".
    """
    if not ctx.memory.keeps_facts:
        return "Memory is off here; nothing was kept."
    if await ctx.memory.remember(fact):
        return f"Remembered: {fact}"
    return "That was known already."


@plugin.command("memory", usage="[forget N | forget all]", choices={"action": ["forget"]})
async def memory(ctx: CommandContext[None], action: str = "", which: str = "") -> None:
    """Show what the bot remembers about you, or forget some or all of it.

    Args:
        action: forget, to delete.
        which: The number shown by /memory, or all.
    """
    facts = await ctx.memory.facts()
    action, which = action.lower(), which.lower()
    if not action and not which:
        if not facts:
            off = "" if ctx.memory.keeps_facts else " (this persona keeps no facts here)"
            await ctx.reply(f"I remember nothing about you{off}.")
            return
        many = len({fact.persona for fact in facts}) > 1
        lines = [
            f"{number}. {fact.text}" + (f" ({fact.persona})" if many else "")
            for number, fact in enumerate(facts, 1)
        ]
        lines.append(
            f"{ctx.prefix}memory forget N deletes one; {ctx.prefix}memory forget all, all."
        )
        await ctx.reply("What I remember about you:\n" + "\n".join(lines))
    elif action == "forget" and which == "all":
        removed = await ctx.memory.forget()
        await ctx.reply(f"Forgot all {removed} thing(s) I remembered about you.")
    elif action == "forget" and which.isdigit():
        number = int(which)
        if not 1 <= number <= len(facts):
            await ctx.reply(f"There is no number {number}; {ctx.prefix}memory lists them.")
            return
        await ctx.memory.forget([facts[number - 1]])
        await ctx.reply(f"Forgot: {facts[number - 1].text}")
    else:
        raise UsageError("say forget N, or forget all")


@plugin.command("summary")
async def summary(ctx: CommandContext[None]) -> None:
    """Show the summary the bot keeps of this conversation's earlier part."""
    text = await ctx.memory.summary()
    if text:
        await ctx.reply("What I keep of this conversation's earlier part:\n" + text)
    else:
        await ctx.reply("There is no summary of this conversation yet.")
