"""Core overhead per message: router + history window + store, with an instant model.

The bot runs on a real SQLite file holding 1,000,000 messages (one conversation of
100,000 and 100 of 9,000, interleaved as a busy bot would write them). The model answers
at once, so every millisecond measured is llamabot's own: the router, the lane, two
inserts, the window read and the reply stream.

    PYTHONPATH=. python bench/bench_core.py              # table + bench/bench_core.json
    PYTHONPATH=. python bench/bench_core.py --profile    # also: where the time of one turn goes

The filled database is cached in $TMPDIR/llamabot-bench/ keyed by schema revision, so a
second run skips the fill. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench import measure
from llamabot.adapters.base import PlatformLimits
from llamabot.app import Bot
from llamabot.config import Config, parse_config
from llamabot.events import Author, ChannelRef, Inbound, SentMessage
from llamabot.llm import ChatMessage, GenerationOptions, Health, ModelInfo, estimate_tokens
from llamabot.plugin_host import PluginHost
from llamabot.storage.engine import create_engine, head_revision, migrations_dir, upgrade
from llamabot.storage.history import HistoryStore

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("LLAMABOT_BENCH_CACHE", Path(tempfile.gettempdir()) / "llamabot-bench"))
FILL_LAYOUT = "v1"  # bump when the fill below changes, so stale caches are not reused

TOTAL_MESSAGES = 1_000_000
BIG_KEY = "console:bench-big"  # 100,000 messages
SMALL_CONVERSATIONS = 100  # 9,000 messages each
SEQUENTIAL_TURNS = 2_000
SPREAD_TURNS = 2_000  # sequential, round-robin over the 100 conversations
PARALLEL_ROUNDS = 20  # 100 conversations x 20 turns submitted at once
WINDOW_READS = 2_000

TOML = """
[bot]
name = "Bench"
[llm]
backend = "embedded"
max_concurrency = 2
[storage]
url = "{url}"
[history]
max_messages = 40
max_tokens = 3000
[personas.assistant]
prompt = "You are a helpful assistant."
"""


class InstantModel:
    """A ChatModel that answers at once with one short delta: no LLM time at all."""

    name = "instant"
    reply = "Sure, here is a short answer."

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> AsyncIterator[str]:
        yield self.reply

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    def served_model(self, requested: str) -> str:
        return requested

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        return None

    async def context_length(self, model: str) -> int | None:
        return None

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(name="instant")]

    async def health(self) -> Health:
        return Health(ok=True, detail="instant")

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        return {}

    async def aclose(self) -> None:
        return None


class NullAdapter:
    """A platform that accepts every send and edit at once and counts them."""

    platform = "console"
    limits = PlatformLimits(max_chars=4000, edit_interval_s=0.0)

    def __init__(self) -> None:
        self.sends = 0
        self.edits = 0

    async def start(self, bot: Any) -> None:
        return None

    async def stop_receiving(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self,
        to: ChannelRef,
        text: str,
        reply_to: str | None = None,
        *,
        only_author: bool = False,
    ) -> SentMessage:
        self.sends += 1
        return SentMessage(to, str(self.sends))

    async def edit(self, sent: SentMessage, text: str) -> None:
        self.edits += 1

    async def typing(self, to: ChannelRef) -> None:
        return None


# -- the database ------------------------------------------------------------------------


def _channel(key: str) -> ChannelRef:
    return ChannelRef(platform="console", chat_id=key.split(":", 1)[1], is_private=True)


def small_key(index: int) -> str:
    return f"console:bench-{index:03d}"


async def _migrate(path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


MESSAGE_COLUMNS = (
    "conversation_id",
    "role",
    "author_id",
    "author_name",
    "content",
    "persona",
    "model",
    "tokens",
    "status",
    "platform_message_id",
    "reply_ms",
    "created_at",
)


def _rows(conversation_ids: list[int], total: int) -> Iterator[tuple[Any, ...]]:
    """``total`` messages (MESSAGE_COLUMNS); every tenth to the first conversation."""
    start = datetime(2025, 1, 1)
    others = conversation_ids[1:]
    turn = 0
    for i in range(total):
        if i % 10 == 0 or not others:
            conversation = conversation_ids[0]
        else:
            conversation = others[turn % len(others)]
            turn += 1
        user = i % 2 == 0
        text = (
            f"message {i}: what do you think about the weather in city number {i % 977}?"
            if user
            else f"reply {i}: it is probably fine, although forecasts for {i % 977} vary a lot."
        )
        yield (
            conversation,
            "user" if user else "assistant",
            "console:someone" if user else None,
            "someone" if user else None,
            text,
            "assistant",
            None if user else "bench",
            estimate_tokens(text),
            "ok",
            None,
            None if user else 12,
            (start + timedelta(seconds=i)).isoformat(sep=" ", timespec="microseconds"),
        )


def _check_columns(db: sqlite3.Connection, table: str, known: set[str]) -> None:
    """Fail clearly when a migration added a required column this fill does not write."""
    for _, name, _, notnull, default, primary in db.execute(f"PRAGMA table_info({table})"):
        if notnull and default is None and not primary and name not in known:
            raise SystemExit(
                f"bench_core.py does not know the required column {table}.{name} added by a "
                "migration; teach _fill() to write it"
            )


def _fill(path: Path, keys: list[str], total: int) -> None:
    """Write conversations and ``total`` messages with raw sqlite3, indexes built after."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        conversation_values = {
            "key": None,
            "platform": None,
            "chat_id": None,
            "thread_id": None,
            "guild_id": None,
            "is_private": True,
            "created_at": "2025-01-01 00:00:00.000000",
        }
        present = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
        conversation_columns = [c for c in conversation_values if c in present]
        _check_columns(db, "conversations", set(conversation_columns))
        _check_columns(db, "messages", set(MESSAGE_COLUMNS))
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='messages' "
            "AND sql IS NOT NULL"
        ).fetchall()
        with db:
            for name, _ in indexes:
                db.execute(f"DROP INDEX {name}")
            ids = []
            for key in keys:
                platform_name, chat_id = key.split(":", 1)
                values = conversation_values | {
                    "key": key,
                    "platform": platform_name,
                    "chat_id": chat_id,
                }
                cursor = db.execute(
                    f"INSERT INTO conversations ({', '.join(conversation_columns)}) "
                    f"VALUES ({', '.join('?' for _ in conversation_columns)})",
                    [values[c] for c in conversation_columns],
                )
                ids.append(int(cursor.lastrowid or 0))
            db.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in MESSAGE_COLUMNS)})",
                _rows(ids, total),
            )
            for _, sql in indexes:
                db.execute(sql)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def schema_tag() -> str:
    """Names the schema: the migrations' own text, so an edited migration rebuilds the cache."""
    digest = hashlib.sha256()
    for script in sorted((migrations_dir() / "versions").glob("*.py")):
        digest.update(script.name.encode())
        digest.update(script.read_bytes())
    return f"{head_revision()}-{digest.hexdigest()[:12]}"


