"""The admin page with 1,000,000 stored messages: how long does each page take?

The page (``llamabot web``'s parts: the history store, the audit log, bot.toml) serves the
database bench_core.py builds (1,000,000 messages: one conversation of 100,000 and 100 of
9,000; cached in $TMPDIR/llamabot-bench/), logged in through the one-time link. Each page
is fetched over loopback by aiohttp, rounds alternating over the pages; printed: p50 and
p99 per page, in milliseconds. Target (issue 18): every page under 150 ms.

    PYTHONPATH=. python bench/bench_web.py [--rounds 50]

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import measure
from bench.bench_core import (
    BIG_KEY,
    SMALL_CONVERSATIONS,
    TOTAL_MESSAGES,
    cached_database,
    small_key,
    working_copy,
)
from llamabot.config import load_config
from llamabot.storage.engine import create_engine
from llamabot.web.server import AdminPage, AdminParts


async def measure_pages(database: Path, rounds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="llamabot-web-bench-"))
    path = folder / "bot.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{database}"\n'
        '[personas.assistant]\nprompt = "You are a helpful assistant."\n'
        '[web]\nlisten = "127.0.0.1:0"\n'
    )
    config = load_config(path)
    engine = create_engine(config.storage.url)
    parts = AdminParts.alone(path, config, engine)
    store = parts.store
    await store.index_for_search()  # as the running bot keeps it (every minute)
    page = AdminPage(parts, config.web)
    link = await page.start()
    with sqlite3.connect(database) as db:
        big = db.execute("SELECT id FROM conversations WHERE key = ?", (BIG_KEY,)).fetchone()[0]
        small = db.execute(
            "SELECT id FROM conversations WHERE key = ?", (small_key(0),)
        ).fetchone()[0]
        oldest = db.execute(
            "SELECT min(id) + 5000 FROM messages WHERE conversation_id = ?", (big,)
        ).fetchone()[0]
    pages = {
        "overview": "/",
        "personas": "/personas",
        "persona": "/personas/assistant",
        "bindings": "/bindings",
        "conversations": "/conversations",
        "transcript (100k messages)": f"/conversations/{big}",
        "transcript, deep page": f"/conversations/{big}?before={oldest}",
        "transcript (9k messages)": f"/conversations/{small}",
        "search, a rare word": f"/conversations/{big}?q=976",
        "search, a word in half of all": f"/conversations/{big}?q=weather",
        "plugins": "/plugins",
        "audit": "/audit",
        "logs": "/logs",
    }
    times: dict[str, list[float]] = {name: [] for name in pages}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            async with client.get(link) as answer:
                assert answer.status == 200
            for _ in range(rounds):
                for name, url in pages.items():
                    started = time.perf_counter()
                    async with client.get(page.url + url) as answer:
                        await answer.read()
                        assert answer.status == 200, (url, answer.status)
                    times[name].append(time.perf_counter() - started)
    finally:
        await page.stop()
        await store.aclose()
        await engine.dispose()
    return {name: measure.summary_ms(values) for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    keys = [BIG_KEY, *(small_key(i) for i in range(SMALL_CONVERSATIONS))]
    source, fill_s = cached_database(keys, TOTAL_MESSAGES, "1m")
    database = working_copy(source, "web-run.db")
    results = asyncio.run(measure_pages(database, args.rounds))
    print(f"Admin page, {TOTAL_MESSAGES:,} messages stored, {args.rounds} rounds (ms)")
    print(f"{'page':<30} {'p50':>8} {'p99':>8} {'max':>8}")
    for name, figures in results.items():
        print(f"{name:<30} {figures['p50']:>8.1f} {figures['p99']:>8.1f} {figures['max']:>8.1f}")
    report = {
        "machine": measure.machine({"sqlite": sqlite3.sqlite_version}),
        "messages": TOTAL_MESSAGES,
        "rounds": args.rounds,
        "fill_s": fill_s,
        "pages": results,
    }
    measure.save(report, Path(__file__).with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
