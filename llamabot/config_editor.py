"""Changing bot.toml from inside the bot: the admins' commands (and later the admin page).

The change is made on the parsed document with tomlkit, so the admin's comments and
layout stay; the new text is validated before it replaces the file, atomically.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tomlkit.toml_document import TOMLDocument

    from llamabot.config import Config

Change = Callable[["TOMLDocument"], None]


class ConfigEditor:
    """The checked bot.toml editor a plugin receives as ``ctx.admin``.

    ``allowed`` says whether the person on whose behalf the plugin runs is one of the
    bot's admins; ``apply`` puts a validated config in force for the next message.
    """

    def __init__(
        self, path: Path | None, apply: Callable[[Config], None], *, allowed: bool
    ) -> None:
        self._path = path
        self._apply = apply
        self.allowed = allowed

    def edit(self, change: Change) -> Config:
        """Change bot.toml and put the result in force; for the bot's admins only.

        ``change`` edits the parsed document in place. Raises PermissionError for a
        person who is not an admin, :class:`~llamabot.config.ConfigError` (bot.toml left
        as it was) when the result does not validate, and RuntimeError when the bot was
        started without a bot.toml.
        """
        if not self.allowed:
            raise PermissionError("only the bot's admins can change bot.toml")
        if self._path is None:
            raise RuntimeError("this bot was started without a bot.toml; there is none to change")
        config = rewrite_config(self._path, change)
        self._apply(config)
        return config


def rewrite_config(path: Path, change: Change) -> Config:
    """Apply ``change`` to bot.toml with tomlkit, validate, and replace the file atomically."""
    import tomlkit

    from llamabot.config import parse_config

    document = tomlkit.parse(path.read_text(encoding="utf-8"))
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
    return config
