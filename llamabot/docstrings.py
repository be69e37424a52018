"""What a function's docstring says about it: a summary, and each argument (Google style).

Both the tools offered to the model and the options of native (slash) commands are
described from the plugin's own docstrings.
"""

from __future__ import annotations

import re

# A Google-style "Args:" section: "name: description", continued on indented lines.
_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^\s+(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_OTHER_SECTION = re.compile(r"^(Returns|Raises|Yields|Examples?):\s*$")


def read_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (the text before any section) and each argument's description."""
    summary: list[str] = []
    arguments: dict[str, str] = {}
    current: str | None = None
    in_args = False
    for line in doc.splitlines():
        if _ARGS_HEADER.match(line):
            in_args = True
            continue
        if in_args:
            match = _ARG_LINE.match(line)
            if match and (len(line) - len(line.lstrip())) <= 4:
                current = match.group(1).lstrip("*")
                arguments[current] = match.group(2).strip()
            elif line.strip() and line.startswith((" ", "\t")) and current is not None:
                arguments[current] += " " + line.strip()
            elif line.strip():
                in_args = False  # another section starts
            continue
        if _OTHER_SECTION.match(line):
            in_args = False
            current = None
            summary.append("\0")  # the summary ends at the first section
            continue
        summary.append(line)
    text = "\n".join(summary).split("\0")[0].strip()
    return text, arguments
