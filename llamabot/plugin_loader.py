"""Plugin discovery: the folders in ``[plugins] dirs`` and the ``llamabot.plugins`` entry points.

A plugin that fails to import is reported and left out; the bot starts without it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.plugin_host import PluginFailure, PluginHost
from llamabot.plugins import Plugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llamabot.plugins"


def _candidates(folder: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" and path.is_file():
            found.append((path.stem, path))
        elif path.is_dir() and (path / "__init__.py").is_file():
            found.append((path.name, path / "__init__.py"))
    return found


def _import_file(name: str, path: Path) -> ModuleType:
    module_name = f"llamabot_plugins.{name}"
    spec = importlib.util.spec_from_file_location(
        module_name,
        path,
        submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None,
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _plugin_of(module: object, source: str) -> Plugin:
    plugin = module if isinstance(module, Plugin) else getattr(module, "plugin", None)
    if not isinstance(plugin, Plugin):
        raise ImportError(f"{source} defines no `plugin = Plugin(...)`")
    return plugin


def _wanted(name: str, config: Config) -> bool:
    section = config.plugins
    if section.enabled and name not in section.enabled:
        return False
    return name not in section.disabled


def load_plugins(config: Config, config_dir: Path) -> PluginHost:
    """Import every plugin bot.toml allows; failures are recorded, not raised.

    Two plugins claiming one command is the one error that stops the start.
    """
    host = PluginHost()
    found: list[tuple[str, str, object]] = []
    for folder_text in config.plugins.dirs:
        folder = Path(folder_text).expanduser()
        if not folder.is_absolute():
            folder = config_dir / folder
        for name, path in _candidates(folder):
            found.append((name, str(path), path))
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.append((entry.name, f"entry point {entry.value}", entry))

    for name, source, origin in found:
        if not _wanted(name, config):
            continue
        try:
            if isinstance(origin, Path):
                module: object = _import_file(name, origin)
            else:
                module = origin.load()  # type: ignore[attr-defined]
            plugin = _plugin_of(module, source)
            if not _wanted(plugin.name, config):
                continue
            host.add(plugin, source, config)
        except StartupError:
            raise
        except Exception as exc:
            log.error("plugin %s (%s) failed to load: %s", name, source, exc)
            host.failures.append(PluginFailure(name, source, f"{type(exc).__name__}: {exc}"))
    return host
