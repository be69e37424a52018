"""/remind, /reminders, /unremind: reminders delivered in the conversation they were set in.

A reminder is a scheduled call of ``deliver`` holding plain data (where, who, what), so
it survives a restart of the bot.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llamabot import ChannelRef, CommandContext, JobContext, Plugin, UsageError, parse_duration


class Settings(BaseModel):
    """``[plugins.remind]`` in bot.toml."""

    model_config = ConfigDict(extra="forbid")

    max_per_person: int = Field(default=25, ge=1)
    # A reminder due while the bot was offline is still delivered when at most this late.
    late_hours: float = Field(default=24.0, gt=0)


plugin = Plugin("remind", description="Reminders, also across restarts.", config=Settings)

WHEN = "10m, 2h30m, 18:00 or 2026-12-24 18:00"
_DURATION = re.compile(r"(?:\d+[wdhms])+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLOCK = re.compile(r"\d{1,2}:\d{2}")
_FARTHEST = timedelta(days=3660)
_LATE_NOTE_AFTER = timedelta(minutes=2)


def parse_when(words: list[str], now: datetime) -> tuple[datetime, int]:
    """When the reminder is due, and how many words said it. ``now`` is aware.

    A duration counts real time (``2h`` is two hours later even across a daylight
    saving change); a clock time or a date is read on the wall clock of ``now``'s zone.
    """
    first = words[0].lower() if words else ""
    try:
        if _DURATION.fullmatch(first):
            delay = parse_duration(first)
            if not delay:
                raise UsageError("a reminder needs a delay of at least 1s")
            return (now.astimezone(UTC) + delay).astimezone(now.tzinfo), 1
        if "t" in first and _DATE.fullmatch(first.split("t")[0]):
            day, clock = first.split("t", 1)
            return _at(day, clock, now), 1
        if _DATE.fullmatch(first):
            if len(words) > 1 and _CLOCK.fullmatch(words[1]):
                return _at(first, words[1], now), 2
            return _at(first, "09:00", now), 1
        if _CLOCK.fullmatch(first):
            due = datetime.combine(now.date(), _clock(first), tzinfo=now.tzinfo)
            if _instant(due) <= _instant(now):
                due = datetime.combine(now.date() + timedelta(days=1), _clock(first), now.tzinfo)
            return due, 1
    except (ValueError, OverflowError):
        raise UsageError(f"{' '.join(words[:2])!r} is not a time; say {WHEN}") from None
    raise UsageError(f"say when: {WHEN}")


def _instant(moment: datetime) -> datetime:
    """``moment`` in UTC: aware datetimes sharing a zone compare by wall clock otherwise."""
    return moment.astimezone(UTC)


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _at(day: str, clock: str, now: datetime) -> datetime:
    return datetime.combine(datetime.strptime(day, "%Y-%m-%d").date(), _clock(clock), now.tzinfo)


def _describe(due: datetime, now: datetime) -> str:
    left = _instant(due) - _instant(now)
    if left < timedelta(days=1):
        hours, rest = divmod(int(left.total_seconds()) + 59, 3600)
        span = f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60} min"
        return f"at {due:%H:%M} (in {span})"
    return f"on {due:%a %d %b %Y at %H:%M} {due.tzname() or ''}".rstrip()


@plugin.command("remind", usage="<when> <text>")
async def remind(ctx: CommandContext[Settings], *words: str) -> None:
    """Remind you: /remind 10m stretch, /remind 2026-12-24 18:00 presents.

    Args:
        words: When, then what: 10m stretch, 18:00 call mum, 2026-12-24 18:00 presents.
    """
    if not ctx.scheduler.available:
        await ctx.reply("Reminders are unavailable: this bot runs without a scheduler.")
        return
    now = datetime.now(ctx.scheduler.timezone)
    due, used = parse_when(list(words), now)
    text = _rest(ctx.message.text, used, words)
    if not text:
        raise UsageError("what should I remind you of?")
    await ctx.reply(await set_reminder(ctx, due, text, now))


async def set_reminder(
    ctx: CommandContext[Settings], due: datetime, text: str, now: datetime
) -> str:
    """Schedule ``text`` for the person asking at ``due``; what to tell them."""
    if _instant(due) <= _instant(now):
        return f"{due:%Y-%m-%d %H:%M} has passed; say a time in the future."
    if _instant(due) - _instant(now) > _FARTHEST:
        return "That is too far ahead; reminders reach at most ten years."
    mine = [
        job for job in await ctx.scheduler.pending(deliver) if job.data["author"] == ctx.author_id
    ]
    if len(mine) >= ctx.config.max_per_person:
        return (
            f"You have {len(mine)} reminders pending, the most allowed; "
            f"cancel one with {ctx.prefix}unremind ID first."
        )
    channel = ctx.channel
    data = {
        "platform": channel.platform,
        "chat_id": channel.chat_id,
        "thread_id": channel.thread_id,
        "guild_id": channel.guild_id,
        "is_private": channel.is_private,
        "author": ctx.author_id,
        "user_id": ctx.author.id,
        "name": ctx.author.name,
        "message_id": ctx.message.message_id,
        "text": text,
        "due": due.isoformat(),
    }
    grace_s = int(ctx.config.late_hours * 3600)
    job = await ctx.scheduler.run_at(due, deliver, data, grace_s=grace_s)
    return (
        f"OK, I'll remind you {_describe(due, now)}. "
        f"Reminder {job.id}; cancel it with {ctx.prefix}unremind {job.id}."
    )


@plugin.tool("remind")
async def remind_tool(ctx: CommandContext[Settings], when: str, text: str) -> str:
    """Set a reminder for the person you are talking to; it is posted in this chat.

    Args:
        when: A delay like 10m or 2h30m, a clock time like 18:00, or a date and time
            like 2026-12-24 18:00, in the bot's time zone.
        text: What to remind them of.
    """
    if not ctx.scheduler.available:
        return "error: reminders are unavailable in this bot"
    now = datetime.now(ctx.scheduler.timezone)
    words = when.split()
    try:
        due, used = parse_when(words, now)
    except UsageError as exc:
        return f"error: {exc}"
    if used != len(words):
        return f"error: {when!r} is not a time; say {WHEN}"
    if not text.strip():
        return "error: say what to remind them of"
    return await set_reminder(ctx, due, text.strip(), now)


def _rest(message: str, used: int, words: tuple[str, ...]) -> str:
    """The reminder's text as typed (line breaks kept), after the command and the time."""
    parts = message.strip().split(maxsplit=used + 1)
    if len(parts) == used + 2 and parts[1 : used + 1] == list(words[:used]):
        return parts[-1].strip()
    return " ".join(words[used:])


