"""What memory asks the model, and what it places in the window.

The instructions start with fixed words, so a test's fake model server (and a log
reader) can tell a summary or fact request from a reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from llamabot.llm.base import ChatMessage
from llamabot.memory.store import Fact, OldTurn

SUMMARY_INSTRUCTIONS = (
    "You keep the running summary of a chat. Rewrite the summary so far to include the "
    "new messages. Keep names, facts people stated about themselves, decisions, plans, "
    "promises and running jokes; drop greetings and small talk. Write plain sentences, "
    "at most 200 words, and nothing but the summary."
)
FACTS_INSTRUCTIONS = (
    "You note facts a person states about themselves, to remember in later chats: their "
    "name, preferences, work, projects, plans. Read the person's messages and answer "
    "with one short fact per line, each starting with '- ' and written about them "
    "('- is called Sam', '- prefers metric units'). Only facts they stated; answer NONE "
    "when there are none."
)
MAX_FACT_CHARS = 200
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*\S)\s*$")


def transcript(turns: Sequence[OldTurn], bot_name: str) -> str:
    """Turns as ``Name: text`` lines."""
    lines = []
    for turn in turns:
        who = (turn.author_name or "Someone") if turn.role == "user" else bot_name
        lines.append(f"{who}: {turn.content.strip()}")
    return "\n".join(lines)


def summary_request(old: str, turns: Sequence[OldTurn], bot_name: str) -> list[ChatMessage]:
    so_far = old.strip() or "(nothing yet)"
    return [
        ChatMessage("system", SUMMARY_INSTRUCTIONS),
        ChatMessage(
            "user",
            f"Summary so far:\n{so_far}\n\nNew messages:\n{transcript(turns, bot_name)}\n\n"
            "The updated summary:",
        ),
    ]


def facts_request(name: str, turns: Sequence[OldTurn]) -> list[ChatMessage]:
    said = "\n".join(f"- {turn.content.strip()}" for turn in turns)
    return [
        ChatMessage("system", FACTS_INSTRUCTIONS),
        ChatMessage("user", f"{name}'s messages:\n{said}\n\nFacts about {name}:"),
    ]


def parse_facts(answer: str, limit: int = 10) -> list[str]:
    """The bullet lines of a fact answer (none for NONE or prose)."""
    facts = []
    for line in answer.splitlines():
        match = _BULLET.match(line)
        if match and match.group(1).strip().upper() != "NONE":
            facts.append(match.group(1)[:MAX_FACT_CHARS])
    return facts[:limit]


def memory_text(summary: str, facts: Sequence[Fact], person: str) -> str:
    """What goes after the persona prompt: the facts about the person speaking, then the
    summary of what came before the window."""
    parts = []
    if facts:
        listed = "\n".join(f"- {fact.text}" for fact in facts)
        parts.append(f"What you remember about {person}:\n{listed}")
    if summary:
        parts.append(f"Earlier in this conversation (a summary):\n{summary}")
    return "\n\n".join(parts)
