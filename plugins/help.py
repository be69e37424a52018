"""/help: the commands you may use, with their usage, from the plugins' own metadata."""

from __future__ import annotations

from llamabot import CommandContext, Plugin

plugin = Plugin("help", description="Lists the commands you may use.")


async def command_names(ctx: CommandContext[None], typed: str) -> list[str]:
    """The commands the person may use that start with what they typed."""
    wanted = typed.removeprefix(ctx.prefix).lower()
    return [c.name for c in await ctx.commands.available() if c.name.startswith(wanted)]


@plugin.command("help", usage="[command]", autocomplete={"command": command_names})
async def show_help(ctx: CommandContext[None], command: str = "") -> None:
    """List the commands you may use, or explain one.

    Args:
        command: The command to explain.
    """
    prefix = ctx.prefix
    allowed = await ctx.commands.available()
    if command:
        name = command.removeprefix(prefix).lower()
        found = next((c for c in allowed if c.name == name), None)
        if found is None:
            await ctx.reply(f"There is no command {prefix}{name}. Send {prefix}help for the list.")
            return
        await ctx.reply(f"{found.usage_line(prefix)}\n{found.description}".strip())
        return
    lines = []
    for found in allowed:
        line = found.usage_line(prefix)
        if found.description:
            line += f" — {found.description}"
        if found.permission == "admin":
            line += " (admins)"
        elif found.permission == "moderator" and not ctx.channel.is_private:
            line += " (group admins)"
        lines.append(line)
    await ctx.reply("Commands:\n" + "\n".join(lines))
