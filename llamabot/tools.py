"""Tools the model may call: what a tool is, the registry, and running one call.

Tools come from plugins (``@plugin.tool``) and from MCP servers (``mcp_servers.py``) and
register here; the reply loop asks the registry which tools a persona may use on a turn
and never knows where they came from. A plugin tool's arguments are validated by a
pydantic model made from its signature, and the JSON schema the model sees is that
model's, with the descriptions from the docstring; an MCP tool's schema is the server's,
and the server checks its own arguments.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from llamabot.docstrings import read_docstring
from llamabot.llm.base import ToolSpec

log = logging.getLogger(__name__)

ToolPermission = Literal["everyone", "admin"]
_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_-]{0,63}")


class ToolFailed(Exception):
    """Raised by a handler whose tool answered with an error (an MCP server's
    ``isError`` result): the model reads the message, and no traceback is logged."""


@dataclass(frozen=True)
class Tool:
    """A function the model may call. ``handler(ctx, **arguments)`` returns its result:
    text, or anything JSON can encode.

    ``plugin`` says where it comes from: a plugin's name, or ``mcp:SERVER``. ``arguments``
    validates the model's arguments; without it (an MCP tool) ``schema`` is what the
    model is told and the handler gets the arguments as they came.
    """

    name: str
    description: str
    handler: Callable[..., Awaitable[Any]]
    arguments: type[BaseModel] | None
    permission: ToolPermission
    plugin: str
    schema: Mapping[str, Any] | None = None
    timeout_s: float | None = None  # None: [tools] timeout_s
    sensitive: bool = False  # calls are logged without their arguments
    remote_name: str | None = None  # an MCP tool's own name on its server

    @functools.cached_property
    def spec(self) -> ToolSpec:
        """The tool as the model is told of it (made once: every reply offering the tool
        sends it)."""
        if self.arguments is None:
            given = dict(self.schema or {})
            given.setdefault("type", "object")
            given.setdefault("properties", {})
            return ToolSpec(self.name, self.description, given)
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return ToolSpec(self.name, self.description, schema)


def tool_from_function(
    func: Callable[..., Awaitable[Any]],
    *,
    name: str | None,
    description: str | None,
    permission: ToolPermission,
    plugin: str,
) -> Tool:
    """Make a :class:`Tool` of ``async def func(ctx, ...)``: the parameters after ``ctx``
    are its arguments, typed by their annotations."""
    tool_name = name or func.__name__
    if not _NAME.fullmatch(tool_name):
        raise ValueError(f"a tool name is letters, digits, _ and - (not {tool_name!r})")
    if permission not in ("everyone", "admin"):
        raise ValueError(f"a tool's permission is everyone or admin, not {permission!r}")
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"tool {tool_name} must be an async function")
    summary, argument_docs = read_docstring(inspect.getdoc(func) or "")
    hints = _hints(func)
    fields: dict[str, Any] = {}
    parameters = list(inspect.signature(func).parameters.values())[1:]
    for parameter in parameters:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {tool_name}: *args and **kwargs cannot be described to a model")
        kind = hints.get(parameter.name, str)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        field = Field(default, description=argument_docs.get(parameter.name))
        fields[parameter.name] = (Annotated[kind, field], default)
    model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
    return Tool(
        name=tool_name,
        description=description if description is not None else summary,
        handler=func,
        arguments=model,
        permission=permission,
        plugin=plugin,
    )


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func, include_extras=True)
    except Exception:  # ctx's annotation may name a type imported only for type checking
        hints: dict[str, Any] = {}
        for name, annotation in func.__annotations__.items():
            # The plugin's own annotation text, evaluated as Python would have.
            try:
                hints[name] = (
                    eval(annotation, func.__globals__)
                    if isinstance(annotation, str)
                    else annotation
                )
            except Exception:
                continue
        return hints


class ToolRegistry:
    """Every tool on offer, by the name the model sees: plugins' tools, fixed at start,
    and MCP servers' tools, which come and go with their servers."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        """Register ``tool``; ValueError when another tool has its name."""
        other = self._tools.get(tool.name)
        if other is not None:
            raise ValueError(
                f"two tools are named {tool.name!r}: from {other.plugin!r} and {tool.plugin!r}"
            )
        self._tools[tool.name] = tool

    def replace(self, source: str, tools: list[Tool]) -> list[str]:
        """Make ``tools`` the whole offer of ``source`` (an MCP server coming up, its list
        changing, or going down with ``[]``); the names refused because another source
        has them."""
        for name in [name for name, tool in self._tools.items() if tool.plugin == source]:
            del self._tools[name]
        refused = []
        for tool in tools:
            if tool.name in self._tools:
                refused.append(tool.name)
            else:
                self._tools[tool.name] = tool
        return refused

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def missing(self, wanted: list[str]) -> list[str]:
        """Of ``wanted`` (a persona's list), the plugin tool names no tool has (an MCP
        entry names a server, whose tools are there only while it is up)."""
        return [name for name in wanted if not name.startswith("mcp:") and name not in self._tools]

    def for_turn(self, wanted: list[str], *, is_admin: bool) -> list[Tool]:
        """The tools of ``wanted`` (a persona's list) that exist now and this person may
        use: a name, ``mcp:SERVER`` (all of its tools) or ``mcp:SERVER/TOOL``.

        Admin-only tools are never offered on a turn of someone who is not an admin.
        """
        found: dict[str, Tool] = {}
        for entry in wanted:
            for tool in self._matching(entry):
                found.setdefault(tool.name, tool)
        return [tool for tool in found.values() if tool.permission == "everyone" or is_admin]

    def _matching(self, entry: str) -> list[Tool]:
        if not entry.startswith("mcp:"):
            tool = self._tools.get(entry)
            return [tool] if tool is not None else []
        server, _, name = entry[4:].partition("/")
        source = f"mcp:{server}"
        return [
            tool
            for tool in self._tools.values()
            if tool.plugin == source and (not name or tool.remote_name == name)
        ]


