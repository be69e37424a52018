"""The bundled plugins, used as people use them: through a running Bot and its commands."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from llamabot.app import Bot
from llamabot.config import load_config
from llamabot.events import ChannelRef
from llamabot.plugin_loader import bundled_plugins_dir
from llamabot.plugins import UsageError
from llamabot.storage.models import Message
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import BASE_TOML, MakeConfig
from tests.test_scheduler import warp

LOCAL = "console:local"
GROUP = "console:grp"
FOLDERS = Path(__file__).parent / "fakes" / "plugins"

BOT_TOML = """\
# The admin's own file: these comments must survive every change the bot makes.
[storage]
url = "sqlite+aiosqlite:///{db}"   # the history lives here

[bot]
admins = ["console:admin"]  # only me
timezone = "Europe/Berlin"

[llm]
backend = "embedded"

[personas.assistant]
prompt = "You are a helpful assistant."
model = "scripted"   # the model for everyday use

[personas.pirate]
prompt = "You are a pirate."
model = "llama3.2"

[[bindings]]
platform = "console"
channel = "local"
persona = "assistant"
respond = "always"   # answer everything here

[plugins]
dirs = [{dirs}]
"""


def private(chat: str) -> ChannelRef:
    return ChannelRef("console", chat, is_private=True)


def bundled(name: str) -> ModuleType:
    """A bundled plugin's module, imported on its own."""
    folder = bundled_plugins_dir()
    assert folder is not None
    spec = importlib.util.spec_from_file_location(f"bundled_{name}", folder / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(tmp_path: Path, *folders: str) -> Path:
    path = tmp_path / "bot.toml"
    dirs = ", ".join(f'"{FOLDERS / folder}"' for folder in folders)
    path.write_text(BOT_TOML.format(db=tmp_path / "bot.db", dirs=dirs))
    return path


def running(path: Path, adapter: FakePlatform, model: ScriptedModel | None = None) -> Bot:
    return Bot(
        load_config(path), config_path=path, model=model or ScriptedModel(), adapters=[adapter]
    )


def group(adapter: FakePlatform, text: str, user: str = "alice") -> asyncio.Future[None]:
    return adapter.say(text, chat="grp", private=False, addressed=True, user=user)


def last(adapter: FakePlatform, key: str = LOCAL) -> str:
    return adapter.messages_in(key)[-1]


async def wait_for_text(adapter: FakePlatform, needle: str) -> str:
    """Wait until the adapter sent a message containing ``needle``; return its text."""
    async with asyncio.timeout(10):
        while True:
            for call in adapter.calls:
                if call.kind == "send" and needle in call.text:
                    return call.text
            adapter.changed.clear()
            await adapter.changed.wait()


# -- help -------------------------------------------------------------------------------


async def test_help_lists_the_commands_a_person_may_use(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path, "good"), adapter):
        await adapter.say("/help", user="mallory")
        for_people = last(adapter)
        await adapter.say("/help", user="admin")
        for_admins = last(adapter)
        await adapter.say("/help remind")
        one = last(adapter)
        await adapter.say("/help nothing")
        missing = last(adapter)
    assert for_people.startswith("Commands:\n")
    assert "/remind <when> <text> — Remind you: /remind 10m stretch" in for_people
    assert "/add <a> <b> — Add two whole numbers." in for_people
    assert "/shutdown" not in for_people
    assert "/shutdown — Pretend to do something only admins may. (admins)" in for_admins
    assert one.startswith("/remind <when> <text>\nRemind you:")
    assert missing == "There is no command /nothing. Send /help for the list."


# -- reset and forgetme -----------------------------------------------------------------


async def test_reset_forgets_only_this_conversation(tmp_path: Path, adapter: FakePlatform) -> None:
    model = ScriptedModel()
    async with running(write_config(tmp_path), adapter, model) as bot:
        await adapter.say("one")
        await adapter.say("elsewhere", chat="other")
        await adapter.say("/reset")
        assert last(adapter) == "Forgot 2 messages of this conversation. The model starts fresh."
        await adapter.say("/reset")
        assert last(adapter) == "This conversation has no history; the model already starts fresh."
        await adapter.say("two")
        other = await bot.store.conversation_id(private("other"))
        assert await bot.store.count(other) == 2
    assert [m.content for m in model.calls[-1].messages[1:]] == ["two"]


