"""What the model is shown: the persona prompt, then stored turns shaped for any chat template.

Strict chat templates (Llama 2, Mistral, Gemma) raise unless turns alternate user /
assistant after one system turn. The history can break that: a reply that failed is not
fed back, which leaves two user turns in a row, and trimming by tokens can leave the
window starting with an answer. So turns of the same role are merged, a window never
starts with an assistant turn, and the persona prompt is the only system turn.
"""

from __future__ import annotations

from collections.abc import Iterable

from llamabot.llm.base import ChatMessage, Role
from llamabot.storage.history import Turn

# Between merged turns of one role: a blank line, as two messages would read.
MERGE_SEPARATOR = "\n\n"


def speaker_line(name: str | None, text: str) -> str:
    """How a person's turn reaches the model in a group: prefixed with their name."""
    return f"{name}: {text}" if name else text


def build_window(prompt: str, turns: Iterable[Turn], *, private: bool) -> list[ChatMessage]:
    """The messages for the model: ``prompt`` as system turn, then alternating turns."""
    messages: list[ChatMessage] = [ChatMessage("system", prompt)]
    role: Role
    for turn in turns:
        if turn.role == "user":
            content = speaker_line(None if private else turn.author_name, turn.content)
            role = "user"
        elif turn.role == "assistant":
            if len(messages) == 1:
                continue  # the window's oldest user turn was trimmed away
            content, role = turn.content, "assistant"
        else:
            continue
        last = messages[-1]
        if last.role == role:
            messages[-1] = ChatMessage(role, last.content + MERGE_SEPARATOR + content)
        else:
            messages.append(ChatMessage(role, content))
    return messages
