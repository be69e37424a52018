"""Tools the model may call: what a tool is, the registry, and running one call.

Tools come from plugins (``@plugin.tool``) and register here; the reply loop asks the
registry which tools a persona may use on a turn and never knows where they came from.
A tool's arguments are validated by a pydantic model made from its signature, and the
JSON schema the model sees is that model's, with the descriptions from the docstring.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
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


@dataclass(frozen=True)
class Tool:
    """A function the model may call. ``handler(ctx, **arguments)`` returns its result:
    text, or anything JSON can encode."""

    name: str
    description: str
    handler: Callable[..., Awaitable[Any]]
    arguments: type[BaseModel]
    permission: ToolPermission
    plugin: str

    @functools.cached_property
    def spec(self) -> ToolSpec:
        """The tool as the model is told of it (made once: every reply offering the tool
        sends it)."""
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
    """Every tool on offer, by name: plugins' tools now, MCP servers' later."""

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

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def missing(self, wanted: list[str]) -> list[str]:
        """Of ``wanted`` (a persona's list), the names no tool has."""
        return [name for name in wanted if name not in self._tools]

    def for_turn(self, wanted: list[str], *, is_admin: bool) -> list[Tool]:
        """The tools of ``wanted`` (a persona's list) that exist and this person may use.

        Admin-only tools are never offered on a turn of someone who is not an admin.
        """
        found = [self._tools[name] for name in dict.fromkeys(wanted) if name in self._tools]
        return [tool for tool in found if tool.permission == "everyone" or is_admin]


async def run_tool(tool: Tool, ctx: object, arguments: Mapping[str, Any], timeout_s: float) -> str:
    """Run one call; every failure becomes the result the model reads, never an exception."""
    try:
        parsed = tool.arguments.model_validate(dict(arguments))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return f"error: invalid arguments for {tool.name}: {problems}"
    values = {name: getattr(parsed, name) for name in type(parsed).model_fields}
    try:
        async with asyncio.timeout(timeout_s):
            result = await tool.handler(ctx, **values)
    except TimeoutError:
        log.warning("tool %s (plugin %s) ran past %g s", tool.name, tool.plugin, timeout_s)
        return f"error: {tool.name} took longer than {timeout_s:g} s and was stopped"
    except Exception as exc:
        log.exception("tool %s (plugin %s) failed", tool.name, tool.plugin)
        return f"error: {tool.name} failed: {exc}"
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


@dataclass(frozen=True)
class TurnTools:
    """The tools one reply may call, bound to the message being answered: ``context``
    makes the context a tool of a given plugin runs with."""

    tools: list[Tool]
    context: Callable[[str], object]
    timeout_s: float

    @property
    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self.tools]

    async def call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """Run one call of the model's; a tool not offered on this turn is refused."""
        tool = next((t for t in self.tools if t.name == name), None)
        if tool is None:
            offered = ", ".join(t.name for t in self.tools) or "none"
            return f"error: there is no tool {name!r} here; the tools are: {offered}"
        return await run_tool(tool, self.context(tool.plugin), arguments, self.timeout_s)


def describe_call(name: str, arguments: Mapping[str, Any], width: int = 48) -> str:
    """The line a person sees while a tool runs: ``🔧 remind(when='10m', …)``."""
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    if len(shown) > width:
        shown = shown[: width - 1].rstrip() + "…"
    return f"🔧 {name}({shown})"
