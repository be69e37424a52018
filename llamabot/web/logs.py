"""The live log: the bot's log records, kept in a ring and streamed to the admin page."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from dataclasses import dataclass

KEPT = 1000  # the newest records shown when the page opens
QUEUED = 500  # a browser this far behind loses records rather than slowing the bot


@dataclass(frozen=True)
class LogLine:
    number: int
    at: float
    level: str
    logger: str
    text: str


class LogTail(logging.Handler):
    """A logging handler that keeps the newest records and hands new ones to the
    page's live streams. Never blocks the bot: a stream that falls behind drops."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[LogLine] = deque(maxlen=KEPT)
        self._streams: set[asyncio.Queue[LogLine]] = set()
        self._numbers = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        """Start receiving the root logger's records (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record must not break logging
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({record.exc_info[1]!r})"
        line = LogLine(next(self._numbers), record.created, record.levelname, record.name, text)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(line)
        else:  # a record from another thread (the database's, a library's)
            loop.call_soon_threadsafe(self._publish, line)

    def _publish(self, line: LogLine) -> None:
        self.lines.append(line)
        for stream in list(self._streams):
            if stream.qsize() < QUEUED:
                stream.put_nowait(line)

    def subscribe(self) -> asyncio.Queue[LogLine]:
        stream: asyncio.Queue[LogLine] = asyncio.Queue()
        self._streams.add(stream)
        return stream

    def unsubscribe(self, stream: asyncio.Queue[LogLine]) -> None:
        self._streams.discard(stream)