def cached_database(keys: list[str], total: int, tag: str) -> tuple[Path, float]:
    """A filled database file, built once per schema; returns (path, fill seconds)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"core-{tag}-{schema_tag()}-{FILL_LAYOUT}-{total}.db"
    if path.exists():
        return path, 0.0
    building = path.with_suffix(".building")
    for leftover in CACHE.glob(building.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    asyncio.run(_migrate(building))
    _fill(building, keys, total)
    building.rename(path)
    return path, time.perf_counter() - started


def working_copy(source: Path, name: str) -> Path:
    """A copy the run may write to, so the cached file stays at its exact size."""
    target = CACHE / name
    for leftover in CACHE.glob(name + "*"):
        leftover.unlink()
    shutil.copyfile(source, target)
    return target


# -- measurements ------------------------------------------------------------------------


# Every message of a run has its own platform id: a repeated one is "taken before" and
# not answered, which would make its turn cheaper than a real one.
_MESSAGE_IDS = itertools.count(1)


def _inbound(key: str, i: int) -> Inbound:
    return Inbound(
        channel=_channel(key),
        author=Author(id="someone", name="someone"),
        text=f"benchmark message number {i}, please answer briefly.",
        message_id=str(next(_MESSAGE_IDS)),
    )


async def sequential(bot: Bot, adapter: NullAdapter, keys: list[str], turns: int) -> list[float]:
    """Latency of submit -> handled, one message at a time, round-robin over ``keys``."""
    samples: list[float] = []
    for i in range(turns):
        inbound = _inbound(keys[i % len(keys)], i)
        started = time.perf_counter()
        await bot.submit(inbound, adapter)
        samples.append(time.perf_counter() - started)
    return samples


async def durable(bot: Bot, adapter: NullAdapter, key: str, turns: int, first: int) -> list[float]:
    """Like ``sequential``, but as the platform adapters take messages: through the inbox
    (``Bot.accept``: stored before it is confirmed, deleted once handled)."""
    samples: list[float] = []
    for i in range(first, first + turns):
        started = time.perf_counter()
        await bot.accept(_inbound(key, i), adapter)
        await bot.wait_idle()
        samples.append(time.perf_counter() - started)
    return samples


async def parallel(
    bot: Bot, adapter: NullAdapter, keys: list[str], rounds: int
) -> tuple[float, list[float]]:
    """Submit ``rounds`` messages to each conversation at once; (seconds, latencies)."""
    latencies: list[float] = []

    async def one(inbound: Inbound) -> None:
        started = time.perf_counter()
        await bot.submit(inbound, adapter)
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    waits = [
        one(_inbound(key, r * len(keys) + k)) for r in range(rounds) for k, key in enumerate(keys)
    ]
    await asyncio.gather(*waits)
    return time.perf_counter() - started, latencies


# The window read as HistoryStore issues it (every column a turn carries).
WINDOW_SQL = (
    "SELECT role, content, author_name, tokens, tool_calls, tool_name, tool_call_id, "
    "images, id FROM messages "
    "WHERE conversation_id = ? AND status = 'ok' ORDER BY id DESC LIMIT 40"
)


def raw_turns(path: Path, key: str, turns: int) -> list[float]:
    """A turn's SQL on plain sqlite3 with the bot's pragmas, as the floor for a turn:
    the person's message stored and the window read in one transaction, the reply stored
    in another."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        (cid,) = db.execute("SELECT id FROM conversations WHERE key = ?", (key,)).fetchone()
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)") if row[1] != "id"]
        insert = (
            f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )

        def row(role: str, text: str, i: int) -> list[Any]:
            values: dict[str, Any] = {
                "conversation_id": cid,
                "role": role,
                "author_id": "someone",
                "author_name": "someone",
                "content": text,
                "persona": "assistant",
                "model": "instant",
                "tokens": 12,
                "status": "ok",
                "platform_message_id": f"raw-{role}-{i}",
                "created_at": datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f"),
            }
            return [values.get(column) for column in columns]

        samples: list[float] = []
        for i in range(turns):
            started = time.perf_counter()
            db.execute("BEGIN")
            db.execute(insert, row("user", f"benchmark message number {i}, please answer.", i))
            db.execute(WINDOW_SQL, (cid,)).fetchall()
            db.execute("COMMIT")
            db.execute("BEGIN")
            db.execute(insert, row("assistant", f"echo: benchmark message number {i}", i))
            db.execute("COMMIT")
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        db.close()