async def test_forgetme_removes_only_that_persons_messages(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path), adapter) as bot:
        await group(adapter, "hi from alice")
        await group(adapter, "hi from bob", user="bob")
        await adapter.say("alice in private", user="alice", chat="alice-dm")
        await group(adapter, "/forgetme")
        answer = last(adapter, GROUP)
        async with bot.store.engine.connect() as conn:
            rows = (await conn.execute(select(Message.role, Message.author_id))).all()
    assert answer == "Deleted 2 messages of yours from every conversation."
    assert sorted(author for role, author in rows if role == "user") == ["console:bob"]
    assert [role for role, _ in rows].count("assistant") == 3  # the bot's replies stay


async def test_forgetme_also_cancels_the_persons_pending_reminders(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path), adapter):
        await group(adapter, "/remind 2h the secret plan")
        await group(adapter, "/remind 3h bob's own thing", user="bob")
        await group(adapter, "/forgetme")
        answer = last(adapter, GROUP)
        await group(adapter, "/reminders")
        alice_left = last(adapter, GROUP)
        await group(adapter, "/reminders", user="bob")
        bob_left = last(adapter, GROUP)
    assert answer.endswith(", and cancelled 1 pending reminder(s).")
    assert alice_left == "You have no reminders pending."
    assert "bob's own thing" in bob_left


# -- persona ----------------------------------------------------------------------------


async def test_persona_shows_and_lists(tmp_path: Path, adapter: FakePlatform) -> None:
    async with running(write_config(tmp_path), adapter):
        await adapter.say("/persona")
        shown = last(adapter)
        await adapter.say("/persona list")
        listed = last(adapter)
        await adapter.say("/persona dance")
        wrong = last(adapter)
    assert shown == "This conversation uses the persona assistant (model scripted)."
    assert listed == "Personas:\nassistant — scripted (this conversation)\npirate — llama3.2"
    assert wrong == "Usage: /persona [list | set NAME] (action must be list or set)"


