"""Splitting long replies and streaming them with throttled edits."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest

from llamabot.adapters.base import PlatformLimits
from llamabot.events import ChannelRef
from llamabot.streaming import ReplyStream, split_message, take_piece
from llamabot.testing import FakePlatform

CHANNEL = ChannelRef("console", "local", is_private=True)


def unsplit(pieces: list[str]) -> str:
    """Join messages back, removing the fences added to close and reopen a split block."""
    text = pieces[0]
    for piece in pieces[1:]:
        reopened = re.match(r"```[^\n]*\n", piece)
        if reopened and text.endswith("```") and text.count("```") % 2 == 0:
            text = text[:-3]  # cuts inside code fall on line ends: the fence has its own line
            piece = piece[reopened.end() :]
        text += piece
    return text


def test_short_text_is_one_message() -> None:
    assert split_message("hello", 2000) == ["hello"]


def test_prefers_paragraph_then_line_then_sentence_then_word() -> None:
    para = "a" * 60 + "\n\n" + "b" * 60
    assert split_message(para, 100)[0] == "a" * 60 + "\n\n"
    line = "a" * 60 + "\n" + "b" * 60
    assert split_message(line, 100)[0] == "a" * 60 + "\n"
    sentence = "word " * 12 + "end. " + "more " * 20
    assert split_message(sentence, 100)[0].endswith("end. ")
    words = "word " * 40
    first = split_message(words, 100)[0]
    assert first.endswith(" ") and len(first) <= 100


def test_hard_cut_when_there_is_no_boundary() -> None:
    pieces = split_message("x" * 250, 100)
    assert pieces == ["x" * 100, "x" * 100, "x" * 50]


def test_every_piece_fits_and_they_join_to_the_text() -> None:
    text = "".join(f"Paragraph {i}. " + "lorem ipsum " * (i % 17) + "\n\n" for i in range(300))
    pieces = split_message(text, 2000)
    assert all(len(p) <= 2000 for p in pieces)
    assert "".join(pieces) == text


def test_a_code_block_cut_in_two_is_closed_and_reopened_with_its_language() -> None:
    code = "```python\n" + "".join(f"print({i})\n" for i in range(400)) + "```\nafter"
    pieces = split_message(code, 1000)
    assert len(pieces) > 2
    for piece in pieces:
        assert len(piece) <= 1000
        assert piece.count("```") % 2 == 0, piece[:40]
    assert pieces[0].endswith("\n```")
    assert pieces[1].startswith("```python\n")
    assert unsplit(pieces) == code


def test_take_piece_reports_what_it_consumed() -> None:
    piece, consumed, reopen = take_piece("```js\n" + "x = 1;\n" * 50, 100)
    assert reopen == "```js\n"
    assert piece.startswith("```js\n") and piece.endswith("```")
    assert consumed == len(piece) - len("```")


async def stream(adapter: FakePlatform, text: str, chunk: int = 7) -> ReplyStream:
    reply = ReplyStream(adapter, CHANNEL, "in-1")
    reply.start()
    for start in range(0, len(text), chunk):
        reply.feed(text[start : start + chunk])
        await asyncio.sleep(0)
    await reply.finish()
    return reply


async def test_first_text_is_sent_then_edited_to_the_whole_reply() -> None:
    adapter = FakePlatform()
    text = "The quick brown fox jumps over the lazy dog. " * 5
    reply = await stream(adapter, text)
    assert next(c.kind for c in adapter.calls) == "send"
    assert adapter.messages_in(CHANNEL.key) == [text]
    assert len(reply.messages) == 1


async def test_long_reply_continues_in_new_messages_joining_to_the_exact_text() -> None:
    adapter = FakePlatform()
    text = "".join(f"Line {i} of a long answer, with some words.\n" for i in range(200))
    await stream(adapter, text, chunk=13)
    messages = adapter.messages_in(CHANNEL.key)
    assert len(messages) == 5
    assert all(len(m) <= 2000 for m in messages)
    assert "".join(messages) == text


async def test_edits_of_one_message_are_never_faster_than_the_interval() -> None:
    interval = 0.05
    adapter = FakePlatform(limits=PlatformLimits(max_chars=2000, edit_interval_s=interval))
    reply = ReplyStream(adapter, CHANNEL)
    reply.start()
    for i in range(40):
        reply.feed(f"token{i} ")
        await asyncio.sleep(0.005)
    await reply.finish()
    times = [c.at for c in adapter.calls if c.kind in ("send", "edit")]
    assert len(times) >= 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= interval * 0.95
    assert adapter.messages_in(CHANNEL.key) == ["".join(f"token{i} " for i in range(40))]


async def test_a_failed_edit_continues_in_a_new_message_without_loss_or_duplication() -> None:
    adapter = FakePlatform()
    reply = ReplyStream(adapter, CHANNEL)
    reply.start()
    reply.feed("first part. ")
    await adapter.changed.wait()
    adapter.fail_edits = 1
    reply.feed("second part. ")
    reply.feed("third part.")
    await reply.finish()
    messages = adapter.messages_in(CHANNEL.key)
    assert len(messages) == 2
    assert "".join(messages) == "first part. second part. third part."


async def test_finish_suffix_is_shown() -> None:
    adapter = FakePlatform()
    reply = ReplyStream(adapter, CHANNEL)
    reply.start()
    reply.feed("partial")
    await reply.finish("\n\n[interrupted]")
    assert adapter.messages_in(CHANNEL.key) == ["partial\n\n[interrupted]"]


@pytest.mark.parametrize("text", ["", "   \n  "])
async def test_blank_output_sends_nothing(text: str) -> None:
    adapter = FakePlatform()
    await stream(adapter, text)
    assert adapter.calls == []


async def test_a_reply_cut_at_stop_ends_with_the_restart_notice() -> None:
    adapter = FakePlatform()
    reply = ReplyStream(adapter, CHANNEL, "m1")
    reply.start()
    reply.feed("Half of an answer")
    await adapter.changed.wait()  # the first part is shown
    await reply.cancel()
    assert adapter.messages_in(CHANNEL.key) == [
        "Half of an answer\n\n[interrupted: the bot is restarting]"
    ]


async def test_a_reply_cut_before_its_first_word_still_tells_the_person() -> None:
    adapter = FakePlatform()
    reply = ReplyStream(adapter, CHANNEL, "m1")
    reply.start()
    await reply.cancel()
    assert adapter.messages_in(CHANNEL.key) == ["[interrupted: the bot is restarting]"]


TYPING = PlatformLimits(
    max_chars=2000, edit_interval_s=1.0, typing_interval_s=5.0, typing_after_s=0.05
)


async def test_a_reply_whole_before_its_first_send_is_one_request_with_no_typing() -> None:
    adapter = FakePlatform(limits=TYPING)
    reply = ReplyStream(adapter, CHANNEL, "m1")
    tasks_before = len(asyncio.all_tasks())
    reply.start()
    reply.feed("All of it")
    await asyncio.sleep(0)  # the model's turn ends: the typing timer is looked at
    reply.feed(" at once.")
    assert len(asyncio.all_tasks()) == tasks_before  # no pump task for a quick reply
    await reply.finish()
    await asyncio.sleep(0.1)  # past typing_after_s: nothing may fire late
    assert [(c.kind, c.text) for c in adapter.calls] == [("send", "All of it at once.")]


async def test_a_slow_first_word_shows_typing_then_one_message() -> None:
    adapter = FakePlatform(limits=TYPING)
    reply = ReplyStream(adapter, CHANNEL, "m1")
    started = time.monotonic()
    reply.start()
    await adapter.typed.wait()
    reply.feed("Finally.")
    await reply.finish()
    assert [c.kind for c in adapter.calls] == ["typing", "send"]
    assert adapter.calls[0].at - started >= TYPING.typing_after_s * 0.95


async def test_text_still_coming_after_the_first_send_hold_is_sent_then_edited() -> None:
    adapter = FakePlatform(limits=PlatformLimits(max_chars=2000, edit_interval_s=0.05))
    reply = ReplyStream(adapter, CHANNEL, "m1")
    reply.start()
    reply.feed("First words")
    await adapter.changed.wait()  # the hold ran out with the reply unfinished: sent
    assert adapter.messages_in(CHANNEL.key) == ["First words"]
    reply.feed(", then the rest.")
    await reply.finish()
    assert adapter.messages_in(CHANNEL.key) == ["First words, then the rest."]
    assert [c.kind for c in adapter.calls] == ["send", "edit"]
