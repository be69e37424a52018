"""Plugin discovery: the bundled plugins, the folders in ``[plugins] dirs`` and the
``llamabot.plugins`` entry points.

A plugin that fails to import is reported and left out; the bot starts without it. A
plugin in ``[plugins] dirs`` or an entry point with a bundled plugin's name replaces it,
so an admin can swap ``help`` for their own.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

from llamabot.config import Config
from llamabot.errors import StartupError
from llamabot.plugin_host import PluginFailure, PluginHost
from llamabot.plugins import Plugin

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llamabot.plugins"
MODULE_PREFIX = "llamabot_plugins"


def bundled_plugins_dir() -> Path | None:
    """The bundled plugins: inside the installed wheel, or the checkout's plugins/."""
    package = Path(__file__).resolve().parent
    for folder in (package / "_plugins", package.parent / "plugins"):
        if folder.is_dir():
            return folder
    return None


@dataclass(frozen=True)
class _Candidate:
    name: str
    source: str
    origin: Path | EntryPoint
    bundled: bool = False


def _in_folder(folder: Path, *, bundled: bool = False) -> list[_Candidate]:
    found: list[_Candidate] = []
    if not folder.is_dir():
        if not bundled:
            # Info, not a warning: the default "plugins" folder is often simply absent.
            log.info("plugin folder %s does not exist; no plugins from there", folder)
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(("_", ".")):
            continue
        if path.suffix == ".py" and path.is_file():
            found.append(_Candidate(path.stem, str(path), path, bundled))
        elif path.is_dir() and (path / "__init__.py").is_file():
            found.append(_Candidate(path.name, str(path), path / "__init__.py", bundled))
    return found


def _candidates(config: Config, config_dir: Path, bundled: bool) -> list[_Candidate]:
    home = bundled_plugins_dir() if bundled else None
    found = _in_folder(home, bundled=True) if home is not None else []
    seen = {home.resolve()} if home is not None else set()
    for folder_text in config.plugins.dirs:
        folder = Path(folder_text).expanduser()
        if not folder.is_absolute():
            folder = config_dir / folder
        if folder.resolve() in seen:
            continue  # the checkout's own plugins/ is the bundled folder
        seen.add(folder.resolve())
        found += _in_folder(folder)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.append(_Candidate(entry.name, f"entry point {entry.value}", entry))
    replaced = {c.name for c in found if not c.bundled}
    return [c for c in found if not (c.bundled and c.name in replaced)]


def _import_file(name: str, path: Path) -> ModuleType:
    module_name = f"{MODULE_PREFIX}.{name}"
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


def load_plugins(config: Config, config_dir: Path, *, bundled: bool = True) -> PluginHost:
    """Import every plugin bot.toml allows; failures are recorded, not raised.

    Two plugins claiming one command (or one name) is the one error that stops the start.
    """
    host = PluginHost()
    for candidate in _candidates(config, config_dir, bundled):
        name, source = candidate.name, candidate.source
        if not _wanted(name, config):
            continue
        try:
            if isinstance(candidate.origin, Path):
                module: object = _import_file(name, candidate.origin)
            else:
                module = candidate.origin.load()
            plugin = _plugin_of(module, source)
            if not _wanted(plugin.name, config):
                continue
            host.add(plugin, source, config)
        except StartupError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin's sys.exit() must not stop the bot
            log.error("plugin %s (%s) failed to load: %s", name, source, exc)
            host.failures.append(PluginFailure(name, source, f"{type(exc).__name__}: {exc}"))
    return host