async def test_persona_set_writes_a_binding_keeping_the_admins_comments(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    model = ScriptedModel()
    async with running(path, adapter, model) as bot:
        await adapter.say("/persona set pirate", chat="ship", user="mallory")
        refused = last(adapter, "console:ship")
        assert path.read_text() == before
        await adapter.say("/persona set parrot", chat="ship", user="admin")
        unknown = last(adapter, "console:ship")
        await adapter.say("/persona set pirate", chat="ship", user="admin")
        done = last(adapter, "console:ship")
        await adapter.say("ahoy?", chat="ship")
        assert bot.config.persona_for(private("ship")).name == "pirate"
    assert refused == "Only the bot's admins can use /persona set."
    assert unknown.startswith("There is no persona 'parrot'.")
    assert done == "This conversation now uses the persona pirate; bot.toml keeps the binding."
    assert model.calls[-1].system == "You are a pirate."
    assert path.read_text() == before.replace(
        "[plugins]\n",
        "[[bindings]] # set with /persona set by console:admin\n"
        'platform = "console"\nchannel = "ship"\npersona = "pirate"\n\n[plugins]\n',
    )
    assert load_config(path).persona_for(private("ship")).name == "pirate"


async def test_persona_set_changes_an_existing_binding_in_place(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    async with running(path, adapter):
        await adapter.say("/persona set pirate", user="admin")
    after = path.read_text()
    assert after == before.replace(
        'channel = "local"\npersona = "assistant"', 'channel = "local"\npersona = "pirate"'
    )
    assert 'respond = "always"   # answer everything here' in after


# -- models -----------------------------------------------------------------------------


async def test_models_lists_and_admins_set_a_personas_model(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    path = write_config(tmp_path)
    before = path.read_text()
    async with running(path, adapter) as bot:
        await adapter.say("/models")
        listed = last(adapter)
        await adapter.say("/models set pirate scripted")
        refused = last(adapter)
        await adapter.say("/models set pirate nope", user="admin")
        unknown = last(adapter)
        await adapter.say("/models set pirate scripted", user="admin")
        done = last(adapter)
        assert bot.config.personas["pirate"].model == "scripted"
    assert listed == "Models:\nscripted — used by assistant"
    assert refused == "Only the bot's admins can use /models set."
    assert unknown == "The backend has no model 'nope'; /models lists the ones it has."
    assert done == "The persona pirate now uses the model scripted."
    assert path.read_text() == before.replace(
        'prompt = "You are a pirate."\nmodel = "llama3.2"',
        'prompt = "You are a pirate."\nmodel = "scripted"',
    )


# -- stats ------------------------------------------------------------------------------


async def test_stats_counts_this_conversation_and_all(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path), adapter):
        await adapter.say("one", user="admin")
        await adapter.say("two", user="admin")
        await adapter.say("three", chat="other", user="admin")
        await adapter.say("/stats", user="admin")
    here, overall = last(adapter).split("\n")
    assert re.fullmatch(
        r"This conversation: 4 messages, \d+ tokens, median reply time \d+\.\d s\.", here
    )
    assert re.fullmatch(
        r"Overall \(2 conversations\): 6 messages, \d+ tokens, median reply time \d+\.\d s\.",
        overall,
    )


async def test_stats_shows_a_non_admin_only_this_conversation_and_their_own(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path), adapter):
        await adapter.say("mine", user="bob")
        await adapter.say("not mine", chat="other", user="carol")
        await adapter.say("also not mine", chat="third", user="dave")
        await adapter.say("/stats", user="bob")
    here, yours = last(adapter).split("\n")
    assert here.startswith("This conversation: 2 messages")  # Bob's and the reply
    # Bob's own message, never the other conversations' figures.
    assert re.fullmatch(r"Your messages, everywhere: 1 message, \d+ tokens\.", yours)
    assert "Overall" not in last(adapter)


# -- remind -----------------------------------------------------------------------------


def test_when_a_reminder_is_due() -> None:
    parse_when = bundled("remind").parse_when
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2026, 6, 1, 12, 0, tzinfo=berlin)
    assert parse_when(["10m", "stretch"], now) == (now + timedelta(minutes=10), 1)
    assert parse_when(["2h30m"], now) == (now + timedelta(hours=2, minutes=30), 1)
    due, used = parse_when(["2026-12-24", "18:00", "presents"], now)
    assert (due, used) == (datetime(2026, 12, 24, 18, 0, tzinfo=berlin), 2)
    assert due.utcoffset() == timedelta(hours=1)  # winter time in Berlin
    assert parse_when(["09:30"], now)[0] == datetime(2026, 6, 2, 9, 30, tzinfo=berlin)
    assert parse_when(["2026-07-01T08:15"], now)[0] == datetime(2026, 7, 1, 8, 15, tzinfo=berlin)
    for wrong in (["soon"], ["0m"], ["2026-13-01", "10:00"], ["25:00"], []):
        with pytest.raises(UsageError):
            parse_when(wrong, now)


def test_a_duration_counts_real_time_across_a_daylight_saving_change() -> None:
    parse_when = bundled("remind").parse_when
    berlin = ZoneInfo("Europe/Berlin")
    # 2026-10-25: at 03:00 summer time the clocks go back to 02:00; that night has 25 hours.
    now = datetime(2026, 10, 25, 1, 30, tzinfo=berlin)
    due, _ = parse_when(["2h"], now)
    assert due.astimezone(UTC) - now.astimezone(UTC) == timedelta(hours=2)
    assert (due.hour, due.minute, due.utcoffset()) == (2, 30, timedelta(hours=1))
    # 2026-03-29: at 02:00 the clocks go forward to 03:00; "in 1h" from 01:30 is 03:30.
    now = datetime(2026, 3, 29, 1, 30, tzinfo=berlin)
    due, _ = parse_when(["1h"], now)
    assert (due.hour, due.minute, due.utcoffset()) == (3, 30, timedelta(hours=2))
    # A clock time stays on the wall clock: 09:00 after the change is 09:00 winter time.
    due, _ = parse_when(["09:00"], datetime(2026, 10, 24, 22, 0, tzinfo=berlin))
    assert (due.day, due.hour, due.utcoffset()) == (25, 9, timedelta(hours=1))


