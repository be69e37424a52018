"""Discord's native commands: the plugins' commands as slash commands, and the answers
to one slash command, which go to its interaction rather than to the channel.

Commands are registered globally with one bulk overwrite, only when they changed since
the last start (their hash is kept in the bot's database). A slash command becomes an
``Inbound`` carrying an ``Invocation``; its answers go through :class:`InteractionReplies`,
an adapter for that one interaction: the first answer is the interaction's response (or,
when the command takes longer than ``DEFER_AFTER_S``, a deferred "thinking…" response
edited into the answer), later ones follow-ups. Admin commands and notices meant for the
person alone (refusals) are ephemeral. A command that answered nothing ends its
interaction with an ephemeral "Done.". Slash commands skip the durable inbox: an
interaction cannot be answered after a restart anyway.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from llamabot.adapters.base import CommandSpec, DeliveryError, PlatformLimits
from llamabot.events import ChannelRef, ImageRef, Inbound, Invocation, SentMessage

if TYPE_CHECKING:
    from llamabot.adapters.base import Adapter, BotHandle

log = logging.getLogger(__name__)

# Discord wants an answer within 3 s; a command still running after 2 s is deferred.
DEFER_AFTER_S = 2.0
# The interaction's own response message, as opposed to a follow-up's id.
ORIGINAL = "@original"
# What a slash command that answered nothing shows (to its user only).
DONE = "Done."

_OPTION_TYPES = {"string": 3, "integer": 4, "number": 10, "boolean": 5}
# Who sees a gated command in Discord's menu: Administrator, or Manage Server.
_MEMBER_PERMISSIONS = {"admin": str(1 << 3), "moderator": str(1 << 5)}
# Interaction contexts: 0 a server, 1 a DM with the bot.
_CONTEXTS = {"anywhere": [0, 1], "private": [1], "group": [0]}
_NAME = re.compile(r"[-_\w]{1,32}")
_MAX_CHOICES = 25
_MAX_TEXT = 100


def command_payloads(specs: Sequence[CommandSpec]) -> list[dict[str, Any]]:
    """The application commands Discord is given for ``specs`` (names it cannot take
    are left out, with a warning)."""
    payloads = []
    for spec in specs:
        if not _NAME.fullmatch(spec.name) or spec.name != spec.name.lower():
            log.warning(
                "/%s cannot be a Discord slash command (name); it stays a text one", spec.name
            )
            continue
        options = [_option(option) for option in spec.options]
        options.sort(key=lambda option: not option["required"])  # Discord: required first
        payloads.append(
            {
                "type": 1,
                "name": spec.name,
                "description": _short(spec.description or spec.usage or spec.name),
                "options": options,
                "default_member_permissions": _MEMBER_PERMISSIONS.get(spec.permission),
                "contexts": _CONTEXTS[spec.where],
                "integration_types": [0],
            }
        )
    return payloads


def _option(option: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": _OPTION_TYPES[option.kind],
        "name": option.name.lower(),
        "description": _short(option.description or option.name.replace("_", " ")),
        "required": option.required,
    }
    if option.choices:
        entry["choices"] = [{"name": _short(str(c)), "value": c} for c in option.choices][
            :_MAX_CHOICES
        ]
    elif option.autocomplete:
        entry["autocomplete"] = True
    return entry


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def payload_hash(payloads: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(payloads, sort_keys=True).encode()).hexdigest()


async def sync_commands(
    client: discord.Client, bot: BotHandle, specs: Sequence[CommandSpec]
) -> bool:
    """Register ``specs`` as the bot's global slash commands unless Discord has them
    already (by the hash kept from the last sync); whether a sync was sent."""
    application_id = client.application_id
    if application_id is None:
        return False
    payloads = command_payloads(specs)
    digest = payload_hash(payloads)
    key = f"discord.slash_commands:{application_id}"
    known = await bot.recall(key)
    if known == digest or (known is None and not payloads):
        log.info("Discord slash commands unchanged (%d)", len(payloads))
        return False
    await client.http.bulk_upsert_global_commands(application_id, payloads)
    await bot.remember(key, digest)
    log.info("registered %d slash commands with Discord", len(payloads))
    return True


def channel_of(interaction: discord.Interaction[Any]) -> ChannelRef:
    """Where a slash command was used, as llamabot names conversations."""
    channel = interaction.channel
    guild_id = str(interaction.guild_id) if interaction.guild_id is not None else None
    if isinstance(channel, discord.Thread):
        chat_id, thread_id = str(channel.parent_id), str(channel.id)
    else:
        chat_id, thread_id = str(interaction.channel_id), None
    return ChannelRef("discord", chat_id, thread_id, guild_id, is_private=guild_id is None)


def options_of(interaction: discord.Interaction[Any]) -> tuple[str, dict[str, Any], str | None]:
    """The command's name, its options by name, and the option being typed (autocomplete)."""
    data: Any = interaction.data or {}
    options: dict[str, Any] = {}
    focused = None
    for option in data.get("options") or []:
        if "value" in option:
            options[option["name"]] = option["value"]
        if option.get("focused"):
            focused = option["name"]
    return str(data.get("name", "")), options, focused


