"""Tools from MCP servers: real servers written with the SDK (``tests/fakes/mcp_server.py``)
over stdio, Streamable HTTP and SSE, the real Bot, and the fake Ollama scripted to call
them. What reached a server is read from the log file it appends each call to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from llamabot import mcp_servers
from llamabot.app import Bot
from llamabot.cli import main
from llamabot.config import Config, ConfigError, MetricsSection, parse_config
from llamabot.mcp_servers import ServerStatus
from llamabot.plugin_loader import load_plugins
from llamabot.testing import FakePlatform
from tests.fakes.ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
KEY = "console:local"


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    # The backoff before connecting again: short here, so a restart takes no second.
    monkeypatch.setattr(mcp_servers, "FIRST_BACKOFF_S", 0.05)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        yield server


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[dict[str, Any]]]:
    """The calls that reached the fake MCP servers (stdio and HTTP alike)."""
    log = tmp_path / "mcp-calls.jsonl"
    monkeypatch.setenv("FAKE_MCP_LOG", str(log))

    def read() -> list[dict[str, Any]]:
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    return read


def stdio_server(extra: str = "") -> str:
    return f"""
command = [{json.dumps(sys.executable)}, "-m", "tests.fakes.mcp_server", "stdio"]
cwd = {json.dumps(str(ROOT))}
env = ["FAKE_MCP_LOG"]
{extra}
"""


def toml(
    url: str,
    tmp_path: Path,
    servers: str,
    *,
    tools: str = '["mcp:fake"]',
    mcp: str = "",
) -> str:
    return f"""
[bot]
admins = ["console:root"]
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[storage]
url = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"
[personas.assistant]
prompt = "MCP-PERSONA"
tools = {tools}
[personas.plain]
prompt = "PLAIN-PERSONA"
tools = ["time"]
[[bindings]]
platform = "console"
channel = "*"
persona = "assistant"
respond = "always"
[[bindings]]
platform = "console"
channel = "plain"
persona = "plain"
respond = "always"
[plugins]
dirs = []
[mcp]
{mcp}
{servers}
"""


def config_for(url: str, tmp_path: Path, servers: str | None = None, **kwargs: str) -> Config:
    servers = servers if servers is not None else "[mcp.servers.fake]\n" + stdio_server()
    return parse_config(toml(url, tmp_path, servers, **kwargs), tmp_path / "bot.toml")


def bot(config: Config, adapter: FakePlatform, tmp_path: Path) -> Bot:
    return Bot(config, adapters=[adapter], plugins=load_plugins(config, tmp_path))


async def until(b: Bot, check: Callable[[list[ServerStatus]], bool]) -> list[ServerStatus]:
    assert b.mcp is not None
    async with asyncio.timeout(20):
        await b.mcp.wait_for(check)
    return b.mcp.status()


def up(name: str = "fake") -> Callable[[list[ServerStatus]], bool]:
    return lambda status: any(s.name == name and s.state == "up" for s in status)


def offered(request: dict[str, Any]) -> list[str]:
    return [tool["function"]["name"] for tool in request.get("tools") or []]


def result_of(request: dict[str, Any]) -> str:
    message = request["messages"][-1]
    assert message["role"] == "tool"
    return str(message["content"])


def call(name: str, **arguments: Any) -> list[dict[str, Any]]:
    return [{"name": name, "arguments": arguments}]


@contextlib.asynccontextmanager
async def http_server(mode: str) -> AsyncIterator[str]:
    """The fake server over ``http`` (Streamable HTTP at /mcp) or ``sse`` (at /sse) in a
    process of its own; yields its URL once uvicorn says it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.mcp_server",
        mode,
        str(port),
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(20):
            while b"Uvicorn running on" not in await process.stderr.readline():
                pass
        drain = asyncio.create_task(process.stderr.read())  # never let its pipe fill
        yield f"http://127.0.0.1:{port}/{'mcp' if mode == 'http' else 'sse'}"
    finally:
        process.terminate()
        await process.wait()
    await drain


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


