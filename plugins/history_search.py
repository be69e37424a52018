"""The ``history_search`` and ``recall`` tools: the model looks up what was said
earlier in this chat.

Both search only the conversation being answered (never another chat's messages) and
only complete turns: ``history_search`` by words, with the database's full-text search;
``recall`` by meaning when ``[memory] embed_model`` is set (and by words otherwise).
"""

from __future__ import annotations

from llamabot import CommandContext, FoundMessage, Plugin

plugin = Plugin("history_search", description="Lets the model search this chat's history.")

# A found message is cut to this many characters, so a few results fit any context.
EXCERPT_CHARS = 300


@plugin.tool("history_search")
async def history_search(ctx: CommandContext[None], query: str, limit: int = 5) -> str:
    """Search this conversation's earlier messages for words, best matches first.

    Args:
        query: The words to look for.
        limit: How many messages to return at most (1 to 20).
    """
    found = await ctx.history.search(query, max(1, min(limit, 20)))
    if not found:
        return f"No earlier message here contains {query!r}."
    return _listed(found)


@plugin.tool("recall")
async def recall(ctx: CommandContext[None], about: str, limit: int = 5) -> str:
    """Recall what was said earlier in this conversation about something, closest first.

    Args:
        about: What to recall, in a few words or a question.
        limit: How many messages to return at most (1 to 20).
    """
    found = await ctx.memory.recall(about, max(1, min(limit, 20)))
    if not found:
        return f"Nothing earlier here is about {about!r}."
    return _listed(found)


def _listed(found: list[FoundMessage]) -> str:
    lines = []
    for message in found:
        who = message.author_name or ("you" if message.role == "assistant" else "someone")
        text = message.content
        if len(text) > EXCERPT_CHARS:
            text = text[: EXCERPT_CHARS - 1] + "…"
        lines.append(f"[{message.created_at:%Y-%m-%d %H:%M}] {who}: {text}")
    return "\n".join(lines)
