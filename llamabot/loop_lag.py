"""The loop-lag watchdog: names the plugin that blocks the event loop.

One event loop serves every platform, so a plugin calling ``time.sleep`` or a blocking
HTTP library freezes the whole bot. A heartbeat on the loop and a small thread watching
it catch a stall while it happens; the thread reads the loop thread's stack and names
the plugin whose code is running (a module that defines ``plugin = Plugin(...)``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from types import FrameType

from llamabot.plugins import Plugin

log = logging.getLogger(__name__)

# A stall longer than this is reported.
LAG_WARN_S = 0.1


def _culprit(frame: FrameType | None) -> tuple[str | None, str]:
    """The plugin whose code ``frame``'s stack runs (innermost first), and where."""
    top = frame
    while frame is not None:
        owner = frame.f_globals.get("plugin")
        if isinstance(owner, Plugin):
            code = frame.f_code
            return owner.name, f"{code.co_filename}:{frame.f_lineno} in {code.co_name}"
        frame = frame.f_back
    if top is None:
        return None, "unknown"
    return None, f"{top.f_code.co_filename}:{top.f_lineno} in {top.f_code.co_name}"


class LoopWatchdog:
    """Reports every stall of the event loop longer than ``threshold_s``, once."""

    def __init__(self, threshold_s: float = LAG_WARN_S) -> None:
        self._threshold_s = threshold_s
        self._beat = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    async def run(self) -> None:
        """Beat on the loop while a thread watches the beat; until cancelled."""
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        watcher = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        watcher.start()
        try:
            while True:
                self._beat = time.monotonic()
                await asyncio.sleep(self._threshold_s / 4)
        finally:
            self._stop.set()
            await asyncio.to_thread(watcher.join)

    def _watch(self) -> None:
        stalled_since: float | None = None
        culprit: tuple[str | None, str] = (None, "unknown")
        while not self._stop.wait(self._threshold_s / 4):
            beat = self._beat
            now = time.monotonic()
            if now - beat > self._threshold_s:
                if stalled_since != beat:  # a new stall: look at who is running
                    stalled_since = beat
                    culprit = _culprit(sys._current_frames().get(self._loop_thread))
                continue
            if stalled_since is not None:
                self._report(beat - stalled_since, *culprit)
                stalled_since = None

    def _report(self, seconds: float, plugin: str | None, where: str) -> None:
        if plugin is not None:
            log.warning(
                "plugin %s blocked the event loop for %.0f ms (%s); the whole bot waited. "
                "Use await / asyncio.to_thread for slow work",
                plugin,
                seconds * 1000,
                where,
            )
        else:
            log.info("the event loop was blocked for %.0f ms (%s)", seconds * 1000, where)
