"""/help: the commands you may use, with their usage, from the plugins' own metadata."""

from __future__ import annotations

from llamabot import CommandContext, Plugin
from llamabot.access import permission_of

plugin = Plugin("help", description="Lists the commands you may use.")


@plugin.command("help", usage="[command]")
async def show_help(ctx: CommandContext, command: str = "") -> None:
    """List the commands you may use, or explain one."""
    prefix = ctx.bot.config.bot.command_prefix
    access = ctx.persona.access
    needs = {
        c.name: permission_of(c.permission, c.name, access) for c in ctx.bot.plugins.commands()
    }
    allowed = [c for c in ctx.bot.plugins.commands() if ctx.is_admin or needs[c.name] != "admin"]
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
        if needs[found.name] == "admin":
            line += " (admins)"
        elif needs[found.name] == "moderator" and not ctx.inbound.channel.is_private:
            line += " (group admins)"
        lines.append(line)
    await ctx.reply("Commands:\n" + "\n".join(lines))