Outcome = Literal["ok", "invalid", "timeout", "error"]


@dataclass(frozen=True)
class ToolOutput:
    """What a handler may return besides text: text and pictures (encoded images), which
    a vision model is shown with the result; other models read the text alone."""

    text: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ToolResult:
    """One call's result as the model reads it, how it went, and how long it took."""

    text: str
    outcome: Outcome
    seconds: float
    images: tuple[bytes, ...] = ()


async def run_tool(
    tool: Tool, ctx: object, arguments: Mapping[str, Any], timeout_s: float
) -> ToolResult:
    """Run one call; every failure becomes the result the model reads, never an
    exception. One log line per call, with its duration (and its arguments unless the
    tool is marked sensitive)."""
    started = time.monotonic()
    answer, outcome = await _call(tool, ctx, arguments, tool.timeout_s or timeout_s)
    text, images = (answer.text, answer.images) if isinstance(answer, ToolOutput) else (answer, ())
    seconds = time.monotonic() - started
    log.info(
        "tool %s (%s) %s in %.0f ms%s",
        tool.name,
        tool.plugin,
        outcome,
        seconds * 1000,
        "" if tool.sensitive else f" with {dict(arguments)!r}"[:300],
    )
    return ToolResult(text, outcome, seconds, images)


async def _call(
    tool: Tool, ctx: object, arguments: Mapping[str, Any], timeout_s: float
) -> tuple[str | ToolOutput, Outcome]:
    values: dict[str, Any] = dict(arguments)
    if tool.arguments is not None:
        try:
            parsed = tool.arguments.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()
            )
            return f"error: invalid arguments for {tool.name}: {problems}", "invalid"
        values = {name: getattr(parsed, name) for name in type(parsed).model_fields}
    try:
        async with asyncio.timeout(timeout_s):
            result = await tool.handler(ctx, **values)
    except TimeoutError:
        log.warning("tool %s (%s) ran past %g s", tool.name, tool.plugin, timeout_s)
        return f"error: {tool.name} took longer than {timeout_s:g} s and was stopped", "timeout"
    except ToolFailed as exc:
        return f"error: {tool.name} failed: {exc}", "error"
    except Exception as exc:
        log.exception("tool %s (%s) failed", tool.name, tool.plugin)
        return f"error: {tool.name} failed: {exc}", "error"
    if isinstance(result, str | ToolOutput):
        return result, "ok"
    try:
        return json.dumps(result, ensure_ascii=False, default=str), "ok"
    except (TypeError, ValueError):
        return str(result), "ok"


@dataclass(frozen=True)
class TurnTools:
    """The tools one reply may call, bound to the message being answered: ``context``
    makes the context a tool of a given plugin runs with; ``observe`` sees each call
    (the metrics)."""

    tools: list[Tool]
    context: Callable[[str], object]
    timeout_s: float
    observe: Callable[[Tool, ToolResult], None] | None = None

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self.tools]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run one call of the model's; a tool not offered on this turn is refused."""
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            offered = ", ".join(t.name for t in self.tools) or "none"
            text = f"error: there is no tool {name!r} here; the tools are: {offered}"
            return ToolResult(text, "invalid", 0.0)
        result = await run_tool(tool, self.context(tool.plugin), arguments, self.timeout_s)
        if self.observe is not None:
            self.observe(tool, result)
        return result


def describe_call(name: str, arguments: Mapping[str, Any], width: int = 48) -> str:
    """The line a person sees while a tool runs: ``🔧 remind(when='10m', …)``."""
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    if len(shown) > width:
        shown = shown[: width - 1].rstrip() + "…"
    return f"🔧 {name}({shown})"
