"""A package plugin with its own config slice and a sibling module."""

from __future__ import annotations

from pydantic import BaseModel

from llamabot import CommandContext, Plugin

from .words import greeting


class Settings(BaseModel):
    greeting: str = "Hello"


plugin = Plugin("greeter", description="Greets.", config=Settings)


@plugin.command("greet", usage="[name]")
async def greet(ctx: CommandContext, name: str = "") -> None:
    """Greet someone."""
    settings = ctx.config
    assert isinstance(settings, Settings)
    await ctx.reply(greeting(settings.greeting, name or ctx.message.author.name))
