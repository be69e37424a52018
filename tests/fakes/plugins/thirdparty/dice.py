"""dice: /roll for people, and a roll_dice tool for the model."""

from __future__ import annotations

import random

from pydantic import BaseModel, Field

from llamabot import CommandContext, Plugin, UsageError


class Settings(BaseModel):
    """``[plugins.dice]`` in bot.toml."""

    max_dice: int = Field(default=10, ge=1, le=100)


plugin = Plugin("dice", description="Rolls dice.", config=Settings)


def roll_dice(count: int, sides: int, most: int) -> list[int]:
    """``count`` dice of ``sides`` sides; ValueError when that is not a sensible roll."""
    if not 1 <= count <= most:
        raise ValueError(f"roll 1 to {most} dice")
    if not 2 <= sides <= 1000:
        raise ValueError("a die has 2 to 1000 sides")
    return [random.randint(1, sides) for _ in range(count)]


@plugin.command("roll", usage="[count] [sides]", cooldown="5s")
async def roll(ctx: CommandContext[Settings], count: int = 1, sides: int = 6) -> None:
    """Roll dice: /roll 2 6 rolls two six-sided dice.

    Args:
        count: How many dice to roll.
        sides: How many sides each die has.
    """
    try:
        rolled = roll_dice(count, sides, ctx.config.max_dice)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    dice = " + ".join(str(n) for n in rolled)
    await ctx.reply(f"🎲 {ctx.author.name} rolled {dice} = {sum(rolled)}")


@plugin.tool("roll_dice")
async def roll_for_model(ctx: CommandContext[Settings], count: int = 1, sides: int = 6) -> str:
    """Roll dice for the person you are talking to; gives each die and the total.

    Args:
        count: How many dice to roll.
        sides: How many sides each die has.
    """
    rolled = roll_dice(count, sides, ctx.config.max_dice)
    return f"rolled {rolled}, total {sum(rolled)}"
