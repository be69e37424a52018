"""TOML syntax errors in the ``file:line:column: problem`` form of every other config error.

Python 3.11's ``tomllib`` puts the position inside the message ("... (at line 3, column 9)")
and words the common mistakes in parser terms ("Illegal character '\\n'"); this turns them
into what the admin did and how to fix it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

_AT = re.compile(
    r"^(?P<message>.*?) \((?:at line (?P<line>\d+), column (?P<column>\d+)|at end of document)\)$"
)
_KEY = re.compile(r"^\s*([^=#]+?)\s*=")

UNCLOSED_STRING = (
    'unclosed string; end it with the quote it starts with (""" for text over several lines)'
)
MISSING_BRACKET = "missing `]`"


def describe_syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: Path) -> str:
    """One line: where the syntax error is, what it is, and how to fix the usual causes."""
    found = _AT.match(str(exc))
    if found is None:
        return f"{path}: {exc}"
    message = found["message"]
    if found["line"] is not None:
        line, column = int(found["line"]), int(found["column"])
    else:
        line, column = _end_of(text)
    source = text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else ""
    problem, at = _explain(message, text, source, line, column)
    line, column = at
    return f"{path}:{line}:{column}: {problem}"


def _end_of(text: str) -> tuple[int, int]:
    lines = text.splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


def _explain(
    message: str, text: str, source: str, line: int, column: int
) -> tuple[str, tuple[int, int]]:
    """The admin's words for tomllib's ``message``, and the position to show."""
    at = (line, column)
    if message == "Illegal character '\\n'" or message.startswith("Unterminated string"):
        return UNCLOSED_STRING, _string_start(text, line, column)
    if message.startswith('Expected "\'"') or message.startswith("Expected '\"'"):
        return UNCLOSED_STRING, _string_start(text, line, column)
    if message.startswith("Expected ']' at the end of a table declaration"):
        return f"{MISSING_BRACKET} at the end of the table header, e.g. [bot]", at
    if message.startswith("Expected ']]' at the end of an array declaration"):
        return "missing `]]` at the end of the header, e.g. [[bindings]]", at
    opened = _open_array(text, line + 1 if message.startswith("Unclosed array") else line)
    if opened is not None and (message.startswith("Unclosed array") or message == "Invalid value"):
        unclosed = 'this list is never closed; end it with ], e.g. admins = ["console:alice"]'
        return f"{MISSING_BRACKET}: {unclosed}", opened
    if message.startswith("Cannot overwrite a value"):
        key = _KEY.match(source)
        name = f" {key.group(1).strip()!r}" if key else ""
        return f"duplicate key{name}: it is already set above in this table; keep one", at
    declared = re.match(r"Cannot declare \((.*)\) twice", message)
    if declared:
        table = ".".join(
            part.strip(" '\"") for part in declared.group(1).split(",") if part.strip()
        )
        return f"duplicate table [{table}]: merge the two tables into one", at
    if message == "Invalid value":
        return 'invalid value; text needs quotes, e.g. name = "Llama"', at
    return message[:1].lower() + message[1:], at


def _string_start(text: str, line: int, column: int) -> tuple[int, int]:
    """Where the unclosed string opens."""
    lines = text.splitlines()
    before = lines[line - 1][: column - 1] if 0 < line <= len(lines) else ""
    triple = max(text.rfind('"""'), text.rfind("'''"))
    if triple >= 0 and text.count('"""') % 2 + text.count("'''") % 2:
        # A multi-line string runs to the end of the file: it opens at the last """.
        return text.count("\n", 0, triple) + 1, triple - (text.rfind("\n", 0, triple) + 1) + 1
    quote = _unclosed_quote(before)
    return (line, quote + 1) if quote is not None else (line, column)


def _unclosed_quote(source: str) -> int | None:
    """The index of the quote that opens a string ``source`` never closes."""
    opened: int | None = None
    escaped = False
    for index, char in enumerate(source):
        if opened is None:
            if char == "#":
                return None
            if char in "\"'":
                opened = index
        elif escaped:
            escaped = False
        elif char == "\\" and source[opened] == '"':
            escaped = True
        elif char == source[opened]:
            opened = None
    return opened


def _open_array(text: str, line: int) -> tuple[int, int] | None:
    """Where a list still open at ``line`` began (brackets counted, strings ignored)."""
    depth = 0
    opened: tuple[int, int] | None = None
    for number, source in enumerate(text.splitlines()[: line - 1], start=1):
        code = re.sub(r'"[^"]*"|\'[^\']*\'|#.*', "", source)
        for column, char in enumerate(code, start=1):
            if char == "[":
                if depth == 0:
                    opened = (number, column)
                depth += 1
            elif char == "]":
                depth = max(depth - 1, 0)
    return opened if depth > 0 else None
