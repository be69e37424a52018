"""What the model is shown: the persona prompt, then stored turns shaped for any chat template.

Strict chat templates (Llama 2, Mistral, Gemma) raise unless turns alternate user /
assistant after one system turn. The history can break that: a reply that failed is not
fed back, which leaves two user turns in a row, and trimming by tokens can leave the
window starting with an answer. So turns of the same role are merged, a window never
starts with an assistant turn, and the persona prompt is the only system turn.

Tool calls and their results are shown only to a model that is offered tools, as the
assistant turn carrying the calls followed by one ``tool`` turn per result; a result
whose call was trimmed away is left out. Other models see the answers alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from llamabot.llm.base import ChatMessage, ToolCall
from llamabot.storage.history import Turn

# Between merged turns of one role: a blank line, as two messages would read.
MERGE_SEPARATOR = "\n\n"
# Where a person sent pictures (the model sees those of the newest `[history]
# image_turns` turns themselves, older ones only as this note).
IMAGE_NOTE = " [sent a picture]"


def speaker_line(name: str | None, text: str) -> str:
    """How a person's turn reaches the model in a group: prefixed with their name."""
    return f"{name}: {text}" if name else text


# Messages made from one turn, by (turn, private): consecutive windows of a conversation
# share all but their newest turns. Emptied when it grows past MEMO_SIZE.
ShownTurns = dict[tuple[Turn, bool], ChatMessage]
MEMO_SIZE = 20_000


def build_window(
    prompt: str,
    turns: Iterable[Turn],
    *,
    private: bool,
    tools: bool = False,
    pictures: Mapping[int, tuple[bytes, ...]] | None = None,
    memo: ShownTurns | None = None,
) -> list[ChatMessage]:
    """The messages for the model: ``prompt`` as system turn, then alternating turns
    (with the tool calls and results when ``tools``). ``pictures`` maps the index of a
    person's turn to the pictures the model sees with it; ``memo`` keeps the message
    made from each plain turn for the next window."""
    messages: list[ChatMessage] = [ChatMessage("system", prompt)]
    shown: ShownTurns = memo if memo is not None else {}
    if len(shown) > MEMO_SIZE:
        shown.clear()
    for index, turn in enumerate(turns):
        seen = pictures.get(index, ()) if pictures else ()
        # Kept only when made from the turn and privacy alone: no pictures, and nothing
        # that depends on whether the model is shown tools.
        plain = not seen and turn.role != "tool" and not turn.tool_calls
        message = shown.get((turn, private)) if plain else None
        if message is None:
            message = _message_of(turn, private, tools, seen)
            if message is None:
                continue
            if plain:
                shown[(turn, private)] = message
        role = message.role
        if role == "assistant" and len(messages) == 1:
            continue  # the window's oldest user turn was trimmed away
        last = messages[-1]
        if role == "tool":
            if last.role == "tool" or last.tool_calls:
                messages.append(message)
            continue  # else the call it answers was trimmed away
        if last.role == role and not message.tool_calls and not last.tool_calls:
            merged = last.content + MERGE_SEPARATOR + message.content
            messages[-1] = ChatMessage(role, merged, images=last.images + message.images)
        else:
            messages.append(message)
    return messages


def _message_of(
    turn: Turn, private: bool, tools: bool, seen: tuple[bytes, ...]
) -> ChatMessage | None:
    """One turn as the model sees it on its own; None for a turn it is not shown."""
    if turn.role == "user":
        said = turn.content + (IMAGE_NOTE if turn.images else "")
        content = speaker_line(None if private else turn.author_name, said.strip())
        return ChatMessage("user", content, images=seen)
    if turn.role == "assistant":
        calls = stored_calls(turn.tool_calls) if tools else ()
        if not calls and not turn.content:
            return None  # tool calls alone, for a model that is shown none
        return ChatMessage("assistant", turn.content, tool_calls=calls)
    if turn.role == "tool" and tools:
        return ChatMessage(
            "tool", turn.content, tool_name=turn.tool_name, tool_call_id=turn.tool_call_id
        )
    return None


def stored_calls(text: str | None) -> tuple[ToolCall, ...]:
    """Tool calls as the history stores them (JSON), back as ``ToolCall``."""
    if not text:
        return ()
    return tuple(ToolCall(c["id"], c["name"], c.get("arguments") or {}) for c in json.loads(text))


def calls_to_store(calls: Iterable[ToolCall]) -> str:
    """Tool calls as the history stores them."""
    return json.dumps(
        [{"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in calls],
        ensure_ascii=False,
    )
