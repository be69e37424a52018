"""The window the model sees: one system turn, then strictly alternating turns."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from llamabot.llm.base import ChatMessage
from llamabot.llm.llamacpp import bundled_model_path
from llamabot.storage.history import Turn
from llamabot.window import build_window

# Llama 2's template: it raises unless roles alternate user/assistant after the system turn.
STRICT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set rest = messages[1:] %}"
    "{% else %}{% set rest = messages %}{% endif %}"
    "{% for message in rest %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def turn(role: str, content: str, name: str | None = None) -> Turn:
    return Turn(role=role, content=content, author_name=name, tokens=1)


# Histories the store can hand back: a failed reply leaves user turns in a row; trimming
# by tokens can cut the window's first user turn and leave its answer first.
AWKWARD = {
    "failed reply between": [turn("user", "a"), turn("user", "b")],
    "starts with an answer": [turn("assistant", "x"), turn("user", "b")],
    "answers in a row": [
        turn("user", "a"),
        turn("assistant", "x"),
        turn("assistant", "y"),
        turn("user", "b"),
    ],
    "all at once": [
        turn("assistant", "x"),
        turn("user", "a"),
        turn("user", "b"),
        turn("assistant", "y"),
        turn("user", "c"),
    ],
}


def roles(messages: list[ChatMessage]) -> list[str]:
    return [m.role for m in messages]


@pytest.mark.parametrize("history", AWKWARD.values(), ids=AWKWARD.keys())
def test_every_window_alternates_after_one_system_turn(history: list[Turn]) -> None:
    window = build_window("persona", history, private=True)
    assert window[0] == ChatMessage("system", "persona")
    rest = roles(window[1:])
    assert rest[0] == "user" and rest[-1] == "user"
    assert all(a != b for a, b in itertools.pairwise(rest))
    assert "system" not in rest


def test_merged_turns_keep_every_word_in_order() -> None:
    window = build_window("p", AWKWARD["all at once"], private=True)
    assert [m.content for m in window[1:]] == ["a\n\nb", "y", "c"]


def test_group_turns_carry_the_speakers_name() -> None:
    history = [turn("user", "hi", "Ann"), turn("user", "yo", "Bob")]
    [_, merged] = build_window("p", history, private=False)
    assert merged.content == "Ann: hi\n\nBob: yo"


def test_a_memo_gives_the_same_windows_as_building_afresh() -> None:
    calls = '[{"id": "c1", "name": "clock", "arguments": {}}]'
    history = [
        turn("user", "hi", "Ann"),
        Turn("assistant", "", None, 1, tool_calls=calls, id=2),
        Turn("tool", "12:00", None, 1, tool_name="clock", tool_call_id="c1", id=3),
        turn("assistant", "It is noon."),
        Turn("user", "look", "Bob", 1, images='[{"sha256": "x"}]', id=5),
        turn("user", "and?", "Bob"),
        turn("assistant", "A cat."),
    ]
    memo: dict[tuple[Turn, bool], ChatMessage] = {}
    for start in range(len(history)):  # windows sliding over the same turns, twice
        for private, tools in itertools.product((True, False), repeat=2):
            window = history[start:]
            pictures = {0: (b"png",)}  # a different turn's, window to window
            options: dict[str, Any] = {"private": private, "tools": tools, "pictures": pictures}
            fresh = build_window("p", window, **options)
            assert build_window("p", window, memo=memo, **options) == fresh
            assert build_window("p", window, memo=memo, **options) == fresh
    assert memo  # it was used


def render(template: str, window: list[ChatMessage]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template, eos_token="</s>", bos_token="<s>")
    messages: Any = [{"role": m.role, "content": m.content} for m in window]
    return str(formatter(messages=messages).prompt)


@contextlib.contextmanager
def bundled_template() -> Iterator[str]:
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = LlamaModel(path_model=str(bundled_model_path()), params=params, verbose=False)
    try:
        yield model.metadata()["tokenizer.chat_template"]
    finally:
        model.close()


@pytest.mark.skipif(bundled_model_path() is None, reason="needs llamabot[embedded]")
@pytest.mark.parametrize("history", AWKWARD.values(), ids=AWKWARD.keys())
def test_real_templates_accept_every_window(history: list[Turn]) -> None:
    window = build_window("You are terse.", history, private=True)
    with pytest.raises(Exception, match="alternate"):
        # The strict template does reject what the store hands back, unshaped.
        raw = [ChatMessage("system", "s")] + [
            ChatMessage("user" if t.role == "user" else "assistant", t.content) for t in history
        ]
        render(STRICT_TEMPLATE, raw)
    assert "[INST]" in render(STRICT_TEMPLATE, window)
    with bundled_template() as template:
        prompt = render(template, window)
    assert prompt.count("<|im_start|>system") == 1
    assert prompt.rstrip().endswith("<|im_start|>assistant")