async def test_remind_lists_and_cancels_only_the_persons_own(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    async with running(write_config(tmp_path), adapter):
        await group(adapter, "/remind 2h30m call  mum")
        confirmed = last(adapter, GROUP)
        reminder = re.search(r"Reminder (\w+);", confirmed)
        assert reminder is not None, confirmed
        rid = reminder.group(1)
        await adapter.say("/remind 1h the secret thing", user="alice", chat="alice-dm")
        await group(adapter, f"/unremind {rid}", user="bob")
        bobs_try = last(adapter, GROUP)
        await group(adapter, "/reminders", user="bob")
        bobs_list = last(adapter, GROUP)
        await group(adapter, "/reminders")
        in_group = last(adapter, GROUP)
        await adapter.say("/reminders", user="alice", chat="alice-dm")
        in_private = last(adapter, "console:alice-dm")
        await group(adapter, f"/unremind {rid.upper()}")
        cancelled = last(adapter, GROUP)
        await group(adapter, "/reminders")
        after = last(adapter, GROUP)
    assert re.fullmatch(
        rf"OK, I'll remind you at \d\d:\d\d \(in 2h30m\)\. Reminder {rid}; "
        rf"cancel it with /unremind {rid}\.",
        confirmed,
    )
    assert bobs_try == f"You have no reminder {rid}; /reminders lists yours."
    assert bobs_list == "You have no reminders pending."
    assert in_group.startswith(f"Your reminders:\n{rid} — ")
    assert in_group.endswith(" — call  mum\n…and 1 set in other chats; send /reminders privately.")
    assert "the secret thing" not in in_group
    assert "the secret thing" in in_private and "call  mum" in in_private
    assert cancelled == f"Cancelled reminder {rid}."
    assert "secret" not in after and "call  mum" not in after


async def test_remind_answers_with_its_usage(tmp_path: Path, adapter: FakePlatform) -> None:
    async with running(write_config(tmp_path), adapter):
        await adapter.say("/remind")
        no_time = last(adapter)
        await adapter.say("/remind 10m")
        no_text = last(adapter)
        await adapter.say("/remind 2020-01-01 10:00 the past")
        past = last(adapter)
    assert no_time == (
        "Usage: /remind <when> <text> (say when: 10m, 2h30m, 18:00 or 2026-12-24 18:00)"
    )
    assert no_text == "Usage: /remind <when> <text> (what should I remind you of?)"
    assert past == "2020-01-01 10:00 has passed; say a time in the future."


async def test_a_reminder_set_before_a_restart_is_delivered_once_after_it(
    tmp_path: Path, adapter: FakePlatform
) -> None:
    path = write_config(tmp_path)
    async with running(path, adapter):
        await group(adapter, "/remind 1h stretch")
        await adapter.say("/remind 1h drink water", chat="alice-dm")
    assert not any("⏰" in call.text for call in adapter.calls)

    # Bring the reminders close: due in a moment, while the bot is still down.
    moved = warp(tmp_path / "bot.db", datetime.now(UTC) + timedelta(seconds=1))
    assert len(moved) == 2
    async with running(path, adapter):
        in_group = await wait_for_text(adapter, "Reminder for")
        in_private = await wait_for_text(adapter, "Reminder: drink water")
    assert in_group == "⏰ Reminder for @Alice: stretch"
    assert in_private == "⏰ Reminder: drink water"

    async with running(path, adapter):
        await group(adapter, "/reminders")
        assert last(adapter, GROUP) == "You have no reminders pending."
    reminders = [call.text for call in adapter.calls if call.kind == "send" and "⏰" in call.text]
    assert reminders == [in_group, in_private]


async def test_forgetme_and_stats_work_on_every_database(
    make_store_config: MakeConfig, adapter: FakePlatform, tmp_path: Path
) -> None:
    config = make_store_config(BASE_TOML)
    bot = Bot(config, config_path=tmp_path / "bot.toml", model=ScriptedModel(), adapters=[adapter])
    async with bot:
        await adapter.say("hello")
        await adapter.say("/stats")
        assert last(adapter).startswith("This conversation: 2 messages")
        await adapter.say("/forgetme")
        assert last(adapter).startswith("Deleted 1 message of yours")
        assert await bot.store.count() == 1  # the bot's reply stays
