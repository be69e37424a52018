"""The fake Discord's application commands and interactions, as discord.py uses them.

Routes, as Discord API v10 has them:

- ``PUT/GET /applications/{app}/commands``: the global commands, bulk-overwritten; every
  PUT counts as a sync (``command_syncs``), ids stay with a command's name.
- ``POST /interactions/{id}/{token}/callback``: the one response an interaction takes
  (4 a message, 5 deferred "thinking…", 8 autocomplete choices; flags 64 = ephemeral);
  a second one is 400 code 40060. discord.py asks ``with_response``: the answer carries
  the interaction and the message made.
- ``/webhooks/{app}/{token}``: follow-ups (POST), and the original response or a
  follow-up by id (GET, PATCH, DELETE ``messages/@original`` or ``messages/{id}``).
  These carry no bot token, as on Discord. After a deferred response the first
  follow-up fills the "thinking…" message. An expired token is 401 code 50027.

Tests push interactions as a person would use them: ``invoke_command`` (a slash command
with its options, typed from the registered command) and ``autocomplete`` (the person
typing into an option; returns the bot's suggestions). ``FakeInteraction`` records what
the person sees.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.fakes.discord_wire import _body, _body_list, _check_content, _json

if TYPE_CHECKING:
    from tests.fakes.discord import FakeChannel, FakeMessage, FakeUser

Json = dict[str, Any]

EPHEMERAL = 1 << 6
LOADING = 1 << 7
CHAT_INPUT_COMMAND = 20  # the message type of a slash command's response


@dataclass
class FakeInteraction:
    """One interaction and what the person sees of the bot's answer to it."""

    id: str
    token: str
    type: int  # 2 a command, 4 autocomplete
    name: str
    user: FakeUser
    channel: FakeChannel
    options: list[Json]
    payload: Json = field(default_factory=dict)  # INTERACTION_CREATE's data, as sent
    responses: list[int] = field(default_factory=list)  # callback types received
    ephemeral: bool | None = None  # set by the first response that shows something
    original: FakeMessage | None = None
    followups: list[FakeMessage] = field(default_factory=list)
    choices: list[Json] | None = None  # an autocomplete's answer
    expired: bool = False
    created_at: float = field(default_factory=time.monotonic)

    @property
    def deferred(self) -> bool:
        return 5 in self.responses

    @property
    def shown(self) -> list[str]:
        """What the person sees: the response's text (none while "thinking…"), then each
        follow-up's."""
        messages = [m for m in [self.original, *self.followups] if m is not None]
        return [m.content for m in messages if not m.deleted and not _loading(m)]


def _loading(message: FakeMessage) -> bool:
    return bool(message.payload.get("flags", 0) & LOADING)


