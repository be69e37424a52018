"""One reply start to finish, when things go wrong: every failure has a face."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Connection

from llamabot.app import Bot
from llamabot.config import parse_config
from llamabot.conversation import STORE_FAILURE, UNEXPECTED_FAILURE
from llamabot.llm.errors import ReplyCut
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import BASE_TOML, MakeConfig

KEY = "console:local"


def bot(config: object, model: ScriptedModel, adapter: FakePlatform) -> Bot:
    return Bot(config, model=model, adapters=[adapter], plugins=PluginHost())  # type: ignore[arg-type]


def replies(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT status, content FROM messages WHERE role = 'assistant' ORDER BY id"
        ).fetchall()


async def test_a_bug_in_a_backend_ends_the_reply_with_a_notice_and_a_failed_row(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel(error=KeyError("message"), error_after=2, chunk=4)
    adapter = FakePlatform()
    async with bot(make_config(), model, adapter):
        await adapter.say("hello there")
        model.error = None
        await adapter.say("still there?")
    broken, answered = adapter.messages_in(KEY)
    assert broken.startswith("echo: he") and UNEXPECTED_FAILURE in broken
    assert answered.startswith("echo:")
    assert [status for status, _ in replies(tmp_path / "bot.db")] == ["failed", "ok"]


async def test_a_bug_before_any_text_still_answers_the_person(make_config: MakeConfig) -> None:
    model = ScriptedModel(error=TypeError("NoneType is not iterable"))
    adapter = FakePlatform()
    async with bot(make_config(), model, adapter):
        await adapter.say("hello")
    assert adapter.messages_in(KEY) == [UNEXPECTED_FAILURE]


async def test_a_reply_cut_at_the_token_limit_is_marked_and_stored_as_cut(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel(error=ReplyCut("num_predict"), error_after=2, chunk=4)
    adapter = FakePlatform()
    async with bot(make_config(), model, adapter):
        await adapter.say("count to ten")
    [shown] = adapter.messages_in(KEY)
    assert shown == "echo: count to ten"[:8] + " … [cut: max tokens]"
    assert replies(tmp_path / "bot.db") == [("cut", "echo: co")]


async def test_a_full_database_is_said_not_swallowed(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    model = ScriptedModel()
    adapter = FakePlatform()
    async with bot(make_config(), model, adapter) as running:
        await adapter.say("first")

        def fill(conn: Connection) -> None:
            # SQLite's own "database or disk is full" (SQLITE_FULL), as on a full disk.
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
            conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")

        await running.store._unit(fill)
        await adapter.say("y" * 15_000)  # needs new pages
    first, refused = adapter.messages_in(KEY)
    assert first == "echo: first"
    assert refused == STORE_FAILURE
    assert len(model.calls) == 1  # the model was not asked: its answer could not be kept


async def test_hot_reload_puts_new_timeouts_in_force(make_config: MakeConfig) -> None:
    model = ScriptedModel()
    async with bot(make_config(), model, FakePlatform()) as running:
        text = BASE_TOML.replace('backend = "embedded"', 'backend = "embedded"\nidle_timeout = 7')
        running.apply_config(parse_config(text, Path("bot.toml")))
    assert model.timeouts == (120.0, 7.0)


@dataclass
class CountingModel(ScriptedModel):
    """Records every text it was asked to count tokens of."""

    counted: list[str] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        self.counted.append(text)
        return super().count_tokens(text)


async def test_the_persona_prompt_is_counted_once_not_per_message(
    make_config: MakeConfig,
) -> None:
    # The embedded model's tokenizer takes ~0.4 ms for a 300-character prompt.
    config = make_config()
    prompt = config.personas[config.bot.default_persona].prompt
    model = CountingModel()
    adapter = FakePlatform()
    async with bot(config, model, adapter):
        for text in ("one", "two", "three"):
            await adapter.say(text)
    assert len(adapter.messages_in(KEY)) == 3
    assert model.counted.count(prompt) == 1
