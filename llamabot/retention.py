"""``[history] keep_days``: delete history older than the admin wants kept."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from llamabot.storage.history import HistoryStore

log = logging.getLogger(__name__)

DAY_S = 24 * 60 * 60
_AGE = re.compile(r"^\s*(\d+)\s*([dhw])\s*$")


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h`` or ``2w`` as a timedelta; a ValueError says the accepted forms."""
    match = _AGE.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not an age; write it like 30d, 12h or 2w")
    amount, unit = int(match.group(1)), match.group(2)
    return {"h": timedelta(hours=amount), "d": timedelta(days=amount)}.get(
        unit, timedelta(weeks=amount)
    )


async def prune_older_than(store: HistoryStore, age: timedelta) -> int:
    """Delete messages older than ``age``; returns how many went."""
    removed = await store.prune(datetime.now(UTC) - age)
    if removed:
        log.info("retention: deleted %d message(s) older than %s", removed, age)
    return removed


async def keep_pruning(store: HistoryStore, keep_days: Callable[[], int]) -> None:
    """Prune at start and then daily, reading ``keep_days`` anew each time (0: keep all)."""
    while True:
        days = keep_days()
        if days > 0:
            try:
                await prune_older_than(store, timedelta(days=days))
            except Exception:
                log.exception("retention: pruning failed; will try again tomorrow")
        await asyncio.sleep(DAY_S)
