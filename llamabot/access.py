"""Who may talk to the bot, and where: the ``[access]`` policy, the same on every platform.

The router asks :func:`refusal` before a message reaches a command or the model, in
groups as in DMs. Adapters only report facts (author, username, roles, DM or group).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from llamabot.config import AccessSection, Config, Permission
from llamabot.events import Inbound

if TYPE_CHECKING:
    from llamabot.adapters.base import Adapter
    from llamabot.plugins import Command

log = logging.getLogger(__name__)

_RANK: dict[Permission, int] = {"everyone": 0, "moderator": 1, "admin": 2}


def _matches_user(entries: Iterable[str], inbound: Inbound) -> bool:
    platform = inbound.channel.platform
    author = inbound.author
    handle = "@" + author.username.lower() if author.username else None
    for raw in entries:
        entry = raw.strip()
        scope, colon, rest = entry.partition(":")
        if colon:
            if scope != platform:
                continue
            entry = rest.strip()
        if entry == author.id or (handle is not None and entry.lower() == handle):
            return True
    return False


def _matches_channel(entries: Iterable[str], inbound: Inbound) -> bool:
    channel = inbound.channel
    ids = {channel.chat_id, f"{channel.platform}:{channel.chat_id}"}
    if channel.thread_id is not None:
        ids |= {channel.thread_id, f"{channel.platform}:{channel.thread_id}"}
    if channel.guild_id is not None:
        ids |= {channel.guild_id, f"{channel.platform}:{channel.guild_id}"}
    return any(entry.strip() in ids for entry in entries)


def allowed_users(config: Config, access: AccessSection, platform: str) -> list[str]:
    """The allow list in force: ``[access]`` plus ``[telegram] allowed_users`` on Telegram."""
    users = list(access.allowed_users)
    if platform == "telegram":
        # Written there as ids, "@name" or "name", as earlier versions took them.
        for entry in config.telegram.allowed_users:
            entry = entry.strip()
            handle = entry if entry.isdigit() or entry.startswith("@") else f"@{entry}"
            users.append(f"telegram:{handle}")
    return users


def refusal(config: Config, access: AccessSection, inbound: Inbound) -> str | None:
    """Why ``inbound``'s author may not talk to the bot here, or ``None`` when they may."""
    channel = inbound.channel
    if channel.platform == "console" or config.is_admin(channel.platform, inbound.author.id):
        return None
    if _matches_user(access.blocked_users, inbound):
        return "You are not allowed to use this bot."
    if channel.is_private and not access.dms:
        return (
            "This bot does not answer direct messages; talk to it in a server or group where it is."
        )
    if _matches_channel(access.blocked_channels, inbound) or (
        access.allowed_channels and not _matches_channel(access.allowed_channels, inbound)
    ):
        return "This bot does not answer in this chat; its admin chooses where it does."
    users = allowed_users(config, access, channel.platform)
    if users and not _matches_user(users, inbound):
        return (
            "This bot answers only the people its admin has listed. To be added, give the "
            f"admin your id: {channel.platform}:{inbound.author.id}."
        )
    if access.allowed_roles and not channel.is_private:
        wanted = {r.strip().lower() for r in access.allowed_roles}
        if not wanted & {r.lower() for r in inbound.author.roles}:
            return (
                "Here the bot answers only members with the role "
                + " or ".join(sorted(access.allowed_roles))
                + "."
            )
    return None


def permission_of(declared: Permission, command: str, access: AccessSection) -> Permission:
    """The permission a command needs: ``[access.commands]`` overrides the plugin's own."""
    return access.commands.get(command, declared)


def permits(needed: Permission, *, is_admin: bool, is_moderator: bool) -> bool:
    """Whether a person of this standing may run a command needing ``needed``."""
    standing = 2 if is_admin else 1 if is_moderator else 0
    return standing >= _RANK[needed]


async def command_refusal(
    command: Command, inbound: Inbound, adapter: Adapter, config: Config, access: AccessSection
) -> str | None:
    """Why this person may not run ``command`` here, or ``None`` when they may.

    Checks where the command may be used (private or group chats) and the permission it
    needs; asks the platform whether the person moderates the group only when needed.
    """
    channel = inbound.channel
    name = f"{config.bot.command_prefix}{command.name}"
    if command.where == "private" and not channel.is_private:
        return f"{name} works only in a private chat with the bot."
    if command.where == "group" and channel.is_private:
        return f"{name} works only in a group or server channel."
    needed = permission_of(command.permission, command.name, access)
    if needed == "everyone":
        return None
    is_admin = config.is_admin(channel.platform, inbound.author.id)
    is_moderator = False
    if not is_admin and needed == "moderator":
        is_moderator = channel.is_private or await is_moderator_here(inbound, adapter)
    if permits(needed, is_admin=is_admin, is_moderator=is_moderator):
        return None
    if needed == "admin":
        return f"Only the bot's admins can use {name}."
    return f"In a group, only its admins (and the bot's admins) can use {name}."


async def is_moderator_here(inbound: Inbound, adapter: Adapter) -> bool:
    """Whether the author administers this server or group; no when the platform can't say."""
    known = inbound.author.is_moderator
    if known is not None:
        return known
    try:
        return await adapter.is_moderator(inbound.channel, inbound.author.id)
    except Exception as exc:  # the platform could not say: the safe answer is no
        log.warning(
            "could not check whether %s moderates %s: %s",
            inbound.author.id,
            inbound.channel.key,
            exc,
        )
        return False