@plugin.command("reminders")
async def reminders(ctx: CommandContext[Settings]) -> None:
    """List your pending reminders."""
    if not ctx.scheduler.available:
        await ctx.reply("Reminders are unavailable: this bot runs without a scheduler.")
        return
    mine = [j for j in await ctx.scheduler.pending(deliver) if j.data["author"] == ctx.author_id]
    channel = ctx.channel
    # In a group, reminders set elsewhere (perhaps in a private chat) stay private.
    here = [
        j
        for j in mine
        if channel.is_private
        or (j.data["platform"], j.data["chat_id"], j.data["thread_id"])
        == (channel.platform, channel.chat_id, channel.thread_id)
    ]
    elsewhere = len(mine) - len(here)
    if not mine:
        await ctx.reply("You have no reminders pending.")
        return
    lines = [
        f"{job.id} — {datetime.fromisoformat(job.data['due']):%Y-%m-%d %H:%M} — {job.data['text']}"
        for job in here
    ]
    if elsewhere:
        lines.append(f"…and {elsewhere} set in other chats; send {ctx.prefix}reminders privately.")
    await ctx.reply("Your reminders:\n" + "\n".join(lines))


@plugin.command("unremind", usage="<id>")
async def unremind(ctx: CommandContext[Settings], reminder_id: str) -> None:
    """Cancel one of your reminders."""
    if not ctx.scheduler.available:
        await ctx.reply("Reminders are unavailable: this bot runs without a scheduler.")
        return
    wanted = reminder_id.lower()
    mine = [j for j in await ctx.scheduler.pending(deliver) if j.data["author"] == ctx.author_id]
    # Someone else's reminder looks the same as none at all: ids are not secrets, texts are.
    if not any(job.id == wanted for job in mine) or not await ctx.scheduler.cancel(deliver, wanted):
        await ctx.reply(f"You have no reminder {reminder_id}; {ctx.prefix}reminders lists yours.")
        return
    await ctx.reply(f"Cancelled reminder {wanted}.")


@plugin.task
async def deliver(ctx: JobContext[Settings], data: dict[str, Any]) -> None:
    """Post a due reminder where it was set, naming the person."""
    channel = ChannelRef(
        platform=data["platform"],
        chat_id=data["chat_id"],
        thread_id=data["thread_id"],
        guild_id=data["guild_id"],
        is_private=data["is_private"],
    )
    if channel.is_private:
        text = f"⏰ Reminder: {data['text']}"
    else:
        who = ctx.mention(channel.platform, data["user_id"], data["name"])
        text = f"⏰ Reminder for {who}: {data['text']}"
    due = datetime.fromisoformat(data["due"])
    if datetime.now(due.tzinfo) - due > _LATE_NOTE_AFTER:
        text += f"\n(due {due:%Y-%m-%d %H:%M}; the bot was offline then)"
    await ctx.send(channel, text, reply_to=data["message_id"])
