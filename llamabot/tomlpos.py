"""Find the line of a key in TOML text, so config errors can point at it.

``tomllib`` keeps no positions; this walks the table headers and ``key =`` lines, which
is all bot.toml needs (inline tables and multi-line values point at their first line).
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _split_key(raw: str) -> list[str]:
    return [part.strip().strip("\"'") for part in raw.split(".")]


def locate_key(text: str, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line where ``loc`` (as in a pydantic error) is set, or its table starts."""
    wanted = [str(part) for part in loc]
    table: list[str] = []
    counts: dict[str, int] = {}
    best_line: int | None = None
    best_len = 0
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            keys = _split_key(header.group(2))
            if header.group(1) == "[[":
                name = ".".join(keys)
                counts[name] = counts.get(name, -1) + 1
                table = [*keys, str(counts[name])]
            else:
                table = keys
            path = table
        else:
            key = _KEY.match(line)
            if not key or line.lstrip().startswith("#"):
                continue
            path = table + _split_key(key.group(1))
        matched = 0
        for have, want in zip(path, wanted, strict=False):
            if have != want:
                break
            matched += 1
        if matched == len(path) and matched > best_len:
            best_line, best_len = number, matched
            if matched == len(wanted):
                return number
    return best_line
