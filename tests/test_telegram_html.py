"""Model Markdown to Telegram HTML: what converts, what stays literal, what is escaped."""

from __future__ import annotations

import pytest

from llamabot.adapters.telegram_html import escape, markdown_to_html, visible_text
from tests.fakes.telegram import ApiError, parse_html


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold**", "<b>bold</b>"),
        ("__bold__", "<b>bold</b>"),
        ("*italic* and _italic_", "<i>italic</i> and <i>italic</i>"),
        ("***both***", "<b><i>both</i></b>"),
        ("**a *b* c**", "<b>a <i>b</i> c</b>"),
        ("*a **b** c*", "<i>a <b>b</b> c</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("use `x < y && z`", "use <code>x &lt; y &amp;&amp; z</code>"),
        ("`**not bold**`", "<code>**not bold**</code>"),
        (
            "[docs](https://example.org/a?b=1&c=2)",
            '<a href="https://example.org/a?b=1&amp;c=2">docs</a>',
        ),
        ("[**bold link**](https://a.example)", '<a href="https://a.example"><b>bold link</b></a>'),
        ("# Title", "<b>Title</b>"),
        ("## **Already bold**", "<b>Already bold</b>"),
    ],
)
def test_converts_what_telegram_can_show(markdown: str, expected: str) -> None:
    assert markdown_to_html(markdown) == expected


@pytest.mark.parametrize(
    "markdown",
    [
        "snake_case_name and my_var_2 stay",
        "2 * 3 * 4 = 24",
        "* a bullet\n* another bullet",
        "**never closed",
        "a lone ` backtick",
        "[not a link](javascript:alert(1))",
        "#hashtag, not a heading",
        "x__y__z",
    ],
)
def test_leaves_non_markdown_alone(markdown: str) -> None:
    assert visible_text(markdown_to_html(markdown)) == markdown


def test_escapes_the_characters_telegram_reserves() -> None:
    html = markdown_to_html('if a < b && b > c: print("<b>")')
    assert html == 'if a &lt; b &amp;&amp; b &gt; c: print("&lt;b&gt;")'
    assert escape("&lt;") == "&amp;lt;"


def test_link_address_is_escaped_inside_the_attribute() -> None:
    html = markdown_to_html('[q](https://example.org/?q="x"&y=1)')
    assert html == '<a href="https://example.org/?q=&quot;x&quot;&amp;y=1">q</a>'
    text, entities = parse_html(html)
    assert text == "q"
    assert entities[0]["url"] == 'https://example.org/?q="x"&y=1'


def test_code_block_keeps_its_language_and_content_verbatim() -> None:
    markdown = 'Try this:\n```python\nif a < b:\n    print("**x**")\n```\nDone.'
    html = markdown_to_html(markdown)
    assert html == (
        'Try this:\n<pre><code class="language-python">if a &lt; b:\n    print("**x**")'
        "</code></pre>\nDone."
    )
    text, entities = parse_html(html)
    assert text == 'Try this:\nif a < b:\n    print("**x**")\nDone.'
    assert entities == [{"type": "pre", "language": "python", "offset": 10, "length": 28}]


def test_code_block_without_language_and_unclosed_block() -> None:
    assert markdown_to_html("```\nplain\n```") == "<pre>plain</pre>"
    # A reply still streaming: the open block is shown as code already.
    assert markdown_to_html("Look:\n```sh\nls -l") == (
        'Look:\n<pre><code class="language-sh">ls -l</code></pre>'
    )
    assert markdown_to_html("```sh\n") == ""  # nothing to show yet


SAMPLE = (
    "# Answer\n\nHere is **bold**, *italic*, ~~old~~ and `a<b>&c` with a "
    "[link](https://example.org/?x=1&y=2).\n\n* item one\n* item __two__\n\n"
    '```python\ndef f(a, b):\n    return a < b and "**"\n```\n'
    "Snake_case_words stay, 3 * 4 stays, and ***both*** work. Done & dusted."
)


def test_every_prefix_of_a_streamed_reply_is_html_telegram_accepts() -> None:
    for end in range(1, len(SAMPLE) + 1):
        html = markdown_to_html(SAMPLE[:end])
        try:
            text, _ = parse_html(html)
        except ApiError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"prefix {SAMPLE[:end]!r} gave HTML Telegram refuses: {exc}\n{html}")
        assert text == visible_text(html)


def test_visible_text_drops_only_markup() -> None:
    html = markdown_to_html(SAMPLE)
    text, _ = parse_html(html)
    assert visible_text(html) == text
    assert "Answer\n\nHere is bold, italic, old and a<b>&c with a link." in text
    assert "Snake_case_words stay, 3 * 4 stays, and both work. Done & dusted." in text
