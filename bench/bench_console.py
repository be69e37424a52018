"""``llamabot chat`` in a terminal: how fast Ctrl-C stops a reply and gives the prompt back.

Runs the real CLI in a pseudo-terminal (pexpect), talking to the loopback Ollama server
(``tests/fakes/ollama.py``) that streams a long reply at a fixed rate. Each round sends a
question, waits until a few words of the answer are on screen, presses Ctrl-C, and times

- Ctrl-C -> ``[interrupted]`` on screen (the reply stopped, its end marked),
- Ctrl-C -> the next prompt drawn,
- Ctrl-C -> the model server's stream closed (generation really stopped).

The screen is read every millisecond; figures below a millisecond are the read's grain.

    PYTHONPATH=. python bench/bench_console.py [--rounds 30] [--rate 50]

Prints one table and writes bench/bench_console.json. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pexpect

from bench import measure
from tests.fakes.ollama import FakeOllama

HERE = Path(__file__).resolve().parent
CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")
TOML = """
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[storage]
url = "sqlite+aiosqlite:///bench.db"
[plugins]
dirs = []
"""


class Screen:
    """What the terminal shows, control sequences removed, read as it arrives."""

    def __init__(self, child: pexpect.spawn) -> None:  # type: ignore[type-arg]
        self.child = child
        self.raw = ""
        self.seen = 0

    def wait_for(self, pattern: str, timeout: float = 60.0) -> float:
        """Block until ``pattern`` shows after the last match; when it showed."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern, re.S)
        while True:
            text = CONTROL.sub("", self.raw)
            found = compiled.search(text, self.seen)
            if found:
                self.seen = found.end()
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{pattern!r} never showed")
            with contextlib.suppress(pexpect.TIMEOUT):
                self.raw += self.child.read_nonblocking(65536, timeout=0.001)


async def stream_closed(ollama: FakeOllama) -> float:
    """When the model server saw its stream closed (the reply's generation stopped)."""
    await ollama.wait_for(lambda: not ollama.active_streams, 30)
    return time.monotonic()


async def run(rounds: int, rate: float) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"marked": [], "prompt": [], "stream_closed": []}
    async with FakeOllama() as ollama:
        ollama.tokens = ["word "] * 100_000
        ollama.rate = rate
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "bot.toml"
            config.write_text(TOML.format(url=ollama.url))
            env = {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
            child = pexpect.spawn(
                sys.executable,
                ["-m", "llamabot.cli", "chat", "--config", str(config)],
                env=env,
                encoding="utf-8",
                dimensions=(40, 200),
            )
            screen = Screen(child)
            await asyncio.to_thread(screen.wait_for, "you:")
            for number in range(rounds):
                child.send(f"question {number}\r")
                await asyncio.to_thread(screen.wait_for, r"Llama: (word ){3}")
                pressed = time.monotonic()
                child.sendintr()
                closed = asyncio.create_task(stream_closed(ollama))
                marked = await asyncio.to_thread(screen.wait_for, r"\[interrupted\]")
                prompt = await asyncio.to_thread(screen.wait_for, "you:")
                samples["stream_closed"].append(await closed - pressed)
                samples["marked"].append(marked - pressed)
                samples["prompt"].append(prompt - pressed)
            child.sendeof()
            await asyncio.to_thread(child.expect, pexpect.EOF)
            child.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--rate", type=float, default=50.0, help="model tokens per second")
    args = parser.parse_args()
    facts = measure.machine({"pexpect": pexpect.__version__})
    samples = asyncio.run(run(args.rounds, args.rate))
    report: dict[str, Any] = {
        "machine": facts,
        "rounds": args.rounds,
        "rate_tokens_per_s": args.rate,
        "ms": {name: measure.summary_ms(values) for name, values in samples.items()},
    }
    print(measure.headline("llamabot chat, Ctrl-C during a reply", facts, f"{args.rounds} rounds"))
    print(f"{'Ctrl-C ->':<28}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    labels = {
        "marked": "[interrupted] on screen",
        "prompt": "prompt drawn again",
        "stream_closed": "model stream closed",
    }
    for name, label in labels.items():
        figures = report["ms"][name]
        print(f"{label:<28}{figures['p50']:>9.1f}{figures['p95']:>9.1f}{figures['max']:>9.1f}")
    measure.save(report, HERE / "bench_console.json")


if __name__ == "__main__":
    main()