async def compare_windows(targets: list[tuple[str, Path, str]], reads: int) -> dict[str, Any]:
    """``HistoryStore.window`` and its raw SQL on each (label, file, key), reads interleaved.

    Interleaving round-robin means a noisy neighbour slows every target alike, so the
    figures compare the databases rather than moments.
    """
    engines = [create_engine(f"sqlite+aiosqlite:///{path}") for _, path, _ in targets]
    raws = [sqlite3.connect(path) for _, path, _ in targets]
    stores = [HistoryStore(engine) for engine in engines]
    try:
        ids = [
            await store.conversation_id(_channel(key))
            for store, (_, _, key) in zip(stores, targets, strict=True)
        ]
        for store, raw, cid in zip(stores, raws, ids, strict=True):
            await store.window(cid, 40, 3000)  # warm the statement cache and the pool
            raw.execute(WINDOW_SQL, (cid,)).fetchall()
        store_samples: list[list[float]] = [[] for _ in targets]
        raw_samples: list[list[float]] = [[] for _ in targets]
        for _ in range(reads):
            for i, (store, raw, cid) in enumerate(zip(stores, raws, ids, strict=True)):
                started = time.perf_counter()
                await store.window(cid, 40, 3000)
                store_samples[i].append(time.perf_counter() - started)
                started = time.perf_counter()
                raw.execute(WINDOW_SQL, (cid,)).fetchall()
                raw_samples[i].append(time.perf_counter() - started)
        results: dict[str, Any] = {}
        for i, ((label, _, _), raw, cid) in enumerate(zip(targets, raws, ids, strict=True)):
            (total,) = raw.execute("SELECT count(*) FROM messages").fetchone()
            (mine,) = raw.execute(
                "SELECT count(*) FROM messages WHERE conversation_id = ?", (cid,)
            ).fetchone()
            plan = [row[-1] for row in raw.execute("EXPLAIN QUERY PLAN " + WINDOW_SQL, (cid,))]
            results[label] = {
                "stored": total,
                "in_conversation": mine,
                "plan": plan,
                "history_store_ms": measure.summary_ms(store_samples[i]),
                "raw_sql_ms": measure.summary_ms(raw_samples[i]),
            }
        return results
    finally:
        for raw in raws:
            raw.close()
        for store in stores:
            close = getattr(store, "aclose", None)  # stores with their own connection
            if close is not None:
                await close()
        for engine in engines:
            await engine.dispose()


