"""Several bot processes on one PostgreSQL database: each job runs once, in the leader."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TASKS = 20


async def spawn(url: str, count: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.scheduler_child",
        url,
        str(count),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    return process


async def test_two_processes_run_each_job_once_and_the_second_takes_over_from_a_killed_leader(
    store_url: str,
) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite serves one process; a second is refused (tested elsewhere)")
    first = await spawn(store_url, TASKS)
    second = await spawn(store_url, 0)
    ran: list[tuple[int, int]] = []  # (task, pid)

    async def read(process: asyncio.subprocess.Process, until: int) -> None:
        assert process.stdout is not None
        while len({n for n, _ in ran}) < until:
            line = await process.stdout.readline()
            if not line:
                return
            _, n, pid = line.decode().split()
            ran.append((int(n), int(pid)))

    try:
        async with asyncio.timeout(30):
            await read(first, 5)  # the first process leads: it was there first
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await read(second, TASKS)
    finally:
        for process in (first, second):
            if process.returncode is None:
                process.kill()
                await process.wait()
    counts = Counter(n for n, _ in ran)
    assert sorted(counts) == list(range(TASKS))
    assert set(counts.values()) == {1}  # none twice
    assert {pid for _, pid in ran} == {first.pid, second.pid}