async def server_pid(b: Bot) -> int:
    tool = b.plugins.tools.get("fake__pid")
    assert tool is not None
    return int(await tool.handler(None))


# -- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "tools", "problem"),
    [
        ("", '["mcp:nope"]', "there is no [mcp.servers.nope]"),
        ('[mcp.servers.fake]\nurl = "http://x/mcp"\ncommand = ["a"]', "[]", "not both"),
        ("[mcp.servers.fake]\ncwd = '/'", "[]", "either command"),
        ('[mcp.servers.fake]\nurl = "ftp://x"', "[]", "must start with http"),
        ('[mcp.servers."two words"]\ncommand = ["a"]', "[]", "letters, digits"),
    ],
)
def test_check_names_what_is_wrong_in_the_mcp_section(
    tmp_path: Path, servers: str, tools: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        config_for("http://127.0.0.1:1", tmp_path, servers, tools=tools)
    assert problem in "; ".join(caught.value.problems)


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("platform", ["console", "discord", "telegram"])
async def test_a_stdio_server_s_tool_answers_the_model(
    fake: FakeOllama, tmp_path: Path, calls: Callable[[], list[dict[str, Any]]], platform: str
) -> None:
    adapter = FakePlatform(platform=platform)
    fake.script = [call("fake__echo", text="hi"), "The server said hi."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        [status] = await until(b, up())
        assert status.transport == "stdio" and status.protocol
        await adapter.say("echo hi")
    assert calls() == [{"tool": "echo", "pid": calls()[0]["pid"], "text": "hi"}]
    first, second = fake.chat_requests
    tools = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert "fake__echo" in tools and "fake__late" not in tools
    assert tools["fake__echo"]["description"].startswith("Say the text back.")
    assert tools["fake__echo"]["parameters"]["required"] == ["text"]
    assert result_of(second) == "echo: hi"
    assert adapter.messages_in(f"{platform}:local") == ["The server said hi."]


@pytest.mark.parametrize("mode", ["http", "sse"])
async def test_an_http_server_s_tool_answers_the_model(
    fake: FakeOllama, tmp_path: Path, calls: Callable[[], list[dict[str, Any]]], mode: str
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__echo", text="over http"), "Done."]
    async with http_server(mode) as url:
        servers = f'[mcp.servers.fake]\nurl = "{url}"'
        async with bot(config_for(fake.url, tmp_path, servers), adapter, tmp_path) as b:
            [status] = await until(b, up())
            # The older SSE transport is found by itself when Streamable HTTP is not there.
            assert status.transport == ("streamable-http" if mode == "http" else "sse")
            await adapter.say("echo over http")
    assert [c["text"] for c in calls()] == ["over http"]
    assert result_of(fake.chat_requests[1]) == "echo: over http"
    assert adapter.messages_in(KEY) == ["Done."]


async def test_tool_names_stay_unique_when_two_servers_share_one(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    servers = "[mcp.servers.fake]\n" + stdio_server() + "[mcp.servers.other]\n" + stdio_server()
    config = config_for(fake.url, tmp_path, servers, tools='["mcp:fake", "mcp:other/echo"]')
    async with bot(config, adapter, tmp_path) as b:
        await until(b, lambda all: all and all[0].state == all[1].state == "up")
        await adapter.say("which echo?")
    names = offered(fake.chat_requests[0])
    assert "fake__echo" in names and "other__echo" in names
    assert [n for n in names if n.startswith("other__")] == ["other__echo"]  # /echo alone


# -- what can go wrong comes back to the model as a result -----------------------------


async def test_a_slow_call_times_out_and_the_reply_goes_on(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__sleep", seconds=30), "It was too slow."]
    config = config_for(fake.url, tmp_path, mcp="call_timeout_s = 0.5")
    async with bot(config, adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("sleep")
    assert result_of(fake.chat_requests[1]) == (
        "error: fake__sleep took longer than 0.5 s and was stopped"
    )
    assert adapter.messages_in(KEY) == ["It was too slow."]


async def test_a_failing_tool_and_a_long_result_come_back_as_results(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__fail"), "It failed.", call("fake__big"), "It was long."]
    config = config_for(fake.url, tmp_path, mcp="max_result_chars = 1000")
    async with bot(config, adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("fail")
        await adapter.say("big")
    failed = result_of(fake.chat_requests[1])
    assert failed.startswith("error: fake__fail failed:") and "fail" in failed[25:]
    long = result_of(fake.chat_requests[3])
    assert long.startswith("0000000\n0000001\n")
    text, marker = long[:1000], long[1000:]
    assert "0000124\n" in text
    assert marker == "\n[… cut: the result was 102,400 characters; the first 1,000 are shown]"
    assert adapter.messages_in(KEY) == ["It failed.", "It was long."]


async def test_a_server_dying_mid_call_is_an_error_result_and_it_comes_back(
    fake: FakeOllama, tmp_path: Path, calls: Callable[[], list[dict[str, Any]]]
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__crash"), "The server crashed.", call("fake__echo", text="again")]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        await until(b, up())
        first_pid = await server_pid(b)
        await adapter.say("crash")
        assert result_of(fake.chat_requests[1]).startswith("error: fake__crash failed:")
        assert adapter.messages_in(KEY) == ["The server crashed."]
        # Restarted, with its tools on offer again, from a new process.
        await until(b, lambda all: all[0].state == "up" and all[0].connections == 2)
        assert await server_pid(b) != first_pid
        fake.reply = "Back."
        await adapter.say("echo again")
    assert result_of(fake.chat_requests[3]) == "echo: again"
    assert [c["tool"] for c in calls()] == ["crash", "echo"]


async def test_a_killed_server_is_restarted_with_its_tools(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        await until(b, up())
        pid = await server_pid(b)
        os.kill(pid, signal.SIGKILL)
        [status] = await until(b, lambda all: all[0].state == "up" and all[0].connections == 2)
        assert "closed the connection" in status.last_failure
        assert b.plugins.tools.get("fake__echo") is not None
        assert await server_pid(b) != pid


async def test_a_server_failing_three_times_stays_down_and_says_why(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    servers = '[mcp.servers.fake]\ncommand = ["/nonexistent/mcp-server"]'
    async with bot(config_for(fake.url, tmp_path, servers), adapter, tmp_path) as b:
        # The platforms did not wait for the server: the bot answers meanwhile.
        await adapter.say("hello")
        [status] = await until(b, lambda all: all[0].state == "down")
        await adapter.say("hello again")
    assert status.detail.startswith("failed 3 times in 5 minutes")
    assert "/nonexistent/mcp-server" in status.detail
    assert offered(fake.chat_requests[0]) == offered(fake.chat_requests[1]) == []
    assert len(adapter.messages_in(KEY)) == 2


# -- which persona sees which tool -----------------------------------------------------


async def test_a_changed_tool_list_is_offered_on_the_next_turn(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__add_tool"), "Added.", call("fake__late"), "Late."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("add a tool")
        await until(b, lambda all: "late" in all[0].tools)
        await adapter.say("use it")
    assert "fake__late" not in offered(fake.chat_requests[0])
    assert "fake__late" in offered(fake.chat_requests[2])
    assert result_of(fake.chat_requests[3]) == "late and here"


async def test_a_persona_without_the_server_never_sees_its_tools(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    fake.script = [call("fake__echo", text="sneaky"), "No."]
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("echo", chat="plain")
    assert offered(fake.chat_requests[0]) == ["time"]
    assert result_of(fake.chat_requests[1]).startswith("error: there is no tool 'fake__echo'")


async def test_destructive_and_confirm_tools_are_offered_to_admins_only(
    fake: FakeOllama, tmp_path: Path
) -> None:
    adapter = FakePlatform()
    servers = "[mcp.servers.fake]\n" + stdio_server('confirm = ["big"]\ndeny = ["fail"]')
    async with bot(config_for(fake.url, tmp_path, servers), adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("hi", user="guest")
        await adapter.say("hi", user="root", chat="den")
    guest, admin = (set(offered(r)) for r in fake.chat_requests)
    assert "fake__echo" in guest and not guest & {"fake__wipe", "fake__big", "fake__fail"}
    assert {"fake__echo", "fake__wipe", "fake__big"} <= admin and "fake__fail" not in admin


# -- the operator's side ---------------------------------------------------------------


async def test_stopping_the_bot_leaves_no_server_process(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:
        await until(b, up())
        pid = await server_pid(b)
        assert alive(pid)
    assert not alive(pid)
    assert b.plugins.tools.get("fake__echo") is None


async def test_calls_are_counted_per_server_and_tool(fake: FakeOllama, tmp_path: Path) -> None:
    adapter = FakePlatform()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_for(fake.url, tmp_path).model_copy(
        update={"metrics": MetricsSection(listen=f"127.0.0.1:{port}")}
    )
    fake.script = [call("fake__echo", text="a"), "A.", call("fake__fail"), "B."]
    async with bot(config, adapter, tmp_path) as b:
        await until(b, up())
        await adapter.say("a")
        await adapter.say("b")
        sample = b.metrics.sample
        labels = {"source": "mcp:fake"}
        assert sample("llamabot_tool_calls_total", tool="fake__echo", outcome="ok", **labels) == 1
        assert (
            sample("llamabot_tool_calls_total", tool="fake__fail", outcome="error", **labels) == 1
        )
        assert sample("llamabot_tool_seconds_count", **labels) == 2


def test_mcp_list_prints_each_server_s_state_and_tools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    servers = (
        "[mcp.servers.fake]\n"
        + stdio_server()
        + '[mcp.servers.broken]\ncommand = ["/nonexistent/mcp-server"]\n'
        + '[mcp.servers.off]\nurl = "http://127.0.0.1:1/mcp"\nenabled = false\n'
    )
    path = tmp_path / "bot.toml"
    path.write_text(toml("http://127.0.0.1:1", tmp_path, servers, tools="[]"))
    assert main(["mcp", "list", "--config", str(path)]) == 1  # one server is down
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["fake"].split()[1:3] == ["up", "stdio"] and "echo, sleep" in rows["fake"]
    assert rows["broken"].split()[1] == "down" and "/nonexistent/mcp-server" in rows["broken"]
    assert rows["off"].split()[1] == "off"


async def test_a_picture_in_a_result_is_shown_to_a_vision_model_only(tmp_path: Path) -> None:
    from tests.fakes.ollama import FakeModel

    seeing = FakeModel("llava", capabilities=("completion", "tools", "vision"))
    async with FakeOllama(["llama3.2", seeing]) as fake:
        fake.script = [call("fake__picture"), "A red rectangle.", call("fake__picture"), "Red."]
        adapter = FakePlatform()
        config = config_for(fake.url, tmp_path)
        vision = config.model_copy(
            update={
                "personas": {
                    **config.personas,
                    "assistant": config.personas["assistant"].model_copy(update={"model": "llava"}),
                }
            }
        )
        async with bot(vision, adapter, tmp_path) as b:
            await until(b, up())
            await adapter.say("show me")
        shown = fake.chat_requests[1]["messages"][-1]
        assert shown["role"] == "tool" and shown["content"].startswith("a red rectangle\n[an image")
        # Shrunk and re-encoded as a person's picture is (JPEG: it has no transparency).
        assert len(shown["images"]) == 1 and fake.images[0].startswith(b"\xff\xd8\xff")

        adapter = FakePlatform()
        async with bot(config_for(fake.url, tmp_path), adapter, tmp_path) as b:  # llama3.2
            await until(b, up())
            await adapter.say("show me")
        told = fake.chat_requests[3]["messages"][-1]
        assert "images" not in told and "[an image (image/png" in told["content"]