async def run_bot(url: str, profile: bool) -> dict[str, Any]:
    config: Config = parse_config(TOML.format(url=url), HERE / "bench.toml")
    adapter = NullAdapter()
    keys = [small_key(i) for i in range(SMALL_CONVERSATIONS)]
    results: dict[str, Any] = {}
    async with Bot(config, model=InstantModel(), adapters=[adapter], plugins=PluginHost()) as bot:
        stored = await bot.store.count()
        results["stored_at_start"] = stored
        await sequential(bot, adapter, [BIG_KEY, *keys], 200)  # warm-up: caches, connections
        results["one_conversation"] = measure.summary_ms(
            await sequential(bot, adapter, [BIG_KEY], SEQUENTIAL_TURNS)
        )
        results["one_conversation_inbox"] = measure.summary_ms(
            await durable(bot, adapter, BIG_KEY, SEQUENTIAL_TURNS, 10_000_000)
        )
        results["round_robin_100"] = measure.summary_ms(
            await sequential(bot, adapter, keys, SPREAD_TURNS)
        )
        seconds, latencies = await parallel(bot, adapter, keys, PARALLEL_ROUNDS)
        turns = len(latencies)
        results["parallel_100"] = {
            "turns": turns,
            "seconds": seconds,
            "turns_per_s": turns / seconds,
            "latency_ms": measure.summary_ms(latencies),
        }
        results["breakdown"] = await breakdown(bot, adapter, 500)
        results["adapter_sends"] = adapter.sends
        results["stored_at_end"] = await bot.store.count()
        if profile:
            results["profile"] = await profile_turns(bot, adapter)
    return results


async def breakdown(bot: Bot, adapter: NullAdapter, turns: int) -> dict[str, Any]:
    """Where a sequential turn's time goes: the store calls, and DB-thread round trips.

    Wraps the methods with timers for this run only; the rest of the turn (router, lane
    task, reply stream) is what the wrapped calls do not cover.
    """
    spent: dict[str, float] = {}
    calls: dict[str, int] = {}
    originals: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - started
                calls[label] = calls.get(label, 0) + 1

        setattr(owner, name, wrapper)

    for method in ("conversation_id", "append_and_window", "append", "window"):
        if hasattr(HistoryStore, method):
            timed(HistoryStore, method, f"HistoryStore.{method}")
    hops = {"aiosqlite": 0, "serial": 0}

    def count_hops(owner: Any, name: str, kind: str) -> None:
        original: Any = getattr(owner, name)
        originals.append((owner, name, original))

        async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            hops[kind] += 1
            return await original(self, *args, **kwargs)

        setattr(owner, name, counted)

    # aiosqlite makes a trip to its thread and back per DB-API call; the history store's
    # serial connection (where present) runs its units on the loop (in a thread only
    # while another connection holds SQLite's write lock).
    try:
        import aiosqlite.core

        count_hops(aiosqlite.core.Connection, "_execute", "aiosqlite")
    except (ImportError, AttributeError):
        pass
    try:
        from llamabot.storage.serial import SerialConnection

        count_hops(SerialConnection, "run", "serial")
    except ImportError:
        pass
    try:
        total = sum(await sequential(bot, adapter, [BIG_KEY], turns))
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
    per_turn = {label: seconds / turns * 1000 for label, seconds in spent.items()}
    per_turn["rest (router, lane, reply stream, model)"] = total / turns * 1000 - sum(
        per_turn.values()
    )
    return {
        "turns": turns,
        "mean_ms_per_turn": total / turns * 1000,
        "ms_per_turn": per_turn,
        "calls_per_turn": {label: n / turns for label, n in calls.items()},
        "db_thread_round_trips_per_turn": {kind: n / turns for kind, n in hops.items()},
    }


