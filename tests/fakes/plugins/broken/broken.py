"""A plugin whose import fails."""

from __future__ import annotations

from llamabot import Plugin

plugin = Plugin("broken")
RATIO = 1 / 0
