"""First-token and idle timeouts for a streamed reply, at one clock read per token."""

from __future__ import annotations

import asyncio
import time


class Watchdog:
    """Cancels the task that started the stream when the model stays silent too long.

    ``asyncio.timeout`` around every token would schedule and cancel a timer per token;
    here the stream only moves ``deadline`` (None while paused) and one timer, checking it
    at least every ``min(first, idle)`` seconds, re-arms itself until the deadline passes.
    That keeps the per-token cost to one ``time.monotonic()`` call.
    """

    __slots__ = ("_fired", "_handle", "_loop", "_task", "deadline", "first", "period")

    def __init__(self, first: float, idle: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self.first = first
        self.period = min(first, idle)
        self.deadline: float | None = time.monotonic() + first
        self._fired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(self.period, self._fire)

    def _fire(self) -> None:
        if self._task is None:
            self._handle = None
            return
        deadline = self.deadline
        now = time.monotonic()
        if deadline is None or now < deadline - 0.001:
            # Paused or not yet due. Look again at the deadline, or sooner: the stream may
            # move it closer (the idle limit can be shorter than the first-token one).
            wait = self.period if deadline is None else min(self.period, deadline - now)
            wait = max(wait, 0.001)
            self._handle = self._loop.call_later(wait, self._fire)
            return
        self._handle = None
        self._fired = True
        self._task.cancel()

    def fired(self) -> bool:
        """Whether the cancellation being handled is ours (not the task being cancelled)."""
        if not self._fired or self._task is None:
            return False
        self._fired = False
        return self._task.uncancel() == 0

    def close(self) -> None:
        self.deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
