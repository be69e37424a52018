"""A real MCP server, written with the official SDK, for the MCP tests.

    python -m tests.fakes.mcp_server stdio
    python -m tests.fakes.mcp_server http PORT       # Streamable HTTP on 127.0.0.1:PORT/mcp
    python -m tests.fakes.mcp_server sse PORT        # the older SSE transport only

Its tools are the cases the bot must survive: one that answers (``echo``), one that
sleeps past any timeout, one that returns 100 KB, one that raises, one that adds a tool
at run time and says so (``notifications/tools/list_changed``), one that tells its
process id (so a test can kill it), one that ends the process mid-call, one that
returns a picture, and one marked destructive. ``FAKE_MCP_LOG`` names a file each call
is appended to (one JSON line), so a test can see what reached the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("fake")


def _log(tool: str, **arguments: object) -> None:
    path = os.environ.get("FAKE_MCP_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps({"tool": tool, "pid": os.getpid(), **arguments}) + "\n")


@server.tool()
async def echo(text: str) -> str:
    """Say the text back.

    Args:
        text: what to say back
    """
    _log("echo", text=text)
    return f"echo: {text}"


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait, then say so."""
    _log("sleep", seconds=seconds)
    await asyncio.sleep(seconds)
    return "slept"


@server.tool()
async def big() -> str:
    """Return 100 KB of text."""
    _log("big")
    return "".join(f"{i:07d}\n" for i in range(12_800))


@server.tool()
async def fail() -> str:
    """Always fails."""
    _log("fail")
    raise RuntimeError("the disk is on fire")


@server.tool(structured_output=False)
async def picture() -> list[object]:
    """A 64x32 red picture, with a line about it."""
    import io

    from PIL import Image as Picture

    buffer = io.BytesIO()
    Picture.new("RGB", (64, 32), (200, 0, 0)).save(buffer, "PNG")
    return ["a red rectangle", Image(data=buffer.getvalue(), format="png")]


@server.tool()
async def pid() -> str:
    """This server's process id."""
    return str(os.getpid())


@server.tool()
async def crash() -> str:
    """End this server's process in the middle of the call."""
    _log("crash")
    os._exit(3)


@server.tool()
async def add_tool(ctx: Context) -> str:
    """Add the tool ``late`` and tell the client its tool list changed."""

    async def late() -> str:
        """A tool that exists only after add_tool ran."""
        _log("late")
        return "late and here"

    if "late" not in {tool.name for tool in await server.list_tools()}:
        server.add_tool(late, name="late")
    await ctx.session.send_tool_list_changed()
    return "added late"


@server.tool(annotations=ToolAnnotations(destructive_hint=True))
async def wipe() -> str:
    """Delete everything (destructive)."""
    _log("wipe")
    return "wiped"


def main() -> None:
    transport = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if transport == "stdio":
        server.run("stdio")
    elif transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    elif transport == "sse":
        server.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown transport {transport!r}")


if __name__ == "__main__":
    main()
