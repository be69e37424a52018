"""Errors that stop the bot from starting; their text tells the admin what to do."""

from __future__ import annotations


class StartupError(Exception):
    """A part of the bot could not start. The message is shown as is, without a traceback."""
