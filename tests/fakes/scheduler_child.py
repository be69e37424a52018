"""A bot process for the scheduler-leadership test: prints every task it runs.

    python -m tests.fakes.scheduler_child URL COUNT

Starts a Bot on the database at URL (no platforms), schedules COUNT tasks 0.3 s apart
(starting 1 s from now), prints ``ready``, then ``ran N PID`` for each task it runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from llamabot import JobContext, Plugin
from llamabot.app import Bot
from llamabot.config import parse_config
from llamabot.plugin_host import PluginHost
from llamabot.testing import ScriptedModel

plugin = Plugin("lead")


@plugin.task
async def deliver(ctx: JobContext, data: dict[str, Any]) -> None:
    print(f"ran {data['n']} {os.getpid()}", flush=True)


async def main(url: str, count: int) -> None:
    config = parse_config(f'[storage]\nurl = "{url}"\n', Path("bot.toml"))
    host = PluginHost()
    host.add(plugin, "scheduler_child", config)
    async with Bot(config, model=ScriptedModel(), adapters=[], plugins=host) as bot:
        assert bot.scheduler is not None
        start = datetime.now(UTC) + timedelta(seconds=1)
        for n in range(count):
            await bot.scheduler.run_at(start + timedelta(seconds=0.3 * n), deliver, {"n": n})
        print("ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
