"""An MCP tool call through llamabot: what does the bot add to a call, over stdio and
over Streamable HTTP?

The fake MCP server (tests/fakes/mcp_server.py, written with the official SDK) is
started by llamabot's McpServers, as ``[mcp.servers]`` would start it; its ``echo`` tool
is called through the registry the reply loop uses (``run_tool``: the timeout, the
result cap, the log line), and directly through the SDK's ``ClientSession`` on a
second connection, calls alternating. Printed: p50/p99 per call in milliseconds, and
how long the server took to come up.

    PYTHONPATH=. python bench/bench_mcp.py [--calls 300]

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from bench import measure
from llamabot.config import McpSection
from llamabot.mcp_servers import McpServers
from llamabot.tools import ToolRegistry, run_tool

ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.mcp_server", "http", str(port),
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    while b"Uvicorn running on" not in await process.stderr.readline():
        pass
    drain = asyncio.create_task(process.stderr.read())
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        await process.wait()
        await drain


@contextlib.asynccontextmanager
async def raw_session(server: dict[str, Any]) -> AsyncIterator[ClientSession]:
    if "command" in server:
        command = server["command"]
        params = StdioServerParameters(command=command[0], args=command[1:], cwd=str(ROOT))
        transport: Any = stdio_client(params, errlog=open("/dev/null", "w"))  # noqa: SIM115
    else:
        transport = streamable_http_client(server["url"])
    async with transport as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


async def one(server: dict[str, Any], calls: int) -> dict[str, Any]:
    section = McpSection.model_validate({"servers": {"fake": server}})
    registry = ToolRegistry()
    servers = McpServers(section, registry, base_dir=ROOT)
    started = time.perf_counter()
    servers.start()
    try:
        await servers.wait_for(lambda all: all[0].state == "up")
        up_s = time.perf_counter() - started
        tool = registry.get("fake__echo")
        assert tool is not None
        bot: list[float] = []
        raw: list[float] = []
        async with raw_session(server) as session:
            for i in range(calls):
                started = time.perf_counter()
                result = await run_tool(tool, None, {"text": f"call {i}"}, 30)
                bot.append(time.perf_counter() - started)
                assert result.outcome == "ok"
                started = time.perf_counter()
                await session.call_tool("echo", {"text": f"call {i}"})
                raw.append(time.perf_counter() - started)
    finally:
        await servers.stop()
    return {"up_s": up_s, "llamabot": measure.summary_ms(bot), "sdk": measure.summary_ms(raw)}


async def run(calls: int) -> dict[str, Any]:
    stdio = {"command": [sys.executable, "-m", "tests.fakes.mcp_server", "stdio"], "cwd": str(ROOT)}
    results = {"stdio": await one(stdio, calls)}
    async with http_server() as url:
        results["streamable-http"] = await one({"url": url}, calls)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    logging.getLogger("llamabot").setLevel(logging.WARNING)  # no log line per call here
    results = asyncio.run(run(args.calls))
    print(f"MCP tool call (echo), {args.calls} calls each, ms")
    heads = ("up in", "bot p50", "bot p99", "SDK p50", "SDK p99")
    print(f"{'transport':<16} " + " ".join(f"{h:>8}" for h in heads))
    for name, r in results.items():
        print(
            f"{name:<16} {r['up_s'] * 1000:>7.0f}ms {r['llamabot']['p50']:>8.2f} "
            f"{r['llamabot']['p99']:>8.2f} {r['sdk']['p50']:>8.2f} {r['sdk']['p99']:>8.2f}"
        )
    measure.save({"machine": measure.machine(), "calls": args.calls, "results": results},
                 Path(__file__).with_suffix(".json"))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
