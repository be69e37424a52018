"""A long conversation on a small window: does what a person said at the start still
reach the model 500 turns later?

One person talks to the real Bot (console, SQLite) for 500 turns with a 2,048-token
window. Twenty facts ("My dog's name is Biscuit.") are planted in the first 200 turns,
the rest is filler of about 60 tokens a turn, and at the end the person asks about each
fact. The model is scripted and answers only from its prompt, so what is measured is
whether the planted fact was *in the prompt* when asked: the share of facts recalled,
with memory off, with rolling summaries, with facts kept by the ``remember`` tool, and
with both; and what memory costs: extra model calls and tokens per turn.

The scripted model is an ideal note-taker: asked for a summary, it keeps every "My … is
…" sentence it is shown; it calls ``remember`` when a message states such a fact. So the
figures measure the plumbing (what leaves the window is folded in and put back in the
prompt), not how well a 135M-parameter model summarises. Between turns the bot is given
the time a person would take to type (memory's background work settles), and the reply
latency is measured without it.

    PYTHONPATH=. python bench/bench_memory.py [--turns 500] [--facts 20] [--window 2048]

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import time
from pathlib import Path
from typing import Any

from bench import measure
from llamabot.llm.base import ToolCall
from llamabot.memory.prompts import FACTS_INSTRUCTIONS, SUMMARY_INSTRUCTIONS
from llamabot.testing import BotHarness, ModelCall, ScriptedModel

THINGS = [
    ("dog's name", "Biscuit"),
    ("favourite colour", "saffron"),
    ("home town", "Tromsø"),
    ("sister's name", "Ingrid"),
    ("car", "a green Saab"),
    ("favourite food", "pierogi"),
    ("job", "lighthouse keeper"),
    ("birthday", "the ninth of March"),
    ("cat's name", "Pickle"),
    ("favourite band", "the Cranberries"),
    ("bike", "a red Bianchi"),
    ("street", "Quince Lane"),
    ("favourite book", "Moby-Dick"),
    ("boss's name", "Marguerite"),
    ("hobby", "bookbinding"),
    ("allergy", "hazelnuts"),
    ("lucky number", "seventeen"),
    ("favourite tea", "lapsang souchong"),
    ("middle name", "Aurelio"),
    ("first pet", "a tortoise called Dmitri"),
]
FILLER = (
    "the weather was fine and we walked along the river talking about plans for the "
    "weekend while the market opened and people carried baskets of apples bread cheese "
    "flowers towards the square where a band played old songs until the evening came"
)
WORDS = FILLER.split(" ")
FACT = re.compile(r"My ([^.]+?) is ([^.]+)\.")
VARIANTS = {
    "off": "summaries = false",
    "summaries": "summaries = true",
    "facts": "summaries = false\nfacts = true",
    "both": "summaries = true\nfacts = true",
}


def filler(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


class PromptOnlyModel:
    """Answers from its prompt only; an ideal summariser and note-taker (see above)."""

    def __init__(self) -> None:
        self.memory_calls = 0
        self.memory_tokens = 0
        self.recalled: list[bool] = []
        self.asking: str | None = None  # the value the current question is about

    def reply(self, call: ModelCall) -> str | list[ToolCall]:
        system = call.system
        if system in (SUMMARY_INSTRUCTIONS, FACTS_INSTRUCTIONS):
            self.memory_calls += 1
            shown = "\n".join(m.content for m in call.messages)
            self.memory_tokens += len(shown) // 4
            sentences = [m.group(0) for m in FACT.finditer(shown)]
            if system == FACTS_INSTRUCTIONS:
                answer = "\n".join(f"- {s}" for s in dict.fromkeys(sentences)) or "NONE"
            else:
                answer = " ".join(dict.fromkeys(sentences)) or "Small talk."
            self.memory_tokens += len(answer) // 4
            return answer
        last = call.messages[-1]
        if self.asking is not None and last.role == "user":
            prompt = "\n".join(m.content for m in call.messages)
            self.recalled.append(self.asking in prompt)
            return "Let me think."
        stated = FACT.search(last.content) if last.role == "user" else None
        if stated and call.tools:
            return [ToolCall("r1", "remember", {"fact": stated.group(0)})]
        return "I see. " + " ".join(WORDS[:20])


async def run(variant: str, turns: int, facts: int, window: int) -> dict[str, Any]:
    rng = random.Random(7)
    brain = PromptOnlyModel()
    config = f"""
[history]
max_messages = 1000
max_tokens = {window}
[personas.assistant]
prompt = "You are a helpful assistant."
[personas.assistant.memory]
{VARIANTS[variant]}
"""
    span = min(200, turns * 2 // 5)  # the facts go into the first 200 turns
    planted = {i * span // facts: THINGS[i % len(THINGS)] for i in range(facts)}
    latencies: list[float] = []
    model = ScriptedModel(reply=brain.reply, chunk=64)
    async with BotHarness(model=model, config=config, bundled=True) as harness:
        memory = harness.bot.memory
        assert memory is not None
        for turn in range(turns):
            if turn in planted:
                thing, value = planted[turn]
                text = f"My {thing} is {value}. " + filler(rng, 20)
            else:
                text = filler(rng, 45)
            started = time.perf_counter()
            await harness.say(text)
            latencies.append(time.perf_counter() - started)
            await memory.settled()  # the person takes a moment to type
        replies_before = len(model.calls) - brain.memory_calls
        for thing, value in planted.values():
            brain.asking = value
            await harness.say(f"What is my {thing}?")
    recalled = sum(brain.recalled)
    return {
        "variant": variant,
        "recalled": recalled,
        "asked": len(brain.recalled),
        "share": recalled / max(len(brain.recalled), 1),
        "memory_calls_per_turn": brain.memory_calls / turns,
        "memory_tokens_per_turn": brain.memory_tokens / turns,
        "reply_calls": replies_before,
        "latency_ms": measure.summary_ms(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--window", type=int, default=2048)
    args = parser.parse_args()
    runs = [asyncio.run(run(v, args.turns, args.facts, args.window)) for v in VARIANTS]
    print(
        f"Memory: {args.turns} turns, {args.facts} planted facts, a {args.window}-token "
        "window, scripted model answering from its prompt"
    )
    print(
        f"{'memory':<10} {'recalled':>9} {'share':>6} {'extra calls/turn':>17} "
        f"{'extra tokens/turn':>18} {'reply p50 ms':>13} {'p99 ms':>7}"
    )
    for r in runs:
        print(
            f"{r['variant']:<10} {r['recalled']:>4}/{r['asked']:<4} {r['share']:>6.0%} "
            f"{r['memory_calls_per_turn']:>17.2f} {r['memory_tokens_per_turn']:>18.0f} "
            f"{r['latency_ms']['p50']:>13.2f} {r['latency_ms']['p99']:>7.2f}"
        )
    report = {"machine": measure.machine(), "arguments": vars(args), "runs": runs}
    measure.save(report, Path(__file__).with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
