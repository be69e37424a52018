"""The newest turns of each conversation, kept in memory so that answering a message
does not read its window back from SQLite.

Only for a SQLite file, which one bot process owns (``storage/locks.py``). Every change
made through another connection (a delete, ``llamabot db prune`` in another process, the
scheduler's job store) bumps SQLite's ``PRAGMA data_version`` as seen by the history's own
connection, and a changed version empties the cache: it never shows a deleted message.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

# Conversations remembered; the least recently answered are forgotten first.
MAX_CONVERSATIONS = 1000

# A window row (history.Turn): role, content, author_name, tokens, tool..., images, id.
# Kept as handed in, so a window is made of them without copying.
Row = TypeVar("Row", bound=tuple[Any, ...])


@dataclass
class _Tail(Generic[Row]):
    rows: deque[Row] = field(default_factory=deque)  # oldest first, complete turns only
    whole: bool = False  # holds every complete turn of the conversation


class RecentTurns(Generic[Row]):
    """The cache; all calls come from the history's units of work, one group at a time."""

    def __init__(self) -> None:
        self._tails: OrderedDict[int, _Tail[Row]] = OrderedDict()
        self._version: int | None = None

    def clear(self) -> None:
        """Forget everything (a transaction whose rows were cached was rolled back)."""
        self._tails.clear()

    def check(self, data_version: int) -> None:
        """Forget everything when another connection changed the database."""
        if data_version != self._version:
            self._tails.clear()
            self._version = data_version

    def newest(self, conversation_id: int, count: int) -> list[Row] | None:
        """Up to ``count`` newest rows, newest first; None when not known well enough."""
        tail = self._tails.get(conversation_id)
        if tail is None or (len(tail.rows) < count and not tail.whole):
            return None
        self._tails.move_to_end(conversation_id)
        rows = list(tail.rows)[-count:]
        rows.reverse()
        return rows

    def remember(self, conversation_id: int, newest_first: Sequence[Row], asked: int) -> None:
        """What a window read returned (``asked`` rows were asked for)."""
        tail = _Tail(deque(reversed(newest_first), maxlen=max(asked, 1)), len(newest_first) < asked)
        self._tails[conversation_id] = tail
        self._tails.move_to_end(conversation_id)
        while len(self._tails) > MAX_CONVERSATIONS:
            self._tails.popitem(last=False)

    def add(self, conversation_id: int, row: Row) -> None:
        """A complete turn was stored through the history's own connection."""
        tail = self._tails.get(conversation_id)
        if tail is None:
            return
        if tail.rows.maxlen is not None and len(tail.rows) == tail.rows.maxlen:
            tail.whole = False  # the oldest row falls out
        tail.rows.append(row)
