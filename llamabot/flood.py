"""Flood control: per-person message rates and command cooldowns (``[limits]``).

The router keeps the queues; this module keeps the clocks. Everything here is
synchronous and O(1) per message, so it can sit in front of the queue.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from llamabot.config import LimitsSection

_REMEMBERED = 10_000


class TokenBucket:
    """``burst`` tokens, refilled at ``rate_per_s``; a message takes one or is refused."""

    __slots__ = ("_level", "_stamp")

    def __init__(self, burst: int, now: float) -> None:
        self._level = float(burst)
        self._stamp = now

    def take(self, burst: int, rate_per_s: float, now: float) -> bool:
        """Take a token if there is one. Limits are passed in, so a reload applies at once."""
        self._level = min(float(burst), self._level + (now - self._stamp) * rate_per_s)
        self._stamp = now
        if self._level < 1.0:
            return False
        self._level -= 1.0
        return True


class FloodControl:
    """Per-person token buckets and per-person-and-command cooldowns."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._last_command: OrderedDict[tuple[str, str], float] = OrderedDict()

    def take_message(self, person: str, limits: LimitsSection) -> bool:
        """Whether ``person`` may send one more message now (and count it)."""
        now = self._clock()
        bucket = self._buckets.get(person)
        if bucket is None:
            bucket = self._buckets[person] = TokenBucket(limits.burst, now)
            while len(self._buckets) > _REMEMBERED:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(person)
        return bucket.take(limits.burst, limits.messages_per_minute / 60.0, now)

    def command_wait(self, person: str, command: str, cooldown_s: float) -> float:
        """Seconds ``person`` must still wait before running ``command`` again (0: go)."""
        if cooldown_s <= 0:
            return 0.0
        now = self._clock()
        key = (person, command)
        last = self._last_command.get(key)
        if last is not None and now - last < cooldown_s:
            return cooldown_s - (now - last)
        self._last_command[key] = now
        self._last_command.move_to_end(key)
        while len(self._last_command) > _REMEMBERED:
            self._last_command.popitem(last=False)
        return 0.0


class OncePer:
    """Lets a notice through once per ``every_s`` for each key, so nobody is spammed."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last: OrderedDict[tuple[str, ...], float] = OrderedDict()

    def due(self, *key: str) -> bool:
        """Whether the notice for ``key`` should go out now (and note that it did)."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every_s:
            return False
        self._last[key] = now
        self._last.move_to_end(key)
        while len(self._last) > _REMEMBERED:
            self._last.popitem(last=False)
        return True
