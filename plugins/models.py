"""/models: the models the backend has; admins set a persona's model in bot.toml."""

from __future__ import annotations

from typing import Any

from llamabot import CommandContext, ConfigError, ModelError, Plugin, UsageError

plugin = Plugin("models", description="Lists the models; admins set a persona's model.")


async def persona_names(ctx: CommandContext[None], typed: str) -> list[str]:
    """The personas bot.toml defines that start with what the person typed."""
    return [name for name in sorted(ctx.bot_config.personas) if name.startswith(typed.lower())]


@plugin.command(
    "models",
    usage="[set PERSONA MODEL]",
    choices={"action": ["set"]},
    autocomplete={"persona": persona_names},
)
async def models(
    ctx: CommandContext[None], action: str = "", persona: str = "", model: str = ""
) -> None:
    """List the backend's models, or (admins) set the model of a persona.

    Args:
        action: set a persona's model (admins).
        persona: The persona whose model to set.
        model: The model it should use.
    """
    action = action.lower()
    if action == "" and not persona:
        await _list(ctx)
    elif action == "set" and persona and model:
        await _set(ctx, persona, model)
    else:
        raise UsageError("say set PERSONA MODEL" if action else "too many arguments")


async def _available(ctx: CommandContext[None]) -> list[str] | None:
    try:
        return [info.name for info in await ctx.model.list_models()]
    except ModelError as exc:
        await ctx.reply(exc.user_message)
        return None


async def _list(ctx: CommandContext[None]) -> None:
    names = await _available(ctx)
    if names is None:
        return
    users: dict[str, list[str]] = {}
    for key, value in sorted(ctx.bot_config.personas.items()):
        users.setdefault(value.model, []).append(key)
    if not names:
        await ctx.reply("The model backend has no models.")
        return
    lines = []
    for name in names:
        # Ollama lists "llama3.2:latest" for a persona's "llama3.2".
        personas = sorted({*users.get(name, []), *users.get(name.removesuffix(":latest"), [])})
        lines.append(name + (f" — used by {', '.join(personas)}" if personas else ""))
    await ctx.reply("Models:\n" + "\n".join(lines))


async def _set(ctx: CommandContext[None], persona: str, model: str) -> None:
    prefix = ctx.prefix
    if not ctx.is_admin:
        await ctx.reply(f"Only the bot's admins can use {prefix}models set.")
        return
    if persona not in ctx.bot_config.personas:
        known = ", ".join(sorted(ctx.bot_config.personas))
        await ctx.reply(f"There is no persona {persona!r}. Personas: {known}")
        return
    names = await _available(ctx)
    if names is None:
        return
    if names and model not in names and f"{model}:latest" not in names:
        await ctx.reply(
            f"The backend has no model {model!r}; {prefix}models lists the ones it has."
        )
        return

    def change(document: Any) -> None:
        table = document.get("personas", {}).get(persona)
        if table is None:
            raise KeyError(persona)
        table["model"] = model

    try:
        ctx.admin.edit(change)
    except KeyError:
        await ctx.reply(
            f"The persona {persona} is a built-in default; add [personas.{persona}] to "
            "bot.toml first."
        )
        return
    except ConfigError as exc:
        await ctx.reply("bot.toml was left as it was: " + "; ".join(exc.problems))
        return
    await ctx.reply(f"The persona {persona} now uses the model {model}.")
