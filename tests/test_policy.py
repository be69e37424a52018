"""Flood control, fair turns, the access policy and command permissions, in the router."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llamabot import CommandContext, Plugin
from llamabot.app import Bot
from llamabot.config import Config
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import BASE_TOML, MakeConfig

GROUP = "telegram:grp"


def bot(config: Config, model: ScriptedModel, adapter: FakePlatform, *plugins: Plugin) -> Bot:
    host = PluginHost()
    for plugin in plugins:
        host.add(plugin, "test", config)
    return Bot(config, model=model, adapters=[adapter], plugins=host)


def telegram() -> FakePlatform:
    return FakePlatform(platform="telegram")


def in_group(adapter: FakePlatform, text: str, user: str, **kw: object) -> asyncio.Future[None]:
    return adapter.say(text, chat="grp", private=False, addressed=True, user=user, **kw)  # type: ignore[arg-type]


def asked(model: ScriptedModel) -> list[str]:
    """What each model call answered, without the "Name: " a group message carries."""
    return [call.last_user.split(": ", 1)[-1] for call in model.calls]


def notices(adapter: FakePlatform, key: str, needle: str) -> list[str]:
    return [text for text in adapter.messages_in(key) if needle in text]


# -- flood control and fair turns -----------------------------------------------------------


async def test_a_flooder_gets_a_bounded_share_and_one_notice_and_others_go_first(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    adapter = telegram()
    async with bot(make_config(), model, adapter) as running:
        flood = [in_group(adapter, f"flood {i}", "mallory") for i in range(50)]
        others = [in_group(adapter, f"hello from {name}", name) for name in ("ann", "bob")]
        await asyncio.gather(*flood, *others)
        await running.wait_idle()
    # Three of Mallory's messages wait at most; Ann and Bob each take their turn after
    # Mallory's first, not after all of Mallory's.
    assert asked(model) == ["flood 0", "hello from ann", "hello from bob", "flood 1", "flood 2"]
    assert len(notices(adapter, GROUP, "Slow down")) == 1


async def test_each_persons_messages_keep_their_order_between_turns(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    limits = "\n[limits]\nmax_queued_per_person = 10\nburst = 10\n"
    adapter = telegram()
    async with bot(make_config(BASE_TOML + limits), model, adapter):
        waiting = [in_group(adapter, f"a{i}", "ann") for i in range(4)]
        waiting += [in_group(adapter, f"b{i}", "bob") for i in range(2)]
        await asyncio.gather(*waiting)
    assert asked(model) == ["a0", "b0", "a1", "b1", "a2", "a3"]


async def test_the_message_rate_refills_and_the_notice_is_not_repeated(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    limits = "\n[limits]\nburst = 2\nmessages_per_minute = 0.001\n"
    adapter = telegram()
    async with bot(make_config(BASE_TOML + limits), model, adapter):
        for i in range(5):
            await adapter.say(f"dm {i}", chat="ann-dm", user="ann")
    assert asked(model) == ["dm 0", "dm 1"]
    assert len(notices(adapter, "telegram:ann-dm", "faster than I answer")) == 1


async def test_admins_are_not_flood_limited(make_config: MakeConfig, model: ScriptedModel) -> None:
    config = make_config(
        BASE_TOML.replace('admins = ["console:admin"]', 'admins = ["telegram:boss"]')
        + "\n[limits]\nburst = 1\nmax_queued_per_person = 1\n"
    )
    adapter = telegram()
    async with bot(config, model, adapter):
        await asyncio.gather(*(in_group(adapter, f"boss {i}", "boss") for i in range(4)))
    assert len(model.calls) == 4


async def test_one_person_cannot_fill_every_conversation(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    model.gate = asyncio.Event()
    adapter = telegram()
    async with bot(make_config(), model, adapter):
        held = [
            adapter.say(
                "thread", chat="grp", thread=str(n), private=False, addressed=True, user="m"
            )
            for n in range(3)
        ]
        await adapter.changed.wait()  # the notice for the third thread
        model.gate.set()
        await asyncio.gather(*held)
    assert len(model.calls) == 2
    assert notices(adapter, "telegram:grp:2", "other chats")


async def test_a_busy_conversation_takes_no_more_than_its_cap(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    limits = "\n[limits]\nmax_queued_per_conversation = 3\n"
    adapter = telegram()
    async with bot(make_config(BASE_TOML + limits), model, adapter):
        await asyncio.gather(*(in_group(adapter, f"hi {n}", f"user{n}") for n in range(6)))
    assert len(model.calls) == 3
    assert len(notices(adapter, GROUP, "This chat is busy")) == 3  # one per person skipped


async def test_a_binding_can_loosen_the_limits_for_its_chat(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    binding = (
        '\n[[bindings]]\nplatform = "telegram"\nchannel = "grp"\npersona = "pirate"\n'
        "[bindings.limits]\nmax_queued_per_person = 8\nburst = 8\n"
    )
    adapter = telegram()
    async with bot(make_config(BASE_TOML + binding), model, adapter):
        await asyncio.gather(*(in_group(adapter, f"m {n}", "ann") for n in range(8)))
        await asyncio.gather(*(adapter.say(f"dm {n}", chat="dm", user="ann") for n in range(8)))
    assert len([text for text in asked(model) if text.startswith("m ")]) == 8
    assert len([text for text in asked(model) if text.startswith("dm ")]) < 8


async def test_a_command_cooldown_tells_the_person_to_wait(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    plugin = Plugin("ping")

    @plugin.command("ping", cooldown="1m")
    async def ping(ctx: CommandContext) -> None:
        await ctx.reply("pong")

    adapter = telegram()
    async with bot(make_config(), model, adapter, plugin):
        for _ in range(3):
            await adapter.say("/ping", chat="dm", user="ann")
    assert adapter.messages_in("telegram:dm") == [
        "pong",
        "Please wait 60 s before using /ping again.",
    ]


# -- access --------------------------------------------------------------------------------


ACCESS = BASE_TOML + '\n[access]\nallowed_users = ["telegram:ann", "@bobby"]\n'


async def test_strangers_in_groups_are_refused_once_and_never_reach_the_model(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    adapter = telegram()
    async with bot(make_config(ACCESS), model, adapter) as running:
        await in_group(adapter, "let me in", "mallory")
        await in_group(adapter, "please", "mallory")
        await in_group(adapter, "/reset", "mallory")
        await adapter.say("just chatting", chat="grp", private=False, user="mallory")
        await in_group(adapter, "hi", "ann")
        await in_group(adapter, "hi too", "b42", username="bobby")
        await running.wait_idle()
    assert asked(model) == ["hi", "hi too"]
    (refusal,) = notices(adapter, GROUP, "admin has listed")
    assert "telegram:mallory" in refusal


async def test_blocked_users_dms_and_channels(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    rules = (
        '\n[access]\nblocked_users = ["mallory"]\ndms = false\n'
        'blocked_channels = ["telegram:quiet"]\n'
    )
    adapter = telegram()
    async with bot(make_config(BASE_TOML + rules), model, adapter):
        await in_group(adapter, "hi", "mallory")
        await adapter.say("a dm", chat="dm", user="ann")
        await adapter.say("here?", chat="quiet", private=False, addressed=True, user="ann")
        await in_group(adapter, "hello", "ann")
    assert asked(model) == ["hello"]
    assert notices(adapter, GROUP, "not allowed to use this bot")
    assert notices(adapter, "telegram:dm", "does not answer direct messages")
    assert notices(adapter, "telegram:quiet", "does not answer in this chat")


async def test_roles_gate_servers_and_a_binding_can_open_its_channel(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    rules = (
        '\n[access]\nallowed_roles = ["Member"]\n'
        '\n[[bindings]]\nplatform = "discord"\nchannel = "lobby"\npersona = "assistant"\n'
        "[bindings.access]\nallowed_roles = []\n"
    )
    adapter = FakePlatform(platform="discord")

    def say(text: str, chat: str, roles: tuple[str, ...]) -> asyncio.Future[None]:
        return adapter.say(
            text, chat=chat, guild="g", private=False, addressed=True, user="ann", roles=roles
        )

    async with bot(make_config(BASE_TOML + rules), model, adapter):
        await say("no role", "general", ())
        await say("with role", "general", ("123", "member"))
        await say("lobby", "lobby", ())
    assert asked(model) == ["with role", "lobby"]
    assert notices(adapter, "discord:general", "role Member")


# -- command permissions -------------------------------------------------------------------


def reset_plugin() -> Plugin:
    plugin = Plugin("reset")

    @plugin.command("reset", permission="moderator")
    async def reset(ctx: CommandContext) -> None:
        await ctx.reply("forgot")

    return plugin


async def test_reset_in_a_group_is_for_its_admins_and_in_a_dm_for_the_person(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    adapter = telegram()
    adapter.moderators.add("mod")
    async with bot(make_config(), model, adapter, reset_plugin()):
        await in_group(adapter, "/reset", "ann")
        await in_group(adapter, "/reset", "mod")
        await adapter.say("/reset", chat="ann-dm", user="ann")
    assert adapter.messages_in(GROUP) == [
        "In a group, only its admins (and the bot's admins) can use /reset.",
        "forgot",
    ]
    assert adapter.messages_in("telegram:ann-dm") == ["forgot"]


async def test_access_commands_overrides_a_commands_permission(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    config = make_config(BASE_TOML + '\n[access.commands]\nreset = "everyone"\n')
    adapter = telegram()
    async with bot(config, model, adapter, reset_plugin()):
        await in_group(adapter, "/reset", "ann")
    assert adapter.messages_in(GROUP) == ["forgot"]


# -- plugins cannot freeze the bot ----------------------------------------------------------


async def test_a_hung_hook_or_command_is_cancelled_and_named(
    make_config: MakeConfig, model: ScriptedModel, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = Plugin("sleepy")
    forever = asyncio.Event()

    @plugin.on_message
    async def stall(ctx: CommandContext) -> bool:
        await forever.wait()
        return True

    @plugin.command("stall")
    async def stall_command(ctx: CommandContext) -> None:
        await forever.wait()

    config = make_config(BASE_TOML + "\n[plugins]\nhook_timeout_s = 0.2\n")
    adapter = telegram()
    with caplog.at_level(logging.WARNING):
        async with bot(config, model, adapter, plugin):
            await adapter.say("hello", chat="dm", user="ann")
            await adapter.say("/stall", chat="dm", user="ann")
    assert adapter.messages_in("telegram:dm") == [
        "echo: hello",
        "Sorry, /stall took too long and was stopped. The admin log has details.",
    ]
    warned = [r.getMessage() for r in caplog.records if "hook_timeout_s" in r.getMessage()]
    assert any("message hook stall of plugin sleepy" in line for line in warned)
    assert any("command /stall of plugin sleepy" in line for line in warned)