class InteractionsMixin:
    """Application commands and interactions for :class:`~tests.fakes.discord.FakeDiscord`."""

    # Provided by FakeDiscord.
    application_id: str
    bot_user: FakeUser
    messages: dict[str, FakeMessage]
    _snowflake: Any
    _new_message: Any
    _dispatch: Any
    _notify: Any
    wait_for: Any

    def _init_interactions(self) -> None:
        self.app_commands: list[Json] = []
        self.command_syncs = 0
        self.interactions: dict[str, FakeInteraction] = {}
        self._command_ids: dict[str, str] = {}
        self._by_token: dict[str, FakeInteraction] = {}
        # Discord forgets an interaction not answered within 3 s (then: 10062).
        self.initial_response_window_s = 3.0

    def _add_interaction_routes(self, app: web.Application, api: str) -> None:
        commands = api + "/applications/{app_id}/commands"
        app.router.add_put(commands, self._put_commands)
        app.router.add_get(commands, self._get_commands)
        app.router.add_post(api + "/interactions/{interaction_id}/{token}/callback", self._callback)
        hook = api + "/webhooks/{app_id}/{token}"
        app.router.add_post(hook, self._post_followup)
        app.router.add_get(hook + "/messages/{message_id}", self._get_webhook_message)
        app.router.add_patch(hook + "/messages/{message_id}", self._patch_webhook_message)
        app.router.add_delete(hook + "/messages/{message_id}", self._delete_webhook_message)

    @staticmethod
    def needs_bot_token(path: str) -> bool:
        """Interaction callbacks and webhooks are authorised by their token instead."""
        return "/webhooks/" not in path and "/interactions/" not in path

    # -- what tests do ------------------------------------------------------------------

    async def invoke_command(
        self, user: FakeUser, channel: FakeChannel, name: str, options: Json | None = None
    ) -> FakeInteraction:
        """``user`` runs the slash command ``/name`` with ``options`` in ``channel``."""
        command = self._registered(name)
        typed = {o["name"]: o["type"] for o in command.get("options", [])}
        unknown = sorted(set(options or {}) - set(typed))
        if unknown:
            raise AssertionError(f"/{name} has no option {unknown} (registered: {sorted(typed)})")
        values = [
            {"name": key, "type": typed[key], "value": value}
            for key, value in (options or {}).items()
        ]
        return await self._interact(2, user, channel, command, values)

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        name: str,
        option: str,
        typed: str,
        others: Json | None = None,
    ) -> list[Json]:
        """``user`` types ``typed`` into ``option`` of ``/name``; the bot's suggestions."""
        command = self._registered(name)
        kinds = {o["name"]: o["type"] for o in command.get("options", [])}
        values = [{"name": k, "type": kinds[k], "value": v} for k, v in (others or {}).items()]
        values.append({"name": option, "type": kinds[option], "value": typed, "focused": True})
        interaction = await self._interact(4, user, channel, command, values)
        await self.wait_for(lambda: interaction.choices is not None)
        assert interaction.choices is not None
        return interaction.choices

    def expire_interaction(self, interaction: FakeInteraction) -> None:
        """Its token lapses (Discord: 15 minutes after the interaction)."""
        interaction.expired = True

    def _registered(self, name: str) -> Json:
        command = next((c for c in self.app_commands if c["name"] == name), None)
        if command is None:
            raise AssertionError(
                f"/{name} was never registered (synced: {[c['name'] for c in self.app_commands]})"
            )
        return command

    async def _interact(
        self, kind: int, user: FakeUser, channel: FakeChannel, command: Json, options: list[Json]
    ) -> FakeInteraction:
        interaction = FakeInteraction(
            self._snowflake(),
            secrets.token_urlsafe(24),
            kind,
            command["name"],
            user,
            channel,
            options,
        )
        self.interactions[interaction.id] = interaction
        self._by_token[interaction.token] = interaction
        payload: Json = {
            "id": interaction.id,
            "application_id": self.application_id,
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "channel_id": channel.id,
            "channel": channel.payload(),
            "app_permissions": str((1 << 50) - 1),
            "attachment_size_limit": 10 * 1024 * 1024,
            "locale": "en-US",
            "entitlements": [],
            "data": {
                "id": command["id"],
                "name": command["name"],
                "type": 1,
                "options": options,
            },
        }
        if channel.guild_id is not None:
            payload.update(
                guild_id=channel.guild_id,
                guild_locale="en-US",
                member={
                    **user.member_payload(),
                    "user": user.payload(),
                    "permissions": str((1 << 50) - 1),
                },
                authorizing_integration_owners={"0": channel.guild_id},
                context=0,
            )
        else:
            payload.update(
                user=user.payload(), authorizing_integration_owners={"1": user.id}, context=1
            )
        interaction.payload = payload
        await self._dispatch("INTERACTION_CREATE", payload)
        return interaction

    # -- application commands -----------------------------------------------------------

    async def _put_commands(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["app_id"] != self.application_id:
            return _json({"message": "Unknown Application", "code": 10002}, 404)
        body = _body_list(request)
        stored = []
        for command in body:
            name = command.get("name", "")
            if not isinstance(name, str) or not 1 <= len(name) <= 32 or name != name.lower():
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)
            if not 1 <= len(command.get("description", "")) <= 100:
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)
            command_id = self._command_ids.setdefault(name, self._snowflake())
            stored.append(
                {
                    "id": command_id,
                    "application_id": self.application_id,
                    "version": self._snowflake(),
                    "type": command.get("type", 1),
                    "default_member_permissions": None,
                    "contexts": None,
                    "integration_types": [0],
                    "nsfw": False,
                    **command,
                }
            )
            permissions = stored[-1]["default_member_permissions"]
            if permissions is not None:  # Discord answers a bit set as a string
                stored[-1]["default_member_permissions"] = str(permissions)
        self.app_commands = stored
        self.command_syncs += 1
        return _json(stored)

    async def _get_commands(self, request: web.Request) -> web.StreamResponse:
        return _json(self.app_commands)

    # -- the response to an interaction -------------------------------------------------

    def _interaction_for(self, request: web.Request) -> tuple[FakeInteraction | None, Any]:
        interaction = self._by_token.get(request.match_info["token"])
        if interaction is None:
            return None, _json({"message": "Unknown Webhook", "code": 10015}, 404)
        if interaction.expired:
            return None, _json({"message": "Invalid Webhook Token", "code": 50027}, 401)
        return interaction, None

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        interaction = self.interactions.get(request.match_info["interaction_id"])
        if interaction is None or interaction.token != request.match_info["token"]:
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        late = time.monotonic() - interaction.created_at > self.initial_response_window_s
        if interaction.expired or (late and not interaction.responses):
            return _json({"message": "Unknown interaction", "code": 10062}, 404)
        if interaction.responses:
            return _json(
                {"message": "Interaction has already been acknowledged.", "code": 40060}, 400
            )
        body = _body(request)
        kind = body.get("type")
        data = body.get("data") or {}
        if kind == 8:
            if interaction.type != 4:
                return _json({"message": "Invalid Form Body", "code": 50035}, 400)
            interaction.responses.append(8)
            interaction.choices = list(data.get("choices") or [])
            return web.Response(status=204)
        if kind not in (4, 5) or interaction.type != 2:
            return _json({"message": "Invalid Form Body", "code": 50035}, 400)
        ephemeral = bool(data.get("flags", 0) & EPHEMERAL)
        content = data.get("content") or "" if kind == 4 else ""
        if kind == 4:
            invalid = _check_content(content, data)
            if invalid is not None:
                return invalid
        interaction.responses.append(kind)
        interaction.ephemeral = ephemeral
        flags = (EPHEMERAL if ephemeral else 0) | (LOADING if kind == 5 else 0)
        message = self._answer_message(interaction, content, flags)
        interaction.original = message
        await self._announce("MESSAGE_CREATE", message)
        answer = {
            "interaction": {
                "id": interaction.id,
                "type": 2,
                "response_message_id": message.id,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral,
            },
            "resource": {"type": kind, "message": message.payload},
        }
        if request.query.get("with_response") in ("1", "true"):
            return _json(answer)
        return web.Response(status=204)

    def _answer_message(
        self, interaction: FakeInteraction, content: str, flags: int
    ) -> FakeMessage:
        channel = interaction.channel
        message = self._new_message(channel, self.bot_user, content, None, channel.guild_id)
        message.payload["type"] = CHAT_INPUT_COMMAND
        message.payload["flags"] = flags
        message.payload["webhook_id"] = self.application_id
        message.payload["interaction_metadata"] = {
            "id": interaction.id,
            "type": 2,
            "user": interaction.user.payload(),
            "authorizing_integration_owners": {},
            "name": interaction.name,
        }
        message.posted_at = time.monotonic()
        if flags & EPHEMERAL:
            message.ephemeral_to = interaction.user.id
        return message

    # -- follow-ups and the original response -------------------------------------------

    async def _post_followup(self, request: web.Request) -> web.StreamResponse:
        interaction, error = self._interaction_for(request)
        if interaction is None:
            return error
        if not interaction.responses:
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        body = _body(request)
        content = body.get("content") or ""
        invalid = _check_content(content, body)
        if invalid is not None:
            return invalid
        original = interaction.original
        if original is not None and _loading(original):
            # The first follow-up after "thinking…" takes its place.
            self._set_content(original, content, loading=False)
            await self._announce("MESSAGE_UPDATE", original)
            return (
                _json(original.payload)
                if request.query.get("wait") in ("true", "1")
                else (web.Response(status=204))
            )
        ephemeral = bool(body.get("flags", 0) & EPHEMERAL)
        message = self._answer_message(interaction, content, EPHEMERAL if ephemeral else 0)
        interaction.followups.append(message)
        await self._announce("MESSAGE_CREATE", message)
        if request.query.get("wait") in ("true", "1"):
            return _json(message.payload)
        return web.Response(status=204)

    def _webhook_message(self, request: web.Request) -> tuple[FakeMessage | None, Any]:
        """The original response (``@original``) or a follow-up the URL names; else the
        error Discord answers (an unknown or expired token, an unknown message)."""
        interaction, error = self._interaction_for(request)
        if interaction is None:
            return None, error
        wanted = request.match_info["message_id"]
        message = (
            interaction.original
            if wanted == "@original"
            else next((m for m in interaction.followups if m.id == wanted), None)
        )
        if message is None or message.deleted:
            return None, _json({"message": "Unknown Message", "code": 10008}, 404)
        return message, None

    async def _get_webhook_message(self, request: web.Request) -> web.StreamResponse:
        message, error = self._webhook_message(request)
        if message is None:
            return error
        return _json(message.payload)

    async def _patch_webhook_message(self, request: web.Request) -> web.StreamResponse:
        message, error = self._webhook_message(request)
        if message is None:
            return error
        body = _body(request)
        if "content" in body:
            content = body["content"] or ""
            invalid = _check_content(content, body)
            if invalid is not None:
                return invalid
            self._set_content(message, content, loading=False)
        await self._announce("MESSAGE_UPDATE", message)
        return _json(message.payload)

    async def _delete_webhook_message(self, request: web.Request) -> web.StreamResponse:
        message, error = self._webhook_message(request)
        if message is None:
            return error
        message.deleted = True
        await self._notify()
        return web.Response(status=204)

    async def _announce(self, event: str, message: FakeMessage) -> None:
        """The channel learns of an answer everyone sees (an ephemeral one: nobody)."""
        if message.ephemeral_to is None:
            await self._dispatch(event, message.payload)
        await self._notify()

    @staticmethod
    def _set_content(message: FakeMessage, content: str, *, loading: bool) -> None:
        flags = message.payload.get("flags", 0)
        message.payload["flags"] = flags | LOADING if loading else flags & ~LOADING
        message.show(content)
