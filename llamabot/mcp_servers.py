"""MCP servers: keep each one in ``[mcp.servers]`` connected, and offer its tools.

One supervisor task per enabled server connects to it (a child process over stdio, or
Streamable HTTP falling back to the older SSE transport), lists its tools and registers
them in the :class:`~llamabot.tools.ToolRegistry` as ``SERVER__tool``; the list follows
the server's ``notifications/tools/list_changed``. A server that exits or drops the
connection is connected again with backoff, and after 3 failures in 5 minutes left down
(``doctor`` and ``llamabot mcp list`` say why). While a server is down its tools are not
on offer, and a call in flight when it dies comes back to the model as an error.

The bot never waits for a server: they come up in the background, in parallel. A
server's results are untrusted text for the model, cut at ``[mcp] max_result_chars``.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp import types as mcp_types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from llamabot.config import McpSection, McpServer
from llamabot.tools import Tool, ToolFailed, ToolOutput, ToolRegistry

log = logging.getLogger(__name__)

State = Literal["starting", "up", "restarting", "down"]
# A server failing this many times within the window stays down.
MAX_FAILURES = 3
FAILURE_WINDOW_S = 300.0
FIRST_BACKOFF_S = 1.0  # doubled after each failure in a row, up to MAX_BACKOFF_S
MAX_BACKOFF_S = 30.0
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def tool_name(server: str, tool: str) -> str:
    """The name the model sees for ``tool`` of ``server``: unique across servers (two
    servers may both have a ``search``), within the 64 characters models accept."""
    return f"{server}__{_UNSAFE.sub('_', tool)}"[:64]


@dataclass
class ServerStatus:
    """What is known of one server now, for ``doctor``, ``llamabot mcp list`` and logs."""

    name: str
    transport: str  # stdio | streamable-http | sse
    state: State = "starting"
    detail: str = ""  # why it is restarting or down
    protocol: str = ""
    server: str = ""  # the server's own name and version
    tools: list[str] = field(default_factory=list)  # its tools on offer, by its own names
    connections: int = 0  # how many times it came up (more than 1: it was restarted)
    last_failure: str = ""  # why the last connection ended or failed, kept once up again


class McpServers:
    """The bot's MCP servers: started with the bot, stopped with it."""

    def __init__(
        self,
        section: McpSection,
        registry: ToolRegistry,
        *,
        base_dir: Path | None = None,
    ) -> None:
        self._changed = asyncio.Condition()
        self._servers = [
            _Server(name, config, section, registry, base_dir, self._notify)
            for name, config in sorted(section.servers.items())
            if config.enabled
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Connect to every server in the background; returns at once."""
        self._tasks = [
            asyncio.create_task(server.run(), name=f"mcp server {server.name}")
            for server in self._servers
        ]

    async def stop(self) -> None:
        """Disconnect from every server; stdio servers are terminated (killed after a
        grace period), none is left behind."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> list[ServerStatus]:
        return [server.status for server in self._servers]

    async def wait_for(self, check: Callable[[list[ServerStatus]], bool]) -> None:
        """Wait until ``check(self.status())`` holds; it is asked again at each change."""
        async with self._changed:
            await self._changed.wait_for(lambda: check(self.status()))

    async def answered(self, timeout_s: float) -> list[ServerStatus]:
        """A copy of the status once every server came up or failed its first attempt
        (or after ``timeout_s``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.wait_for(lambda now: all(s.state != "starting" for s in now))
        return [dataclasses.replace(s, tools=list(s.tools)) for s in self.status()]

    def _notify(self) -> None:
        async def tell() -> None:
            async with self._changed:
                self._changed.notify_all()

        asyncio.get_running_loop().create_task(tell())


class _Lost(Exception):
    """The connection to the server ended (its process exited, or HTTP failed)."""


class _Server:
    """One server: its connection, kept up by :meth:`run`, and its tools' handlers."""

    def __init__(
        self,
        name: str,
        config: McpServer,
        section: McpSection,
        registry: ToolRegistry,
        base_dir: Path | None,
        notify: Callable[[], None],
    ) -> None:
        self.name = name
        self.source = f"mcp:{name}"
        self._config = config
        self._section = section
        self._registry = registry
        self._base_dir = base_dir
        self._notify = notify
        self._http: str | None = None  # which HTTP transport answered: streamable-http | sse
        self.status = ServerStatus(name, "stdio" if config.command else "streamable-http")
        self._session: ClientSession | None = None
        self._wake = asyncio.Event()
        self._lost = ""
        self._stale = False

    def _set(self, state: State, detail: str = "") -> None:
        self.status.state = state
        self.status.detail = detail
        self._notify()

    async def run(self) -> None:
        """Connect, and connect again after each failure, until stopped or given up."""
        failures: collections.deque[float] = collections.deque()
        delay = FIRST_BACKOFF_S
        while True:
            came_up = False
            try:
                came_up = await self._connect()
                reason = "the connection ended"
            except asyncio.CancelledError:
                self._offer([])
                raise
            except BaseException as exc:  # anyio's task groups raise groups
                if not isinstance(exc, Exception):
                    raise
                reason = describe_failure(exc)
            finally:
                self._session = None
            self._offer([])
            now = time.monotonic()
            failures.append(now)
            while failures and now - failures[0] > FAILURE_WINDOW_S:
                failures.popleft()
            if len(failures) >= MAX_FAILURES:
                why = f"failed {len(failures)} times in 5 minutes; the last: {reason}"
                self.status.last_failure = reason
                log.error("MCP server %s stays down: %s", self.name, why)
                self._set("down", why)
                return
            if came_up:
                delay = FIRST_BACKOFF_S
            self.status.last_failure = reason
            log.warning("MCP server %s: %s; connecting again in %g s", self.name, reason, delay)
            self._set("restarting", reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _connect(self) -> bool:
        """One connection, until it ends; whether it came up."""
        if self._config.command:
            return await self._session_over("stdio")
        if self._http is not None:
            return await self._session_over(self._http)
        try:
            return await self._session_over("streamable-http")
        except _Lost:
            raise
        except Exception as first:
            if self.status.state == "up":
                raise
            log.info(
                "MCP server %s: no Streamable HTTP at %s (%s); trying the older SSE transport",
                self.name,
                self._config.url,
                describe_failure(first),
            )
            try:
                return await self._session_over("sse")
            except Exception:
                raise first from None

    async def _session_over(self, transport: str) -> bool:
        self._lost, self._stale = "", False
        self._wake.clear()
        async with contextlib.AsyncExitStack() as stack:
            read, write = await stack.enter_async_context(self._open(transport))
            group = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(group.cancel_scope.cancel)
            # The session reads through a relay that notices the stream's end: a stdio
            # server that exits ends it at once, without waiting for a call to fail.
            relay_send, relay_receive = anyio.create_memory_object_stream[Any](0)
            group.start_soon(self._relay, read, relay_send)
            session = await stack.enter_async_context(
                ClientSession(relay_receive, write, message_handler=self._on_message)
            )
            with anyio.fail_after(self._section.start_timeout_s):
                started = await session.initialize()
                tools = await self._list_tools(session)
            if transport != "stdio":
                self._http = transport
            self.status.transport = transport
            self.status.protocol = str(started.protocol_version)
            info = started.server_info
            self.status.server = f"{info.name} {info.version}".strip() if info else ""
            self._session = session
            self.status.connections += 1
            self._offer(tools)
            log.info(
                "MCP server %s is up (%s, protocol %s): %s",
                self.name,
                transport,
                self.status.protocol,
                ", ".join(self.status.tools) or "no tools",
            )
            self._set("up")
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self._lost:
                    raise _Lost(self._lost)
                if self._stale:
                    self._stale = False
                    await self._refresh(session)

    @contextlib.asynccontextmanager
    async def _open(self, transport: str) -> AsyncIterator[tuple[Any, Any]]:
        if transport == "stdio":
            command = self._config.command
            cwd = Path(self._config.cwd) if self._config.cwd else None
            if cwd is not None and not cwd.is_absolute() and self._base_dir is not None:
                cwd = self._base_dir / cwd
            params = StdioServerParameters(
                command=command[0],
                args=command[1:],
                env={name: os.environ[name] for name in self._config.env if name in os.environ},
                cwd=cwd,
            )
            async with stdio_client(params) as (read, write):
                yield read, write
            return
        headers = self._headers()
        if transport == "sse":
            async with sse_client(self._config.url, headers=headers) as streams:
                yield streams[0], streams[1]
            return
        async with (
            create_mcp_http_client(headers=headers) as client,
            streamable_http_client(self._config.url, http_client=client) as streams,
        ):
            yield streams[0], streams[1]

    def _headers(self) -> dict[str, str]:
        headers = {}
        for header, variable in self._config.headers_env.items():
            value = os.environ.get(variable)
            if value is None:
                raise RuntimeError(
                    f"the environment variable {variable} (for the {header} header) is not "
                    "set; set it where the bot starts, or remove it from headers_env"
                )
            headers[header] = value
        return headers

    async def _relay(self, read: Any, send: Any) -> None:
        async with send:
            async for item in read:
                await send.send(item)
        self._lose("the server closed the connection (its process exited?)")

    def _lose(self, why: str) -> None:
        if not self._lost:
            self._lost = why
            self._wake.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._stale = True
            self._wake.set()
        elif isinstance(message, Exception):
            log.warning("MCP server %s: %s", self.name, describe_failure(message))
            if not self._config.command:  # an HTTP request failed: connect afresh
                self._lose(describe_failure(message))

    async def _list_tools(self, session: ClientSession) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        while True:
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def _refresh(self, session: ClientSession) -> None:
        """The server said its tools changed: offer the new list (the old one stays if
        asking fails)."""
        try:
            with anyio.fail_after(self._section.start_timeout_s):
                tools = await self._list_tools(session)
        except Exception as exc:
            log.warning("MCP server %s: could not list its tools again: %s", self.name, exc)
            return
        self._offer(tools)
        log.info("MCP server %s changed its tools: %s", self.name, ", ".join(self.status.tools))
        self._notify()

    def _offer(self, tools: list[mcp_types.Tool]) -> None:
        config = self._config
        kept = [
            tool
            for tool in tools
            if (not config.allow or tool.name in config.allow) and tool.name not in config.deny
        ]
        made = [self._tool(tool) for tool in kept]
        refused = self._registry.replace(self.source, made)
        for name in refused:
            log.warning(
                "MCP server %s: its tool %s is not offered; another tool has that name",
                self.name,
                name,
            )
        self.status.tools = [t.remote_name or t.name for t in made if t.name not in refused]

    def _tool(self, tool: mcp_types.Tool) -> Tool:
        config = self._config
        destructive = bool(tool.annotations and tool.annotations.destructive_hint)
        return Tool(
            name=tool_name(self.name, tool.name),
            description=tool.description or tool.title or tool.name,
            handler=functools.partial(self._call, tool.name),
            arguments=None,
            permission="admin" if destructive or tool.name in config.confirm else "everyone",
            plugin=self.source,
            schema=dict(tool.input_schema),
            timeout_s=self._section.call_timeout_s,
            sensitive=tool.name in config.sensitive,
            remote_name=tool.name,
        )

    async def _call(self, name: str, _ctx: object, **arguments: Any) -> str | ToolOutput:
        session = self._session
        if session is None:
            raise ToolFailed(f"the MCP server {self.name} is not connected; try again later")
        try:
            # The bot's own timeout ([mcp] call_timeout_s, in run_tool) comes first.
            result = await session.call_tool(
                name, arguments, read_timeout_seconds=self._section.call_timeout_s + 5
            )
        except MCPError as exc:
            raise ToolFailed(f"the MCP server {self.name}: {exc}") from None
        if not isinstance(result, mcp_types.CallToolResult):
            raise ToolFailed(f"the MCP server {self.name} answered {type(result).__name__}")
        text = render_result(result, self._section.max_result_chars)
        if result.is_error:
            raise ToolFailed(text)
        pictures = tuple(
            base64.b64decode(block.data)
            for block in result.content
            if isinstance(block, mcp_types.ImageContent)
        )
        # A vision model is shown the pictures too (issue 15's limits); others read the
        # line that describes each.
        return ToolOutput(text, pictures) if pictures else text


def render_result(result: mcp_types.CallToolResult, max_chars: int) -> str:
    """A tool result as the text the model reads: text as it is, anything else in one
    line; cut at ``max_chars`` with a marker saying so."""
    parts = [_describe(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    text = "\n".join(parts)
    if len(text) > max_chars:
        text = (
            text[:max_chars]
            + f"\n[… cut: the result was {len(text):,} characters; the first {max_chars:,}"
            " are shown]"
        )
    return text


def _describe(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        kind = "an image" if isinstance(block, mcp_types.ImageContent) else "audio"
        size = len(block.data) * 3 // 4
        return f"[{kind} ({block.mime_type}, {size:,} bytes)]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[a link to {block.uri} ({block.name})]"
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        return f"[a resource {resource.uri} ({resource.mime_type or 'binary'}), not shown]"
    return f"[{getattr(block, 'type', type(block).__name__)} content, not shown]"


def describe_failure(exc: BaseException) -> str:
    """One line for an exception, looking inside anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        return f"cannot start it: {exc.strerror}: {exc.filename}"
    if isinstance(exc, TimeoutError):
        return "it did not answer in time ([mcp] start_timeout_s)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


async def probe(section: McpSection, base_dir: Path | None) -> list[ServerStatus]:
    """Connect to every server once and report: for ``doctor`` and ``llamabot mcp list``."""
    servers = McpServers(section, ToolRegistry(), base_dir=base_dir)
    servers.start()
    try:
        found = await servers.answered(section.start_timeout_s + 5)
    finally:
        await servers.stop()
    for status in found:  # one attempt here: a failed one is not retried
        if status.state == "restarting":
            status.state = "down"
    return found
