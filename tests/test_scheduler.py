"""The scheduler: jobs in the bot's database, run on its loop, once, also across restarts."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import text

from llamabot import JobContext, Plugin
from llamabot.app import Bot
from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.plugin_host import PluginHost
from llamabot.scheduler import Scheduler
from llamabot.storage.engine import sync_url
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import MakeConfig


@contextmanager
def job_store(db: Path | str) -> Iterator[BackgroundScheduler]:
    """APScheduler itself on the bot's job store, paused: for looking and changing only.

    ``db`` is an SQLite file or the bot's ``[storage] url``.
    """
    url = f"sqlite:///{db}" if isinstance(db, Path) else sync_url(db).render_as_string(False)
    scheduler = BackgroundScheduler(jobstores={"default": SQLAlchemyJobStore(url=url)})
    scheduler.start(paused=True)
    try:
        yield scheduler
    finally:
        # Out first: shutting down wakes the scheduler's thread for a last pass over due jobs.
        scheduler.remove_jobstore("default")
        scheduler.shutdown(wait=False)


def warp(db: Path | str, when: datetime) -> list[str]:
    """Move every stored job's next run to ``when``, as if time passed while the bot was down.

    Returns the ids of the jobs moved.
    """
    with job_store(db) as scheduler:
        ids = [job.id for job in scheduler.get_jobs()]
        for job_id in ids:
            scheduler.modify_job(job_id, next_run_time=when)
    return ids


def stored_ids(db: Path | str) -> list[str]:
    """The ids of the jobs in the database."""
    with job_store(db) as scheduler:
        return sorted(job.id for job in scheduler.get_jobs())


class Recorder:
    """A plugin with a task and a recurring job that record their runs."""

    def __init__(self, *, interval: float = 600) -> None:
        self.plugin = Plugin("recorder")
        self.runs: list[dict[str, Any]] = []
        self.ticks = 0
        self.ran = asyncio.Event()
        self.ticked = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.finished = False

        @self.plugin.task
        async def note(ctx: JobContext, data: dict[str, Any]) -> None:
            assert ctx.plugin == "recorder"
            self.runs.append(data)
            self.ran.set()
            if self.gate is not None:
                await self.gate.wait()
                self.finished = True

        @self.plugin.job(interval=interval)
        async def tick(ctx: JobContext) -> None:
            self.ticks += 1
            self.ticked.set()

        self.note = note

    def host(self, config: Config) -> PluginHost:
        host = PluginHost()
        host.add(self.plugin, "test", config)
        return host

    def bot(self, config: Config, adapter: FakePlatform | None = None) -> Bot:
        return Bot(
            config,
            model=ScriptedModel(),
            adapters=[adapter or FakePlatform()],
            plugins=self.host(config),
        )


def scheduler_of(bot: Bot) -> Scheduler:
    assert bot.scheduler is not None
    return bot.scheduler


def test_the_job_store_uses_the_synchronous_driver_of_the_same_database() -> None:
    def text(url: str) -> str:
        return sync_url(url).render_as_string(hide_password=False)

    assert text("sqlite+aiosqlite:////srv/bot/bot.db") == "sqlite:////srv/bot/bot.db"
    assert text("postgresql+asyncpg://u:p@db/bot") == "postgresql+psycopg://u:p@db/bot"


async def test_a_task_runs_with_its_plain_data(make_store_config: MakeConfig) -> None:
    recorder = Recorder()
    async with recorder.bot(make_store_config()) as bot:
        job = await scheduler_of(bot).run_at(
            datetime.now(UTC), recorder.note, {"who": "console:alice", "ids": (1, 2)}
        )
        async with asyncio.timeout(10):
            await recorder.ran.wait()
    assert recorder.runs == [{"who": "console:alice", "ids": [1, 2]}]
    assert len(job.id) == 5


async def test_tasks_take_plain_data_and_registered_functions_only(
    make_store_config: MakeConfig,
) -> None:
    recorder = Recorder()

    async def stray(ctx: JobContext, data: dict[str, Any]) -> None: ...

    async with recorder.bot(make_store_config()) as bot:
        scheduler = scheduler_of(bot)
        later = datetime.now(UTC) + timedelta(hours=1)
        with pytest.raises(TypeError, match="JSON"):
            await scheduler.run_at(later, recorder.note, {"bot": bot})
        with pytest.raises(ValueError, match=r"@plugin\.task"):
            await scheduler.run_at(later, stray, {})
        await scheduler.run_at(later, recorder.note, {}, job_id="mine")
        with pytest.raises(ValueError, match="already has a job 'mine'"):
            await scheduler.run_at(later, recorder.note, {}, job_id="mine")
        assert [job.id for job in await scheduler.pending(recorder.note)] == ["mine"]
        assert await scheduler.cancel(recorder.note, "mine")
        assert not await scheduler.cancel(recorder.note, "mine")
        assert await scheduler.pending(recorder.note) == []


async def test_a_task_due_while_the_bot_was_down_runs_once_at_the_next_start(
    make_store_config: MakeConfig,
) -> None:
    config = make_store_config()
    recorder = Recorder()
    async with recorder.bot(config) as bot:
        later = datetime.now(UTC) + timedelta(hours=1)
        await scheduler_of(bot).run_at(later, recorder.note, {"n": 1}, job_id="once")
    assert "recorder:once" in warp(config.storage.url, datetime.now(UTC) - timedelta(minutes=5))

    async with recorder.bot(config) as bot:
        async with asyncio.timeout(10):
            await recorder.ran.wait()
        assert await scheduler_of(bot).pending(recorder.note) == []
    async with recorder.bot(config) as bot:
        assert await scheduler_of(bot).pending(recorder.note) == []
    assert recorder.runs == [{"n": 1}]


async def test_a_task_missed_by_more_than_the_grace_time_is_dropped(
    make_store_config: MakeConfig,
) -> None:
    config = make_store_config()
    recorder = Recorder()
    async with recorder.bot(config) as bot:
        later = datetime.now(UTC) + timedelta(hours=1)
        await scheduler_of(bot).run_at(later, recorder.note, {"n": "stale"}, grace_s=60)
    warp(config.storage.url, datetime.now(UTC) - timedelta(minutes=5))

    async with recorder.bot(config) as bot:
        # A fresh task runs in a pass no earlier than the one that saw the stale one.
        await scheduler_of(bot).run_at(datetime.now(UTC), recorder.note, {"n": "fresh"})
        async with asyncio.timeout(10):
            await recorder.ran.wait()
        assert await scheduler_of(bot).pending(recorder.note) == []
    assert recorder.runs == [{"n": "fresh"}]


async def test_missed_runs_of_a_recurring_job_run_once_and_it_keeps_its_schedule(
    make_store_config: MakeConfig,
) -> None:
    config = make_store_config()
    recorder = Recorder(interval=600)
    async with recorder.bot(config):
        pass
    # Three ten-minute runs fall into the downtime, all within the grace time.
    assert warp(config.storage.url, datetime.now(UTC) - timedelta(minutes=25)) == [
        "every:recorder.tick"
    ]
    async with recorder.bot(config):
        async with asyncio.timeout(10):
            await recorder.ticked.wait()
    assert recorder.ticks == 1
    assert stored_ids(config.storage.url) == ["every:recorder.tick"]


async def test_a_recurring_job_whose_plugin_is_gone_is_removed(
    make_store_config: MakeConfig,
) -> None:
    config = make_store_config()
    async with Recorder().bot(config):
        pass
    assert stored_ids(config.storage.url) == ["every:recorder.tick"]
    async with Bot(config, model=ScriptedModel(), adapters=[], plugins=PluginHost()):
        pass
    assert stored_ids(config.storage.url) == []


async def test_jobs_follow_the_database_when_it_moves(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    recorder = Recorder()
    async with recorder.bot(make_config()) as bot:
        later = datetime.now(UTC) + timedelta(hours=1)
        await scheduler_of(bot).run_at(later, recorder.note, {"moved": True})
    (tmp_path / "elsewhere").mkdir()
    for path in tmp_path.glob("bot.db*"):
        shutil.copy(path, tmp_path / "elsewhere" / path.name)
    warp(tmp_path / "elsewhere" / "bot.db", datetime.now(UTC))

    async with recorder.bot(make_config(db="elsewhere/bot.db")):
        async with asyncio.timeout(10):
            await recorder.ran.wait()
    assert recorder.runs == [{"moved": True}]


async def test_two_bots_on_one_database_in_one_process_are_refused(
    make_config: MakeConfig,
) -> None:
    config = make_config()
    async with Recorder().bot(config):
        with pytest.raises(StartupError, match="SQLite serves one bot process"):
            async with Recorder().bot(config):
                pass


async def test_pausing_lets_a_running_job_finish(make_store_config: MakeConfig) -> None:
    recorder = Recorder()
    recorder.gate = asyncio.Event()
    async with recorder.bot(make_store_config()) as bot:
        scheduler = scheduler_of(bot)
        await scheduler.run_at(datetime.now(UTC), recorder.note, {})
        async with asyncio.timeout(10):
            await recorder.ran.wait()
            pausing = asyncio.create_task(scheduler.pause())
            await scheduler.pending(recorder.note)  # a job-store round trip after pause's own
            await asyncio.sleep(0)
            assert not pausing.done()
            recorder.gate.set()
            await pausing
        assert recorder.finished


async def test_the_job_store_waits_for_a_history_write_without_blocking_the_loop(
    make_config: MakeConfig,
) -> None:
    # The stock AsyncIOScheduler writes from the loop thread: it would wait for this open
    # transaction, which cannot commit while the loop waits, and fail "database is locked".
    # (SQLite's database-wide write lock; PostgreSQL locks rows, so there is no wait.)
    recorder = Recorder()
    touch = text("UPDATE alembic_version SET version_num = version_num")
    async with recorder.bot(make_config()) as bot:
        scheduler = scheduler_of(bot)
        later = datetime.now(UTC) + timedelta(hours=1)
        async with bot.store.engine.begin() as conn:
            await conn.execute(touch)  # holds the database's write lock until commit
            adding = asyncio.create_task(scheduler.run_at(later, recorder.note, {}))
            await asyncio.sleep(0)
            await conn.execute(touch)
            assert not adding.done()
        async with asyncio.timeout(10):
            job = await adding
        assert [j.id for j in await scheduler.pending(recorder.note)] == [job.id]
