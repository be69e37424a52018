"""The plugin-facing API: what a context offers, what the core enforces for a command,
and that the bundled plugins use nothing but the documented surface."""

from __future__ import annotations

import ast
import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import llamabot
from llamabot import CommandContext, JobContext, Plugin, UsageError
from llamabot.plugin_loader import bundled_plugins_dir
from llamabot.testing import BotHarness, ModelCall, ScriptedModel

api = Plugin("api")
seen: dict[str, Any] = {}


@api.command("dmonly", where="private")
async def dm_only(ctx: CommandContext[None]) -> None:
    """Only in a private chat."""
    await ctx.reply("private ok")


@api.command("grouponly", where="group")
async def group_only(ctx: CommandContext[None]) -> None:
    """Only in a group."""
    await ctx.reply("group ok")


@api.command("mod", permission="moderator")
async def mod(ctx: CommandContext[None]) -> None:
    """For the group's admins."""
    await ctx.reply("mod ok")


@api.command("adm", permission="admin")
async def adm(ctx: CommandContext[None]) -> None:
    """For the bot's admins."""
    await ctx.reply("adm ok")


@api.command("slow", cooldown="10s")
async def slow(ctx: CommandContext[None]) -> None:
    """Once per ten seconds."""
    await ctx.reply("slow ok")


@api.command("ask", usage="<question>")
async def ask(ctx: CommandContext[None], *words: str) -> None:
    """Ask the model, outside the conversation."""
    if not words:
        raise UsageError("ask something")
    await ctx.reply(await ctx.model.complete(" ".join(words), system="ONE-OFF"))


@api.command("rename", usage="<name>")
async def rename(ctx: CommandContext[None], name: str) -> None:
    """Rename the bot in bot.toml (admins)."""

    def change(document: Any) -> None:
        document["bot"]["name"] = name

    try:
        ctx.admin.edit(change)
    except PermissionError as exc:
        await ctx.reply(f"refused: {exc}")
        return
    await ctx.reply(f"renamed to {ctx.bot_config.bot.name} -> {name}")


@api.command("peek")
async def peek(ctx: CommandContext[None]) -> None:
    """What this conversation's history holds, then forget it."""
    window = await ctx.history.window()
    cleared = await ctx.history.clear()
    await ctx.reply(f"{len(window)} turns; cleared {cleared}; {ctx.mention_author()}")


@api.command("later")
async def later(ctx: CommandContext[None]) -> None:
    """Schedule the other plugin's task (not allowed) and our own (allowed)."""
    when = datetime.now(UTC) + timedelta(hours=1)
    try:
        await ctx.scheduler.run_at(when, other_task, {})
    except ValueError as exc:
        seen["foreign"] = str(exc)
    job = await ctx.scheduler.run_at(when, own_task, {"n": 1})
    seen["pending"] = [j.id for j in await ctx.scheduler.pending(own_task)]
    await ctx.reply(f"scheduled {job.id}")


@api.task
async def own_task(ctx: JobContext[None], data: dict[str, Any]) -> None:
    seen["ran"] = data


other = Plugin("other")


@other.task
async def other_task(ctx: JobContext[None], data: dict[str, Any]) -> None:
    return None


def listed(help_text: str) -> set[str]:
    """The command names a /help answer lists."""
    return {line.split()[0].removeprefix("/") for line in help_text.splitlines()[1:]}


def harness(**kwargs: Any) -> BotHarness:
    return BotHarness(api, other, admins=["console:root"], bundled=True, **kwargs)


async def test_where_a_command_may_run_is_enforced_and_help_shows_only_those() -> None:
    async with harness() as h:
        assert await h.say("/dmonly") == ["private ok"]
        assert await h.say("/grouponly") == ["/grouponly works only in a group or server channel."]
        assert await h.say("/grouponly", group=True) == ["group ok"]
        assert await h.say("/dmonly", group=True) == [
            "/dmonly works only in a private chat with the bot."
        ]
        [in_dm] = await h.say("/help")
        [in_group] = await h.say("/help", group=True, user="bob")
    assert "dmonly" in listed(in_dm) and "grouponly" not in listed(in_dm)
    assert "grouponly" in listed(in_group) and "dmonly" not in listed(in_group)


