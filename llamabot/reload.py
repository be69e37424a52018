"""Live bot.toml: watch the file, validate the whole of it, apply what can change live.

An invalid edit never takes the bot down: the old config stays in force and the log says
where the problem is. Settings a running bot cannot change (a platform switched on, a
token variable, the database) are reported as needing a restart and left as they were,
so a reload never half-applies.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llamabot.config import Binding, Config, ConfigError, parse_config

log = logging.getLogger(__name__)

# What a running bot keeps until restart: connections, the database, the loaded backend.
RESTART_ONLY = ("discord", "telegram", "storage", "metrics", "mcp", "web")
RESTART_ONLY_LLM = ("backend", "max_concurrency", "ollama", "embedded", "openai")
RESTART_ONLY_PLUGINS = ("dirs", "enabled", "disabled")


@dataclass
class ConfigChanges:
    """What a new bot.toml changes: applied live, and what waits for a restart."""

    applied: list[str] = field(default_factory=list)
    need_restart: list[str] = field(default_factory=list)


def _fields_changed(old: object, new: object, names: list[str] | None = None) -> list[str]:
    """The fields that differ (all of the model's fields when ``names`` is not given)."""
    if names is None:
        names = list(type(new).model_fields)  # type: ignore[attr-defined]
    return [name for name in names if getattr(old, name) != getattr(new, name)]


def compare(old: Config, new: Config) -> ConfigChanges:
    """Describe the difference between two configs in the admin's terms."""
    changes = ConfigChanges()
    for name in sorted(set(new.personas) - set(old.personas)):
        changes.applied.append(f"persona {name!r} added")
    for name in sorted(set(old.personas) - set(new.personas)):
        changes.applied.append(f"persona {name!r} removed")
    for name in sorted(set(old.personas) & set(new.personas)):
        edited = _fields_changed(old.personas[name], new.personas[name])
        if edited:
            changes.applied.append(f"persona {name!r} edited ({', '.join(edited)})")

    def target(binding: Binding) -> str:
        guild = f"guild {binding.guild} " if binding.guild else ""
        return f"{binding.platform}:{guild}{binding.channel}"

    before = {target(b): b for b in old.bindings}
    after = {target(b): b for b in new.bindings}
    for key in sorted(set(after) - set(before)):
        changes.applied.append(f"binding {key} added (persona {after[key].persona!r})")
    for key in sorted(set(before) - set(after)):
        changes.applied.append(f"binding {key} removed")
    for key in sorted(set(before) & set(after)):
        if before[key] != after[key]:
            was, now = before[key], after[key]
            detail = (
                f"persona {was.persona!r} -> {now.persona!r}"
                if was.persona != now.persona
                else f"respond {was.respond} -> {now.respond}"
                if was.respond != now.respond
                else "its limits or access rules"
            )
            changes.applied.append(f"binding {key} moved: {detail}")

    for section in ("bot", "history", "limits", "access"):
        for name in _fields_changed(getattr(old, section), getattr(new, section)):
            changes.applied.append(f"[{section}] {name} changed")
    for name in _fields_changed(old.llm, new.llm, ["first_token_timeout", "idle_timeout"]):
        changes.applied.append(f"[llm] {name} changed")
    if old.plugins.model_extra != new.plugins.model_extra:
        changes.applied.append("plugin settings changed")

    for section in RESTART_ONLY:
        for name in _fields_changed(getattr(old, section), getattr(new, section)):
            changes.need_restart.append(f"[{section}] {name}")
    for name in _fields_changed(old.llm, new.llm, list(RESTART_ONLY_LLM)):
        changes.need_restart.append(f"[llm] {name}")
    for name in _fields_changed(old.plugins, new.plugins, list(RESTART_ONLY_PLUGINS)):
        changes.need_restart.append(f"[plugins] {name}")
    return changes


def live_part(old: Config, new: Config) -> Config:
    """``new``, except the settings that only a restart may change, kept from ``old``."""
    llm = new.llm.model_copy(update={name: getattr(old.llm, name) for name in RESTART_ONLY_LLM})
    plugins = new.plugins.model_copy(
        update={name: getattr(old.plugins, name) for name in RESTART_ONLY_PLUGINS}
    )
    kept = {name: getattr(old, name) for name in RESTART_ONLY}
    return new.model_copy(update={**kept, "llm": llm, "plugins": plugins})


@dataclass
class ReloadResult:
    """The outcome of one reload: applied, rejected (with problems), or nothing changed."""

    outcome: str  # applied | rejected | unchanged
    changes: ConfigChanges = field(default_factory=ConfigChanges)
    problems: list[str] = field(default_factory=list)


class ConfigWatcher:
    """Watches bot.toml and puts every valid edit in force for the next message.

    It watches the file's folder, not the file, so an editor that saves through a
    temporary file and a rename is seen too; it waits until the file stops changing
    before reading it, so a save in two steps is read once, whole.
    """

    def __init__(
        self,
        path: Path,
        *,
        current: Callable[[], Config],
        apply: Callable[[Config], None],
        settle_s: float = 0.2,
    ) -> None:
        self.path = path.resolve()
        self._current = current
        self._apply = apply
        self._settle_s = settle_s
        self._last_text = self._read()
        self.results: list[ReloadResult] = []
        self.reloaded = asyncio.Condition()
        self.ready = asyncio.Event()

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    async def _settled(self) -> None:
        """Wait until the file has looked the same for ``settle_s``."""
        step = self._settle_s / 4
        seen = self._signature()
        stable_for = 0.0
        while stable_for < self._settle_s:
            await asyncio.sleep(step)
            now = self._signature()
            stable_for = stable_for + step if now == seen else 0.0
            seen = now

    async def run(self) -> None:
        """Watch until cancelled."""
        from watchfiles import awatch

        name = self.path.name

        def ours(_change: object, changed: str) -> bool:
            return Path(changed).name == name

        # The first (empty) yield on timeout proves the OS watch is in place; an edit made
        # before that is caught by comparing the text with the snapshot taken at start.
        async for changes in awatch(
            self.path.parent,
            watch_filter=ours,
            recursive=False,
            rust_timeout=1000,
            yield_on_timeout=True,
        ):
            first = not self.ready.is_set()
            self.ready.set()
            if changes or (first and self._read() != self._last_text):
                await self._settled()
                await self.reload()

    async def reload(self) -> ReloadResult:
        """Read bot.toml now and apply it if it is valid and different."""
        text = self._read()
        if text is None or text == self._last_text:
            result = ReloadResult("unchanged")
        else:
            self._last_text = text
            result = self._reload_text(text)
        async with self.reloaded:
            self.results.append(result)
            self.reloaded.notify_all()
        return result

    def _reload_text(self, text: str) -> ReloadResult:
        try:
            new = parse_config(text, self.path)
        except ConfigError as exc:
            log.error(
                "%s was not reloaded; the previous config stays in force:\n  %s",
                self.path,
                "\n  ".join(exc.problems),
            )
            return ReloadResult("rejected", problems=exc.problems)
        old = self._current()
        changes = compare(old, new)
        for item in changes.need_restart:
            log.warning("%s: %s changed; this takes effect after a restart", self.path, item)
        try:
            self._apply(live_part(old, new))
        except ValueError as exc:
            problem = f"{self.path}: {exc}"
            log.error(
                "%s was not reloaded; the previous config stays in force:\n  %s", self.path, problem
            )
            return ReloadResult("rejected", problems=[problem])
        if changes.applied:
            log.info("%s reloaded: %s", self.path, "; ".join(changes.applied))
        elif not changes.need_restart:
            log.info("%s reloaded: no setting changed", self.path)
        return ReloadResult("applied", changes=changes)