async def profile_turns(bot: Bot, adapter: NullAdapter) -> str:
    """pyinstrument over 500 sequential turns; the text report."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return "pyinstrument is not installed: pip install pyinstrument"
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    await sequential(bot, adapter, [BIG_KEY], 500)
    profiler.stop()
    return str(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="store_true", help="print where a turn's time goes")
    parser.add_argument(
        "--url",
        default="",
        help="run on this database instead (postgresql+asyncpg://…): the 1M-message "
        "SQLite file is copied into it first (llamabot db copy), once",
    )
    args = parser.parse_args()
    if args.url:
        return main_on(args.url, args.profile)

    info = measure.machine({"sqlite": sqlite3.sqlite_version})
    keys = [BIG_KEY, *(small_key(i) for i in range(SMALL_CONVERSATIONS))]
    big_source, fill_s = cached_database(keys, TOTAL_MESSAGES, "1m")
    tiny_source, _ = cached_database(["console:bench-tiny"], 100, "tiny")
    big = working_copy(big_source, "core-run.db")
    tiny = working_copy(tiny_source, "core-tiny-run.db")

    started = time.perf_counter()
    results = asyncio.run(run_bot(f"sqlite+aiosqlite:///{big}", args.profile))
    results["window"] = asyncio.run(
        compare_windows(
            [
                ("100 stored", tiny, "console:bench-tiny"),
                ("1M stored, 100k-message conversation", big, BIG_KEY),
                ("1M stored, 9k-message conversation", big, small_key(0)),
            ],
            WINDOW_READS,
        )
    )
    results["raw_turn"] = measure.summary_ms(raw_turns(big, BIG_KEY, SEQUENTIAL_TURNS))
    results["fill_seconds"] = fill_s
    results["run_seconds"] = time.perf_counter() - started
    results["machine"] = info
    results["targets"] = {"p50_ms": 1.0, "p99_ms": 5.0}
    profile = results.pop("profile", None)

    print_table(results)
    measure.save(results, HERE / "bench_core.json")
    if profile:
        print()
        print(profile)
    for leftover in CACHE.glob("core-*run.db*"):
        leftover.unlink()
    return 0


def main_on(url: str, profile: bool) -> int:
    """The same figures on another database (PostgreSQL), filled from the cached file."""
    info = measure.machine({"sqlite": sqlite3.sqlite_version})
    keys = [BIG_KEY, *(small_key(i) for i in range(SMALL_CONVERSATIONS))]
    big_source, _ = cached_database(keys, TOTAL_MESSAGES, "1m")
    started = time.perf_counter()
    fill_s = asyncio.run(fill_from(f"sqlite+aiosqlite:///{big_source}", url))
    results = asyncio.run(run_bot(url, profile))
    results.update(window={}, fill_seconds=fill_s, machine=info, database=url.split("+")[0])
    results["run_seconds"] = time.perf_counter() - started
    results["targets"] = {"p50_ms": 1.0, "p99_ms": 5.0}
    extra = results.pop("profile", None)
    print_table(results)
    measure.save(results, HERE / f"bench_core-{results['database']}.json")
    if extra:
        print(extra)
    return 0


async def fill_from(source_url: str, url: str) -> float:
    """Copy the 1M-message database into ``url`` unless it holds it already; seconds taken."""
    from llamabot.storage.copy import copy_database
    from llamabot.storage.engine import create_engine

    source, target = create_engine(source_url), create_engine(url)
    started = time.perf_counter()
    try:
        await copy_database(source, target)
    finally:
        await source.dispose()
        await target.dispose()
    return time.perf_counter() - started


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    database = "PostgreSQL" if r.get("database") == "postgresql" else f"SQLite {m['sqlite']}"
    print(measure.headline("llamabot core overhead", m, database, m["platform"]))
    print(
        f"database: {r['stored_at_start']:,} messages stored at start "
        f"(fill {r['fill_seconds']:.1f} s{'' if r['fill_seconds'] else ', cached'})"
    )
    print()
    header = f"{'per message, submit -> handled':<44}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}"
    print(header + "   (ms)")
    print("-" * len(header))
    rows = [
        (f"1 conversation (100k stored), {SEQUENTIAL_TURNS} turns", r["one_conversation"]),
        ("  the same, through the inbox (as platforms)", r["one_conversation_inbox"]),
        (f"100 conversations round-robin, {SPREAD_TURNS}", r["round_robin_100"]),
        (
            f"100 at once, {r['parallel_100']['turns']} queued at t=0",
            r["parallel_100"]["latency_ms"],
        ),
    ]
    for label, s in rows:
        print(f"{label:<44}{s['p50']:>10.2f}{s['p95']:>10.2f}{s['p99']:>10.2f}{s['max']:>10.2f}")
    p = r["parallel_100"]
    print(
        f"\nthroughput, 100 conversations at once: {p['turns_per_s']:,.0f} turns/s "
        f"({p['turns']} turns in {p['seconds']:.2f} s)"
    )
    seq = r["one_conversation"]
    print(
        f"target p50 < 1 ms: {'met' if seq['p50'] < 1 else 'MISSED'} ({seq['p50']:.2f}); "
        f"p99 < 5 ms: {'met' if seq['p99'] < 5 else 'MISSED'} ({seq['p99']:.2f})"
    )
    stored = r["stored_at_end"] - r["stored_at_start"]
    print(f"answers sent: {r['adapter_sends']:,}; messages stored: {stored:,} (a turn stores 2)")
    raw = r.get("raw_turn")
    if raw:
        ratio = seq["p50"] / raw["p50"]
        print(
            f"the same turn's SQL on plain sqlite3: p50 {raw['p50']:.3f} ms, p99 "
            f"{raw['p99']:.3f} ms; llamabot's turn p50 is {ratio:.1f}x it "
            f"(target <= 4x: {'met' if ratio <= 4 else 'not met'})"
        )
    if r["window"]:
        print_windows(r)
    print_breakdown(r)


def print_windows(r: dict[str, Any]) -> None:
    print()
    header = f"{'window read, 40 msgs / 3000 tokens (ms)':<44}{'p50':>8}{'p95':>8}{'p99':>8}"
    print(f"{header}{'raw p50':>10}{'raw p99':>10}{'p50 x raw':>11}")
    print("-" * (len(header) + 31))
    for label, w in r["window"].items():
        s, raw = w["history_store_ms"], w["raw_sql_ms"]
        print(
            f"{label:<44}{s['p50']:>8.3f}{s['p95']:>8.3f}{s['p99']:>8.3f}"
            f"{raw['p50']:>10.3f}{raw['p99']:>10.3f}{s['p50'] / raw['p50']:>10.1f}x"
        )
    plans = {"; ".join(w["plan"]) for w in r["window"].values()}
    print("(raw: the same SQL on plain sqlite3) query plan: " + " | ".join(sorted(plans)))


def print_breakdown(r: dict[str, Any]) -> None:
    b = r["breakdown"]
    print()
    header = f"where a turn goes ({b['turns']} sequential, 1 conversation)"
    print(f"{header:<52}{'ms/turn':>10}{'calls':>8}")
    print("-" * 70)
    for label, ms in b["ms_per_turn"].items():
        n = b["calls_per_turn"].get(label)
        if n == 0:
            continue
        print(f"{label:<52}{ms:>10.3f}{'' if n is None else f'{n:g}':>8}")
    print(f"{'total':<52}{b['mean_ms_per_turn']:>10.3f}")
    trips = b["db_thread_round_trips_per_turn"]
    print(
        f"per turn: {trips.get('serial', 0):g} units on the history connection (on the loop) "
        f"+ {trips.get('aiosqlite', 0):g} aiosqlite DB-API calls (a trip to its thread each)"
    )


if __name__ == "__main__":
    sys.exit(main())
