"""/persona: show this conversation's persona, list them; admins bind one in bot.toml."""

from __future__ import annotations

from typing import Any

import tomlkit
from tomlkit.items import AoT

from llamabot import ChannelRef, CommandContext, ConfigError, Plugin, UsageError

plugin = Plugin("persona", description="Shows, lists and (admins) sets the persona.")


async def persona_names(ctx: CommandContext[None], typed: str) -> list[str]:
    """The personas bot.toml defines that start with what the person typed."""
    return [name for name in sorted(ctx.bot_config.personas) if name.startswith(typed.lower())]


@plugin.command(
    "persona",
    usage="[list | set NAME]",
    choices={"action": ["list", "set"]},
    autocomplete={"name": persona_names},
)
async def persona(ctx: CommandContext[None], action: str = "", name: str = "") -> None:
    """Show this conversation's persona, list them, or (admins) set it.

    Args:
        action: list the personas, or set this conversation's (admins).
        name: The persona to set.
    """
    personas = ctx.bot_config.personas
    current = ctx.persona.name
    action = action.lower()
    if action == "" and not name:
        model = ctx.model.served_model(ctx.persona.persona.model)
        await ctx.reply(f"This conversation uses the persona {current} (model {model}).")
    elif action == "list" and not name:
        lines = [
            f"{key} — {ctx.model.served_model(value.model)}"
            + (" (this conversation)" if key == current else "")
            for key, value in sorted(personas.items())
        ]
        await ctx.reply("Personas:\n" + "\n".join(lines))
    elif action == "set" and name:
        await _set(ctx, name)
    else:
        raise UsageError("say list, or set NAME" if action else "too many arguments")


async def _set(ctx: CommandContext[None], name: str) -> None:
    prefix = ctx.prefix
    if not ctx.is_admin:
        await ctx.reply(f"Only the bot's admins can use {prefix}persona set.")
        return
    personas = ctx.bot_config.personas
    if name not in personas:
        known = ", ".join(sorted(personas))
        await ctx.reply(f"There is no persona {name!r}. Define [personas.{name}] or use: {known}")
        return
    channel = ctx.channel
    # Keep answering unaddressed messages where a broader binding said so.
    keep_always = not channel.is_private and ctx.persona.respond == "always"

    def bind(document: Any) -> None:
        _bind(document, channel, name, keep_always, ctx.author_id)

    try:
        ctx.admin.edit(bind)
    except ConfigError as exc:
        await ctx.reply("bot.toml was left as it was: " + "; ".join(exc.problems))
        return
    await ctx.reply(f"This conversation now uses the persona {name}; bot.toml keeps the binding.")


def _bind(document: Any, channel: ChannelRef, persona: str, keep_always: bool, author: str) -> None:
    """Point this conversation's own [[bindings]] entry at ``persona``, adding one if needed."""
    target = channel.chat_id
    names = {target}
    if channel.thread_id is not None:
        target = f"{channel.chat_id}:{channel.thread_id}"
        names = {target, channel.thread_id}
    bindings = document.get("bindings")
    if bindings is None:
        if not tomlkit.dumps(document).endswith("\n\n"):
            document.add(tomlkit.nl())
        bindings = tomlkit.aot()
        document.append("bindings", bindings)
    for entry in bindings:
        if entry.get("platform") == channel.platform and str(entry.get("channel", "*")) in names:
            entry["persona"] = persona
            return
    entry = tomlkit.table() if isinstance(bindings, AoT) else tomlkit.inline_table()
    entry.add("platform", channel.platform)
    entry.add("channel", target)
    entry.add("persona", persona)
    if keep_always:
        entry.add("respond", "always")
    if isinstance(bindings, AoT):
        entry.add(tomlkit.nl())
        entry.comment(f"set with /persona set by {author}")
    bindings.append(entry)