async def test_help_lists_a_command_only_to_those_who_may_use_it() -> None:
    async with harness() as h:
        [member] = await h.say("/help", group=True, user="bob", moderator=False)
        [moderator] = await h.say("/help", group=True, user="carol", moderator=True)
        [admin] = await h.say("/help", group=True, user="root")
        assert await h.say("/mod", group=True, user="bob", moderator=False) == [
            "In a group, only its admins (and the bot's admins) can use /mod."
        ]
        assert await h.say("/mod", group=True, user="carol", moderator=True) == ["mod ok"]
    assert not {"mod", "adm", "reset"} & listed(member)
    assert "/mod — For the group's admins. (group admins)" in moderator.splitlines()
    assert "adm" not in listed(moderator)
    assert "/adm — For the bot's admins. (admins)" in admin.splitlines()
    assert "mod" in listed(admin)


async def test_a_cooldown_written_as_text_applies_per_person() -> None:
    async with harness() as h:
        assert await h.say("/slow") == ["slow ok"]
        [wait] = await h.say("/slow")
        assert wait.startswith("Please wait ") and wait.endswith("before using /slow again.")
        assert await h.say("/slow", user="bob") == ["slow ok"]
        assert await h.say("/slow", user="root") == ["slow ok"]
        assert await h.say("/slow", user="root") == ["slow ok"]  # admins are exempt


async def test_the_model_service_answers_outside_the_history() -> None:
    def answer(call: ModelCall) -> str:
        return f"[{call.system}] {call.last_user}"

    async with harness(model=ScriptedModel(reply=answer)) as h:
        assert await h.say("/ask what is 2+2") == ["[ONE-OFF] what is 2+2"]
        assert await h.say("/peek") == ["0 turns; cleared 0; @Alice"]


async def test_history_service_reads_and_clears_this_conversation() -> None:
    async with harness() as h:
        await h.say("hello there")
        await h.say("hello elsewhere", user="bob")
        [peeked] = await h.say("/peek")
        assert peeked.startswith("2 turns; cleared 2;")
        [again] = await h.say("/peek")
        assert again.startswith("0 turns;")
        assert (await h.say("/peek", user="bob"))[0].startswith("2 turns;")


async def test_the_config_editor_refuses_non_admins_and_applies_for_admins() -> None:
    async with harness() as h:
        assert await h.say("/rename Evil") == ["refused: only the bot's admins can change bot.toml"]
        assert await h.say("/rename Robo", user="root") == ["renamed to Llama -> Robo"]
        assert h.bot.config.bot.name == "Robo"
        assert 'name = "Robo"' in h.config_path.read_text()


async def test_a_plugin_schedules_only_its_own_tasks() -> None:
    async with harness() as h:
        [reply] = await h.say("/later")
    assert reply.startswith("scheduled ")
    assert "is not a task of plugin api" in seen["foreign"]
    assert seen["pending"] == [reply.removeprefix("scheduled ")]


async def test_call_tool_runs_a_plugins_tool_for_a_person() -> None:
    async with harness() as h:
        result = await h.call_tool("remind", {"when": "nonsense", "text": "x"})
        assert result.startswith("error: say when")
        with pytest.raises(LookupError):
            await h.call_tool("nope", {})


# -- the documented surface -------------------------------------------------------------


def test_everything_in_the_public_api_imports_and_is_documented() -> None:
    for name in llamabot.__all__:
        value = getattr(llamabot, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"llamabot.{name} has no docstring"


def test_the_contexts_never_hand_out_the_bot() -> None:
    for context in (CommandContext, JobContext):
        public = [n for n in dir(context) if not n.startswith("_")]
        assert "bot" not in public and "store" not in public


BUNDLED = sorted(bundled_plugins_dir().glob("*.py"))  # type: ignore[union-attr]


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_a_bundled_plugin_imports_only_the_public_llamabot_namespace(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llamabot"):
            assert node.module == "llamabot", f"{path.name} imports {node.module}"
            for alias in node.names:
                assert alias.name in llamabot.__all__, f"{path.name} imports {alias.name}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("llamabot."), f"{path.name} imports {alias.name}"
