"""Who may talk to the bot, and where: the ``[access]`` policy, the same on every platform.

The router asks :func:`refusal` before a message reaches a command or the model, in
groups as in DMs. Adapters only report facts (author, username, roles, DM or group).
"""

from __future__ import annotations

from collections.abc import Iterable

from llamabot.config import AccessSection, Config, Permission
from llamabot.events import Inbound

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