def invocation_inbound(interaction: discord.Interaction[Any], author: Any) -> Inbound:
    """A slash command as an Inbound: the text is what the person sees in Discord."""
    name, options, _ = options_of(interaction)
    shown = " ".join([f"/{name}", *(str(value) for value in options.values())])
    return Inbound(
        channel=channel_of(interaction),
        author=author,
        text=shown,
        message_id=str(interaction.id),
        addressed=True,
        invocation=Invocation(name, options),
    )


async def answer_autocomplete(interaction: discord.Interaction[Any], found: Sequence[Any]) -> None:
    """Send Discord the suggestions for the option being typed."""
    choices = [
        app_commands.Choice(name=_short(str(value)), value=value) for value in found[:_MAX_CHOICES]
    ]
    try:
        await interaction.response.autocomplete(choices)
    except discord.HTTPException as exc:  # too late, or already answered: nothing to do
        log.debug("autocomplete answer refused: %s", exc)


class InteractionReplies:
    """The adapter for the answers to one slash command (see the module docstring)."""

    platform = "discord"

    def __init__(
        self, adapter: Adapter, interaction: discord.Interaction[Any], *, ephemeral: bool
    ) -> None:
        self._adapter = adapter
        self._interaction = interaction
        self._ephemeral = ephemeral
        base = adapter.limits
        # No typing indicator: a slash command shows "thinking…" once deferred.
        self.limits = PlatformLimits(
            max_chars=base.max_chars, edit_interval_s=base.edit_interval_s, supports_edit=True
        )
        self._lock = asyncio.Lock()
        self._original_shown = False
        self._deferred = False
        self._defer_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(DEFER_AFTER_S, self._defer_soon)

    def _defer_soon(self) -> None:
        self._defer_task = asyncio.create_task(self._defer(), name="discord-defer")

    async def _defer(self) -> None:
        async with self._lock:
            response = self._interaction.response
            if response.is_done():
                return
            try:
                await response.defer(ephemeral=self._ephemeral, thinking=True)
                self._deferred = True
            except discord.HTTPException as exc:
                log.warning("could not defer a slash command: %s", exc)

    def finished(self, handled: asyncio.Future[None]) -> None:
        """The command was handled: one that answered nothing still ends its interaction
        (else Discord shows "thinking…" until the token lapses)."""
        self._timer.cancel()
        if not handled.cancelled() and not self._original_shown:
            self._closing = asyncio.create_task(self._close_unanswered(), name="discord-done")

    async def _close_unanswered(self) -> None:
        async with self._lock:
            if self._original_shown:
                return
            interaction = self._interaction
            try:
                if self._deferred:
                    await interaction.edit_original_response(content=DONE)
                elif not interaction.response.is_done():
                    await interaction.response.send_message(DONE, ephemeral=True)
                self._original_shown = True
            except discord.HTTPException as exc:
                log.debug("could not end an unanswered slash command: %s", exc)

    # -- the Adapter protocol ---------------------------------------------------------

    async def start(self, bot: BotHandle) -> None:
        return None

    async def stop_receiving(self) -> None:
        return None

    async def stop(self) -> None:
        self._timer.cancel()

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        """The first answer is the interaction's response; later ones are follow-ups."""
        ephemeral = self._ephemeral or only_author
        interaction = self._interaction
        async with self._lock:
            self._timer.cancel()
            try:
                if not interaction.response.is_done():
                    await interaction.response.send_message(
                        text, ephemeral=ephemeral, allowed_mentions=discord.AllowedMentions.none()
                    )
                    self._original_shown = True
                    return SentMessage(to, ORIGINAL)
                if self._deferred and not self._original_shown:
                    await interaction.edit_original_response(content=text)
                    self._original_shown = True
                    return SentMessage(to, ORIGINAL)
                message = await interaction.followup.send(
                    text,
                    ephemeral=ephemeral,
                    wait=True,
                    allowed_mentions=discord.AllowedMentions.none(),
                )
            except discord.HTTPException as exc:
                raise DeliveryError(
                    f"Discord refused the answer to /{_name(interaction)}: {exc}"
                ) from None
        return SentMessage(to, str(message.id))

    async def edit(self, sent: SentMessage, text: str) -> None:
        interaction = self._interaction
        try:
            if sent.message_id == ORIGINAL:
                await interaction.edit_original_response(content=text)
            else:
                await interaction.followup.edit_message(int(sent.message_id), content=text)
        except discord.HTTPException as exc:
            raise DeliveryError(
                f"Discord refused an edit of /{_name(interaction)}: {exc}"
            ) from None

    async def typing(self, to: ChannelRef) -> None:
        return None

    def mention(self, user_id: str, name: str) -> str:
        return self._adapter.mention(user_id, name)

    async def fetch_image(self, image: ImageRef, max_bytes: int) -> bytes:
        return await self._adapter.fetch_image(image, max_bytes)

    async def is_moderator(self, channel: ChannelRef, user_id: str) -> bool:
        return await self._adapter.is_moderator(channel, user_id)


def _name(interaction: discord.Interaction[Any]) -> str:
    data: Any = interaction.data or {}
    return str(data.get("name", "?"))
