"""The scheduler: APScheduler's AsyncIOScheduler on the bot's loop, jobs kept in its database.

Jobs hold plain data, never live objects (PTB #2436, #3695): every stored job calls
:func:`run_task` with the scheduler's key, a task name (``plugin.function``) and a dict of
JSON values. ``run_task`` looks the key up among the schedulers this process runs, so a
job stored before a restart reaches the bot running after it.

The job store is synchronous. Its reads and writes run on one worker thread, never on the
event loop: a SQLite write on the loop thread waits for the lock of an aiosqlite
transaction that needs that very loop to commit, which stalls the bot for the whole busy
timeout and then fails.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.executors.base import BaseExecutor, run_coroutine_job
from apscheduler.jobstores.base import ConflictingIdError, JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, make_url

from llamabot.errors import StartupError
from llamabot.metrics import Metrics
from llamabot.plugin_host import PluginHost
from llamabot.plugins import Job
from llamabot.storage.engine import create_sync_engine, is_in_memory, sync_url
from llamabot.storage.locks import LeaderLock

log = logging.getLogger(__name__)

T = TypeVar("T")
Task = Callable[..., Awaitable[None]]

# A run missed while the bot was down still happens at start when at most this late.
DEFAULT_GRACE_S = 3600
# How long stopping waits for running jobs (a reminder being sent) before cancelling them.
DRAIN_TIMEOUT_S = 10.0
# How often the leader looks for jobs other processes added and checks its lock, and
# the others try to take over: a dead leader's jobs run at most this much late.
LEADER_CHECK_S = 2.0
RECURRING = "every:"
_RUN_TASK_REF = f"{__name__}:run_task"

_running: dict[str, Scheduler] = {}


async def run_task(scheduler_key: str, task: str, data: dict[str, Any]) -> None:
    """What every stored job calls: find the running scheduler by key, run the named task."""
    scheduler = _running.get(scheduler_key)
    if scheduler is None:
        log.warning("scheduled %s found no running bot for its database; skipped", task)
        return
    await scheduler.run(task, data)


@dataclass(frozen=True)
class ScheduledJob:
    """A pending call of a task: its id within the plugin, when it runs, and its data."""

    id: str
    run_at: datetime | None
    data: dict[str, Any]


@dataclass(frozen=True)
class _Task:
    plugin: str
    func: Task
    job: Job | None = None  # set for recurring jobs


class Scheduler:
    """Runs plugin jobs and tasks on the bot's loop; they are stored in the bot's database.

    Started paused: the bot resumes it once the adapters are up (a job may send) and
    pauses it again before they stop.
    """

    def __init__(
        self,
        url: str,
        *,
        timezone: str,
        plugins: PluginHost,
        context: Callable[[str], object],
        grace_s: int = DEFAULT_GRACE_S,
        metrics: Metrics | None = None,
    ) -> None:
        try:
            self.timezone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise StartupError(
                f"[bot] timezone {timezone!r} is not a known time zone; use an IANA name "
                "such as 'Europe/Berlin', or 'UTC'"
            ) from None
        self._url = sync_url(url).render_as_string(hide_password=False)
        # The key is stored with every job; a hash keeps a database password out of it.
        self.key = hashlib.sha256(self._url.encode()).hexdigest()[:16]
        if is_in_memory(self._url):
            self.key = secrets.token_hex(8)  # each in-memory database is a database of its own
        self._context = context
        self._grace_s = grace_s
        self._metrics = metrics or Metrics("")
        self._tasks: dict[str, _Task] = {}
        for plugin in plugins.plugins():
            for func in plugin.tasks:
                self._register(f"{plugin.name}.{func.__name__}", _Task(plugin.name, func))
            for job in plugin.jobs:
                self._register(job.id, _Task(plugin.name, job.func, job))
        self._io = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llamabot-jobs")
        self._executor = _LoopExecutor()
        self._aps: _LoopScheduler | None = None
        self._engine: Engine | None = None
        # PostgreSQL may serve several bot processes: only the leader runs jobs.
        self._leader = (
            LeaderLock(url, f"llamabot-scheduler:{self.key}")
            if make_url(url).get_backend_name() == "postgresql"
            else None
        )
        self._leading: asyncio.Task[None] | None = None

    def _register(self, name: str, task: _Task) -> None:
        if name in self._tasks:
            raise StartupError(
                f"plugin {task.plugin!r} has two jobs or tasks named {name!r}; rename one"
            )
        self._tasks[name] = task

    # -- lifespan -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the job store and (re)register the plugins' recurring jobs; stays paused."""
        if self.key in _running:
            raise StartupError(
                "another bot in this process already runs on this database; "
                "give each bot its own [storage] url"
            )
        self._engine = engine = create_sync_engine(self._url)
        self._aps = _LoopScheduler(
            self._io,
            self._executor,
            event_loop=asyncio.get_running_loop(),
            timezone=self.timezone,
            jobstores={"default": SQLAlchemyJobStore(engine=engine)},
            executors={"default": self._executor},
            job_defaults={
                "coalesce": True,  # many missed runs of a recurring job run once
                "max_instances": 1,
                "misfire_grace_time": self._grace_s,
            },
        )
        _running[self.key] = self
        try:
            await self._in_io(self._start_paused)
        except BaseException:
            await self.aclose()
            raise

    def _start_paused(self) -> None:
        aps = self._aps
        assert aps is not None
        aps.start(paused=True)
        stored = {job.id: job for job in aps.get_jobs() if job.func_ref == _RUN_TASK_REF}
        for job_id, job in stored.items():
            if job_id.startswith(RECURRING) and job_id.removeprefix(RECURRING) not in self._tasks:
                aps.remove_job(job_id)
                log.info("removed recurring job %s: no loaded plugin has it", job_id)
            elif job.args[:1] != (self.key,):
                # The database was moved or renamed; its jobs are still this bot's.
                aps.modify_job(job_id, args=(self.key, *job.args[1:]))
        for name, task in self._tasks.items():
            if task.job is None:
                continue
            trigger = self._trigger(task.job)
            old = stored.get(RECURRING + name)
            if old is not None and _same_trigger(old.trigger, trigger):
                continue  # keep its next run time: a run missed while down happens once now
            aps.add_job(
                run_task,
                trigger,
                args=(self.key, name, {}),
                id=RECURRING + name,
                name=name,
                replace_existing=True,
            )

    def _trigger(self, job: Job) -> Any:
        if job.cron is not None:
            return CronTrigger.from_crontab(job.cron, timezone=self.timezone)
        return IntervalTrigger(seconds=job.interval, timezone=self.timezone)

    def resume(self) -> None:
        """Let due jobs run; a run missed while the bot was down runs now, once.

        With several processes on one PostgreSQL database, jobs run in the leader only;
        the others wait to take over (within ``LEADER_CHECK_S`` of the leader's end).
        """
        if self._aps is None or self._aps.state == STATE_STOPPED:
            return
        if self._leader is None:
            self._aps.resume()
        elif self._leading is None:
            self._leading = asyncio.create_task(self._lead(), name="scheduler-leader")

    async def _lead(self) -> None:
        aps = self._aps
        assert aps is not None and self._leader is not None
        running = False
        while True:
            held = await self._leader.hold()
            if held and not running:
                log.info("this process runs the scheduled jobs (the leader)")
                aps.resume()
            elif not held and running:
                log.warning("lost the scheduler's leadership (database connection); pausing jobs")
                aps.pause()
            elif held:
                aps.wakeup()  # jobs other processes added since the last look
            running = held
            await asyncio.sleep(LEADER_CHECK_S)

    async def pause(self) -> None:
        """Start no more jobs, and give the running ones a while to finish."""
        aps = self._aps
        if aps is None or aps.state == STATE_STOPPED:
            return
        if self._leading is not None:
            self._leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._leading
            self._leading = None
        aps.pause()
        await self._in_io(lambda: None)  # a job-store pass under way finishes first
        await self._executor.drain(DRAIN_TIMEOUT_S)

    async def aclose(self) -> None:
        """Shut down; stored jobs stay in the database for the next start."""
        aps = self._aps
        if aps is not None and aps.state != STATE_STOPPED:
            await self.pause()
            await self._in_io(aps.shutdown_off_loop)
        if aps is not None:
            aps.stop_timer()
        if self._leader is not None:
            await self._leader.release()  # another process takes over at once
        if self._engine is not None:
            self._engine.dispose()  # also when the start failed before the store owned it
        if _running.get(self.key) is self:
            del _running[self.key]
        self._io.shutdown(wait=True)  # idle: every pass was awaited above

    # -- what plugins use ---------------------------------------------------------------

    async def run_at(
        self,
        when: datetime,
        task: Task,
        data: Mapping[str, Any],
        *,
        job_id: str | None = None,
        grace_s: int | None = None,
    ) -> ScheduledJob:
        """Call ``task(ctx, data)`` at ``when``, also when the bot restarted in between.

        ``task`` is registered with ``@plugin.task``; ``data`` holds JSON values (ids
        and text, never live objects) and reaches the task as JSON would return it.
        ``job_id`` is unique within the plugin (default: a short random id). A call
        missed while the bot was down runs at the next start when at most ``grace_s``
        late (default: the scheduler's grace time), and never twice.
        """
        name = self._task_name(task)
        plugin = self._tasks[name].plugin
        plain = _plain(data)
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.timezone)
        aps = self._running_aps()
        trigger = DateTrigger(run_date=when, timezone=self.timezone)

        def add() -> ScheduledJob:
            for _ in range(8):
                local = job_id or _short_id()
                try:
                    job = aps.add_job(
                        run_task,
                        trigger,
                        args=(self.key, name, plain),
                        id=f"{plugin}:{local}",
                        name=name,
                        misfire_grace_time=grace_s or self._grace_s,
                    )
                except ConflictingIdError:
                    if job_id is not None:
                        raise ValueError(f"{plugin} already has a job {job_id!r}") from None
                    continue
                return ScheduledJob(local, _run_at(job), plain)
            raise RuntimeError("no free job id found")

        return await self._in_io(add)

    async def pending(self, task: Task) -> list[ScheduledJob]:
        """The calls of ``task`` still to run, soonest first."""
        name = self._task_name(task)
        prefix = f"{self._tasks[name].plugin}:"
        aps = self._running_aps()

        def read() -> list[ScheduledJob]:
            return [
                ScheduledJob(job.id.removeprefix(prefix), _run_at(job), dict(job.args[2]))
                for job in aps.get_jobs()
                if job.id.startswith(prefix) and job.args[1:2] == (name,)
            ]

        return await self._in_io(read)

    async def cancel(self, task: Task, job_id: str) -> bool:
        """Cancel a pending call of ``task``; false when there was none with that id."""
        name = self._task_name(task)
        full_id = f"{self._tasks[name].plugin}:{job_id}"
        aps = self._running_aps()

        def remove() -> bool:
            job = aps.get_job(full_id)
            if job is None or job.args[1:2] != (name,):
                return False
            try:
                aps.remove_job(full_id)
            except JobLookupError:
                return False  # it just ran
            return True

        return await self._in_io(remove)

    async def everything_pending(self) -> list[tuple[str, str, ScheduledJob]]:
        """Every pending call of every plugin, soonest first: (plugin, task, call), the
        call's id the full one :meth:`cancel_by_id` takes (for the admin page)."""
        aps = self._running_aps()

        def read() -> list[tuple[str, str, ScheduledJob]]:
            found = []
            for job in aps.get_jobs():
                task = self._tasks.get(job.args[1]) if len(job.args) > 1 else None
                if task is None:
                    continue
                data = dict(job.args[2]) if len(job.args) > 2 else {}
                found.append((task.plugin, job.args[1], ScheduledJob(job.id, _run_at(job), data)))
            return found

        return await self._in_io(read)

    async def cancel_by_id(self, full_id: str) -> bool:
        """Cancel a pending call by its full id (see :meth:`everything_pending`)."""
        aps = self._running_aps()

        def remove() -> bool:
            try:
                aps.remove_job(full_id)
            except JobLookupError:
                return False
            return True

        return await self._in_io(remove)

    async def forget_author(self, author_id: str) -> int:
        """Cancel every pending call whose data names ``author_id`` under ``"author"``.

        The privacy side of ``/forgetme``: a task that stores what a person said (a
        reminder's text) puts their ``platform:user_id`` there, so it can be found.
        """
        aps = self._running_aps()

        def remove() -> int:
            removed = 0
            for job in aps.get_jobs():
                data = job.args[2] if len(job.args) > 2 else None
                if isinstance(data, dict) and data.get("author") == author_id:
                    try:
                        aps.remove_job(job.id)
                    except JobLookupError:
                        continue  # it just ran
                    removed += 1
            return removed

        return await self._in_io(remove)

    # -- internals ----------------------------------------------------------------------

    async def run(self, name: str, data: dict[str, Any]) -> None:
        """Run a task or recurring job by name; a failure is logged, never raised."""
        task = self._tasks.get(name)
        if task is None:
            log.warning("no loaded plugin provides %s (disabled?); its run is dropped", name)
            return
        context = self._context(task.plugin)
        try:
            if task.job is not None:
                await task.func(context)
            else:
                await task.func(context, data)
        except Exception:
            log.exception("scheduled %s failed", name)
            self._metrics.job_ran(ok=False)
        else:
            self._metrics.job_ran(ok=True)

    def _task_name(self, task: Task) -> str:
        for name, known in self._tasks.items():
            if known.func is task and known.job is None:
                return name
        raise ValueError(
            f"{getattr(task, '__name__', task)!r} is not a task of a loaded plugin; "
            "register it with @plugin.task"
        )

    def _running_aps(self) -> _LoopScheduler:
        if self._aps is None or self._aps.state == STATE_STOPPED:
            raise RuntimeError("the scheduler is not running")
        return self._aps

    async def _in_io(self, func: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, func)


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    try:
        plain = json.loads(json.dumps(dict(data)))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"a scheduled task's data must be JSON values (ids, text, numbers): {exc}"
        ) from None
    return dict(plain)


