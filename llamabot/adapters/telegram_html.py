"""Model Markdown to the HTML subset Telegram accepts (``parse_mode=HTML``).

Only what converts cleanly is converted: bold, italics, strikethrough, inline code, fenced
code blocks (with their language), links and headings (shown bold). Everything else is
kept as the model wrote it, escaped. Half-written Markdown (a reply still streaming) stays
literal until its closing marker arrives, so every prefix of a reply converts to valid HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

FENCE = "```"

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\(((?:https?://|tg://|mailto:)[^\s()<>]+)\)")
_BOLD_STARS = re.compile(r"\*\*(?=[^\s*])([^\n]+?)(?<=[^\s*])\*\*")
_BOLD_UNDERSCORES = re.compile(r"__(?=[^\s_])([^\n]+?)(?<=[^\s_])__(?![0-9A-Za-z_])")
_STRIKE = re.compile(r"~~(?=[^\s~])([^\n]+?)(?<=[^\s~])~~")
_BOLD_ITALIC = re.compile(r"\*\*\*(?=[^\s*])([^\n*]+?)(?<=[^\s*])\*\*\*(?!\*)")
_ITALIC_STAR = re.compile(r"\*(?=[^\s*])((?:\*\*[^\n*]+?\*\*|[^\n*])+?)(?<![\s*])\*(?!\*)")
_ITALIC_UNDERSCORE = re.compile(r"_(?=[^\s_])([^\n_]+?)(?<=[^\s_])_(?![0-9A-Za-z_])")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")
_WORD_CHAR = re.compile(r"[0-9A-Za-z_]")
_ANY_TAG = re.compile(r"<[^>]*>")


def escape(text: str) -> str:
    """Escape the three characters Telegram's HTML parser reserves."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attribute(text: str) -> str:
    """Escape a value for a double-quoted attribute (a link's ``href``)."""
    return escape(text).replace('"', "&quot;")


def visible_text(markup: str) -> str:
    """The text a reader sees once Telegram parsed ``markup`` (tags gone, entities decoded)."""
    return html.unescape(_ANY_TAG.sub("", markup))


def markdown_to_html(text: str) -> str:
    """Convert a model's Markdown reply (or a prefix of one) to Telegram HTML."""
    out: list[str] = []
    lines = text.split("\n")
    index = 0
    prose: list[str] = []
    while index < len(lines):
        line = lines[index]
        if not line.strip().startswith(FENCE):
            prose.append(line)
            index += 1
            continue
        if prose:
            out.append(_prose("\n".join(prose)) + "\n")
            prose = []
        language = _LANGUAGE.match(line.strip()[len(FENCE) :].strip())
        body: list[str] = []
        index += 1
        closed = False
        while index < len(lines):
            if lines[index].strip().startswith(FENCE):
                closed = True
                index += 1
                break
            body.append(lines[index])
            index += 1
        out.append(_code_block("\n".join(body), language.group(0) if language else ""))
        if closed and index < len(lines):
            out.append("\n")
    if prose:
        out.append(_prose("\n".join(prose)))
    return "".join(out)


def _code_block(code: str, language: str) -> str:
    if not code:
        # Telegram refuses an empty entity; an empty block shows nothing anyway.
        return ""
    if language:
        return (
            f'<pre><code class="language-{escape_attribute(language)}">{escape(code)}</code></pre>'
        )
    return f"<pre>{escape(code)}</pre>"


def _prose(text: str) -> str:
    return "\n".join(_line(line) for line in text.split("\n"))


def _line(line: str) -> str:
    heading = _HEADING.match(line)
    if heading is None:
        return _inline(line, frozenset())
    title = heading.group(2)
    inner = _BOLD_STARS.fullmatch(title) or _BOLD_UNDERSCORES.fullmatch(title)
    if inner is not None:
        title = inner.group(1)
    return f"<b>{_inline(title, frozenset({'b'}))}</b>"


_Rule = tuple[str, re.Pattern[str], Callable[[re.Match[str], frozenset[str]], str]]


def _wrap(tag: str) -> Callable[[re.Match[str], frozenset[str]], str]:
    def render(match: re.Match[str], active: frozenset[str]) -> str:
        return f"<{tag}>{_inline(match.group(1), active | {tag})}</{tag}>"

    return render


def _bold_italic(match: re.Match[str], active: frozenset[str]) -> str:
    if "i" in active:
        return _wrap("b")(match, active)
    return f"<b><i>{_inline(match.group(1), active | {'b', 'i'})}</i></b>"


def _code(match: re.Match[str], active: frozenset[str]) -> str:
    return f"<code>{escape(match.group(1))}</code>"


def _link(match: re.Match[str], active: frozenset[str]) -> str:
    label = _inline(match.group(1), active | {"a", "code"})
    return f'<a href="{escape_attribute(match.group(2))}">{label}</a>'


# Order matters: code spans first (nothing inside them is Markdown), then links, then
# the double markers before the single ones they start with.
_RULES: tuple[_Rule, ...] = (
    ("code", _CODE_SPAN, _code),
    ("a", _LINK, _link),
    ("b", _BOLD_ITALIC, _bold_italic),
    ("b", _BOLD_STARS, _wrap("b")),
    ("b", _BOLD_UNDERSCORES, _wrap("b")),
    ("s", _STRIKE, _wrap("s")),
    ("i", _ITALIC_STAR, _wrap("i")),
    ("i", _ITALIC_UNDERSCORE, _wrap("i")),
)
_MARKERS = frozenset("`[*_~")


def _inline(text: str, active: frozenset[str]) -> str:
    out: list[str] = []
    position = 0
    plain_from = 0
    while position < len(text):
        char = text[position]
        if char not in _MARKERS:
            position += 1
            continue
        rendered = _try_rules(text, position, active)
        if rendered is None:
            position += 1
            continue
        html, end = rendered
        out.append(escape(text[plain_from:position]))
        out.append(html)
        position = plain_from = end
    out.append(escape(text[plain_from:]))
    return "".join(out)


def _try_rules(text: str, position: int, active: frozenset[str]) -> tuple[str, int] | None:
    for tag, pattern, render in _RULES:
        if tag in active:
            continue
        if tag in ("b", "i") and text[position] == "_" and _inside_word(text, position):
            continue  # snake_case identifiers are not emphasis
        match = pattern.match(text, position)
        if match is not None:
            return render(match, active), match.end()
    return None


def _inside_word(text: str, position: int) -> bool:
    return position > 0 and _WORD_CHAR.match(text[position - 1]) is not None
