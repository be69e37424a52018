"""The loaded plugins: which command answers which name, and the hooks to run."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.plugins import Command, Plugin
from llamabot.tools import ToolRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")


class PluginTimeout(Exception):
    """A plugin's hook or command ran past ``[plugins] hook_timeout_s`` and was cancelled."""


async def guarded(work: Awaitable[T], *, what: str, plugin: str, timeout_s: float) -> T:
    """Await a plugin's coroutine for at most ``timeout_s``: a hung plugin cannot freeze a lane.

    Raises :class:`PluginTimeout` (after logging which plugin hung) when time runs out.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await work
    except TimeoutError:
        log.warning(
            "%s of plugin %s took longer than %g s and was cancelled ([plugins] hook_timeout_s)",
            what,
            plugin,
            timeout_s,
        )
        raise PluginTimeout(f"{what} of plugin {plugin} timed out") from None


@dataclass
class LoadedPlugin:
    """A plugin that loaded, where it came from, and its validated config slice."""

    plugin: Plugin
    source: str
    config: BaseModel | None = None


@dataclass
class PluginFailure:
    """A plugin that could not load, and why."""

    name: str
    source: str
    reason: str


@dataclass
class PluginHost:
    """The plugins in force. Built once at start; commands are looked up by name."""

    loaded: list[LoadedPlugin] = field(default_factory=list)
    failures: list[PluginFailure] = field(default_factory=list)
    tools: ToolRegistry = field(default_factory=ToolRegistry)
    _commands: dict[str, Command] = field(default_factory=dict)

    def add(self, plugin: Plugin, source: str, config: Config) -> None:
        """Validate a plugin's config slice and register its commands, all or nothing."""
        same = self.source_of(plugin.name)
        if same is not None:
            raise StartupError(
                f"two plugins are named {plugin.name!r}: {same} and {source}; "
                "remove one, or rename it"
            )
        taken = [
            ("claim the command", command.name, self._commands.get(command.name))
            for command in plugin.commands
        ] + [("offer the tool", tool.name, self.tools.get(tool.name)) for tool in plugin.tools]
        for verb, name, other in taken:
            if other is not None:
                raise StartupError(
                    f"two plugins {verb} {name!r}: {other.plugin!r} "
                    f"({self.source_of(other.plugin)}) and {plugin.name!r} ({source}); "
                    "disable one in [plugins] disabled"
                )
        try:
            settings = _settings(plugin, config)
        except ValueError as exc:
            raise StartupError(f"{exc} in bot.toml") from None
        for command in plugin.commands:
            self._commands[command.name] = command
        for tool in plugin.tools:
            self.tools.add(tool)
        self.loaded.append(LoadedPlugin(plugin, source, settings))

    def reconfigure(self, config: Config) -> None:
        """Validate every plugin's slice of a new config, then put them all in force.

        Raises ValueError listing the problems, and changes nothing, when one is invalid.
        """
        fresh: list[BaseModel | None] = []
        problems: list[str] = []
        for loaded in self.loaded:
            try:
                fresh.append(_settings(loaded.plugin, config))
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))
        for loaded, settings in zip(self.loaded, fresh, strict=True):
            loaded.config = settings

    def command(self, name: str) -> Command | None:
        """The command registered under ``name``."""
        return self._commands.get(name.lower())

    def commands(self) -> list[Command]:
        """Every command, sorted by name."""
        return sorted(self._commands.values(), key=lambda c: c.name)

    def config_for(self, plugin_name: str) -> BaseModel | None:
        """A plugin's validated config slice."""
        for loaded in self.loaded:
            if loaded.plugin.name == plugin_name:
                return loaded.config
        return None

    def source_of(self, plugin_name: str) -> str | None:
        """Where a loaded plugin came from (a file, or an entry point)."""
        for loaded in self.loaded:
            if loaded.plugin.name == plugin_name:
                return loaded.source
        return None

    def get(self, plugin_name: str) -> Plugin[Any] | None:
        """The loaded plugin called ``plugin_name``."""
        return next((p.plugin for p in self.loaded if p.plugin.name == plugin_name), None)

    def plugins(self) -> list[Plugin]:
        return [loaded.plugin for loaded in self.loaded]

    async def run_start_hooks(
        self, context: Callable[[str], object], timeout_s: float = 30.0
    ) -> None:
        """Run every on_start hook in load order; a failing or hung hook is logged, skipped."""
        for plugin in self.plugins():
            for hook in plugin.start_hooks:
                await _run_hook(plugin, hook, context, "on_start", timeout_s)

    async def run_stop_hooks(
        self, context: Callable[[str], object], timeout_s: float = 30.0
    ) -> None:
        """Run every on_stop hook in reverse load order; failures are logged."""
        for plugin in reversed(self.plugins()):
            for hook in reversed(plugin.stop_hooks):
                await _run_hook(plugin, hook, context, "on_stop", timeout_s)


async def _run_hook(
    plugin: Plugin,
    hook: Callable[..., Awaitable[None]],
    context: Callable[[str], object],
    kind: str,
    timeout_s: float,
) -> None:
    what = f"{kind} hook {hook.__name__}"
    try:
        await guarded(
            hook(context(plugin.name)), what=what, plugin=plugin.name, timeout_s=timeout_s
        )
    except PluginTimeout:
        pass  # logged by guarded
    except Exception:
        log.exception("%s of plugin %s failed", what, plugin.name)


def _settings(plugin: Plugin, config: Config) -> BaseModel | None:
    """A plugin's ``[plugins.<name>]`` table, validated; ValueError says what is wrong."""
    if plugin.config_model is None:
        return None
    try:
        return plugin.config_model.model_validate(config.plugins.slice(plugin.name))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"[plugins.{plugin.name}] is invalid: {problems}") from None