def _short_id() -> str:
    # Typed by people (`/unremind k7q2`): no look-alike characters.
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


def _run_at(job: Any) -> datetime | None:
    return getattr(job, "next_run_time", None)


def _same_trigger(old: Any, new: Any) -> bool:
    return bool(str(old) == str(new) and str(old.timezone) == str(new.timezone))


class _LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler whose job-store passes run on the job-store thread.

    The stock ``wakeup`` processes due jobs on the loop thread; see the module docstring
    for why the job store must stay off it. Timers still live on the loop.
    """

    def __init__(
        self,
        io: concurrent.futures.ThreadPoolExecutor,
        executor: _LoopExecutor,
        **options: Any,
    ) -> None:
        self._io = io
        self._loop_executor = executor
        super().__init__(**options)

    def wakeup(self) -> None:
        loop: asyncio.AbstractEventLoop | None = self._eventloop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._process_off_loop)

    def _process_off_loop(self) -> None:
        loop: asyncio.AbstractEventLoop | None = self._eventloop
        if loop is None or self.state != STATE_RUNNING:
            return
        self._stop_timer()
        future = loop.run_in_executor(self._io, self._process_if_running)
        future.add_done_callback(self._processed)

    def _process_if_running(self) -> float | None:
        if self.state != STATE_RUNNING:
            return None
        # Jobs start only once the pass has removed or rescheduled them in the store, as
        # with the stock scheduler: a crash in between must not lead to a second run.
        self._loop_executor.hold()
        try:
            wait: float | None = self._process_jobs()
        finally:
            self._loop_executor.release()
        return wait

    def _processed(self, future: asyncio.Future[float | None]) -> None:
        if future.cancelled() or self.state != STATE_RUNNING:
            return
        error = future.exception()
        if error is not None:
            log.error("checking for due jobs failed: %s", error)
            self._start_timer(self.jobstore_retry_interval)
        else:
            self._start_timer(future.result())

    def shutdown_off_loop(self) -> None:
        """Shut the executor and the job store down; runs on the job-store thread."""
        BaseScheduler.shutdown(self, wait=False)

    def stop_timer(self) -> None:
        """Cancel the next wake-up; on the loop thread, after shutting down."""
        self._stop_timer()
        self._eventloop = None


class _LoopExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs coroutine jobs on the bot's loop; jobs are submitted from the job-store thread."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: list[tuple[Any, list[datetime]]] | None = None

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def hold(self) -> None:
        """Keep submitted jobs back until :meth:`release` (both on the job-store thread)."""
        self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for job, run_times in held:
            self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        if self._held is not None:
            self._held.append((job, run_times))
            return
        if self._loop is None:
            raise RuntimeError("the executor has not started")
        coroutine = run_coroutine_job(job, job._jobstore_alias, run_times, self._logger.name)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        with self._guard:
            self._pending.add(future)
        future.add_done_callback(partial(self._finished, job.id))

    def _finished(self, job_id: str, future: concurrent.futures.Future[Any]) -> None:
        with self._guard:
            self._pending.discard(future)
        if future.cancelled():
            self._run_job_success(job_id, [])
            return
        error = future.exception()
        if error is not None:
            self._run_job_error(job_id, error, error.__traceback__)
        else:
            self._run_job_success(job_id, future.result())

    def shutdown(self, wait: bool = True) -> None:
        with self._guard:
            pending = list(self._pending)
            self._pending.clear()
        for future in pending:
            future.cancel()

    async def drain(self, within_s: float) -> None:
        """Wait for the running jobs, at most ``within_s`` seconds."""
        with self._guard:
            running = [asyncio.wrap_future(f) for f in self._pending]
        if running:
            _, late = await asyncio.wait(running, timeout=within_s)
            if late:
                log.warning("%d scheduled job(s) still running at stop; cancelling", len(late))
