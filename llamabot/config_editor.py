"""Changing bot.toml from inside the bot: the admins' commands and the admin page.

The change is made on the parsed document with tomlkit, so the admin's comments and
layout stay; the new text is validated before it replaces the file, atomically. A
change based on a version of the file that is no longer on disk is refused with the
diff (:class:`ConfigChanged`), never applied over someone else's edit. Every change is
written to the audit log with its diff, when the bot keeps one.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

    from llamabot.config import Config

Change = Callable[["TOMLDocument"], None]
# Told of each change made: (what, the diff of bot.toml).
Audit = Callable[[str, str], None]


class ConfigChanged(Exception):
    """bot.toml changed on disk since the version an edit was based on."""

    def __init__(self, diff: str) -> None:
        super().__init__("bot.toml changed on disk since it was loaded; nothing was saved")
        self.diff = diff


@dataclass(frozen=True)
class ConfigEdit:
    """A change written to bot.toml: the config now in force and the file's diff."""

    config: Config
    diff: str


def version_of(text: str) -> str:
    """A short fingerprint of bot.toml's text (what an edit form was based on)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def diff_of(before: str, after: str, name: str = "bot.toml") -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{name} (before)",
            f"{name} (after)",
        )
    )


class ConfigEditor:
    """The checked bot.toml editor a plugin receives as ``ctx.admin``.

    ``allowed`` says whether the person on whose behalf the plugin runs is one of the
    bot's admins; ``apply`` puts a validated config in force for the next message.
    """

    def __init__(
        self,
        path: Path | None,
        apply: Callable[[Config], None],
        *,
        allowed: bool,
        audit: Audit | None = None,
        what: str = "",
    ) -> None:
        self._path = path
        self._apply = apply
        self.allowed = allowed
        self._audit = audit
        self._what = what

    def edit(self, change: Change, *, what: str = "", based_on: str | None = None) -> Config:
        """Change bot.toml and put the result in force; for the bot's admins only.

        ``change`` edits the parsed document in place; ``what`` says what for the audit
        log; ``based_on`` is the :func:`version_of` the file the change was made from.
        Raises PermissionError for a person who is not an admin,
        :class:`~llamabot.config.ConfigError` (bot.toml left as it was) when the result
        does not validate, :class:`ConfigChanged` when the file is no longer the one the
        change was based on, and RuntimeError when the bot was started without a bot.toml.
        """
        if not self.allowed:
            raise PermissionError("only the bot's admins can change bot.toml")
        if self._path is None:
            raise RuntimeError("this bot was started without a bot.toml; there is none to change")
        done = edit_config(self._path, change, based_on=based_on)
        self._apply(done.config)
        if self._audit is not None and done.diff:
            self._audit(what or self._what or "bot.toml changed", done.diff)
        return done.config


def rewrite_config(path: Path, change: Change) -> Config:
    """Apply ``change`` to bot.toml with tomlkit, validate, and replace the file atomically."""
    return edit_config(path, change).config


def edit_config(path: Path, change: Change, *, based_on: str | None = None) -> ConfigEdit:
    """:func:`rewrite_config`, refusing when the file is not the ``based_on`` version."""
    import tomlkit

    from llamabot.config import parse_config

    before = path.read_text(encoding="utf-8")
    if based_on is not None and version_of(before) != based_on:
        raise ConfigChanged(diff_of_versions(path, before))
    document = tomlkit.parse(before)
    change(document)
    text = tomlkit.dumps(document)
    config = parse_config(text, path)
    # A crash mid-write must not leave the admin with half a bot.toml.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return ConfigEdit(config, diff_of(before, text))


def diff_of_versions(path: Path, now: str) -> str:
    """What changed on disk: the version an edit form saw is not kept, so the diff is
    of the last version this process wrote or read (``_seen``) against the file now."""
    seen = _seen.get(path.resolve(), "")
    return diff_of(seen, now) if seen else now


# The last text of each bot.toml the admin page showed, so a refused save can show what
# changed since (see diff_of_versions).
_seen: dict[Path, str] = {}


def read_for_edit(path: Path) -> tuple[str, str]:
    """bot.toml's text and its version, remembered for a diff should a save be refused."""
    text = path.read_text(encoding="utf-8")
    _seen[path.resolve()] = text
    return text, version_of(text)
