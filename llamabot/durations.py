"""Durations as people type them: ``10s``, ``2m``, ``1h30m``, ``2w``."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"(?:\d+[wdhms])+")
_PART = re.compile(r"(\d+)([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def is_duration(text: str) -> bool:
    """Whether ``text`` reads as a duration (``10m``, ``2h30m``)."""
    return _DURATION.fullmatch(text.strip().lower()) is not None


def parse_duration(text: str) -> timedelta:
    """``10s``, ``2m``, ``1h30m``, ``1d``, ``2w`` as a timedelta; ValueError otherwise."""
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not a duration; write it like 10s, 5m, 1h30m or 2d")
    amounts: dict[str, int] = {}
    for number, unit in _PART.findall(cleaned):
        amounts[_UNITS[unit]] = amounts.get(_UNITS[unit], 0) + int(number)
    return timedelta(**amounts)


def seconds(value: str | float) -> float:
    """A duration given as seconds or as text (``"10s"``), in seconds."""
    if isinstance(value, str):
        return parse_duration(value).total_seconds()
    return float(value)
