"""How a benchmark measures and reports.

Every script in bench/ states the machine it ran on (and how busy it was at the start and
at the end), summarises its samples with the same percentiles, and writes one JSON report
next to itself. The adapter benchmarks (Discord, Telegram) also share their two loads,
their child process per variant and the first columns of their table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from llamabot.adapters.base import Adapter
from llamabot.app import Bot
from llamabot.config import Config, parse_config
from llamabot.plugin_host import PluginHost
from llamabot.testing import ScriptedModel

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("raw", "llamabot")
LOADS = ("burst", "paced")
LOAD_TIMEOUT_S = 600.0  # for every message of a load to be answered

M = TypeVar("M")
T = TypeVar("T")

# -- the machine -------------------------------------------------------------------------


def machine(versions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the figures were measured on, when, and the load average as the run starts.

    ``versions`` adds the libraries the script measures against (``{"discord.py": ...}``).
    """
    return {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu": cpu_model(),
        "load_average_at_start": os.getloadavg(),
        **(versions or {}),
    }


def cpu_model() -> str:
    """The CPU's model name (Linux), or the architecture: figures differ by machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def headline(what: str, facts: Mapping[str, Any], *details: str) -> str:
    """A table's first line: ``what`` — the machine's cores, CPU and Python, then
    ``details``."""
    cores = f"{facts['cores']} cores" + (f" ({facts['cpu']})" if facts.get("cpu") else "")
    return ", ".join([f"{what} — {cores}", f"Python {facts['python']}", *details])


def save(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as JSON, its machine stamped with the load average at the end.

    The load at both ends shows whether a neighbour shared the cores during the run.
    """
    report["machine"]["load_average_at_end"] = os.getloadavg()
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# -- samples -----------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least ``fraction`` of them at or below it."""
    ordered = sorted(values)
    # The epsilon keeps 0.07 * 100 = 7.000000000000001 at rank 7.
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50/p95/p99, max and mean of samples given in seconds, as milliseconds."""
    return {
        "n": len(seconds),
        "p50": percentile(seconds, 0.50) * 1000,
        "p95": percentile(seconds, 0.95) * 1000,
        "p99": percentile(seconds, 0.99) * 1000,
        "max": max(seconds) * 1000,
        "mean": statistics.fmean(seconds) * 1000,
    }


def peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# -- child processes ---------------------------------------------------------------------


def run_child(script: str, label: str, arguments: Sequence[str]) -> dict[str, Any]:
    """Run ``script`` with ``arguments`` in a fresh interpreter; the JSON it printed last.

    One process per variant, so one's memory, imports and event loop never weigh on the
    next one's figures (peak RSS in particular is per process).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("NO_PROXY", "127.0.0.1,localhost")
    done = subprocess.run(
        [sys.executable, script, *arguments], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def answer_parent(result: Mapping[str, Any]) -> int:
    """In a child: hand ``result`` to :func:`run_child` in the parent."""
    print(json.dumps(result))
    return 0


# -- the adapter benchmarks' loads -------------------------------------------------------


# The burst loads send each person's messages all at once: flood control would skip most
# of them. These benches measure throughput; bench_flood.py measures flood control.
UNLIMITED = """
[limits]
messages_per_minute = 1e9
burst = 1000000
max_queued_per_person = 1000000
max_queued_per_conversation = 1000000
max_conversations_per_person = 1000000
"""

ChildRun = Callable[[str, str, int, int], Coroutine[Any, Any, dict[str, Any]]]


def load_main(
    script: str,
    doc: str,
    *,
    lane: str,
    defaults: tuple[int, int],
    library: tuple[str, str],
    note: str,
    child: ChildRun,
    print_table: Callable[[dict[str, Any]], None],
) -> int:
    """The command line of an adapter benchmark; the report goes next to ``script``.

    ``lane`` is what one conversation is on the platform ("channel", "chat"): it names the
    option for their number (``--channels``) and the report's fields. ``defaults`` are
    (lanes, messages per lane), ``library`` the (name, version) measured against, ``note``
    what the figures include, and ``child(variant, load, lanes, messages)`` measures one
    variant under one load in a process of its own (``--child VARIANT LOAD``).
    """
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(
        f"--{lane}s", type=int, default=defaults[0], dest="lanes", metavar=f"{lane.upper()}S"
    )
    parser.add_argument("--messages", type=int, default=defaults[1])
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of raw then llamabot per load; the table shows each one's median",
    )
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "LOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, load = args.child
        return answer_parent(asyncio.run(child(variant, load, args.lanes, args.messages)))
    name, version = library
    info = machine({name: version})
    options = [f"--{lane}s", str(args.lanes), "--messages", str(args.messages)]
    # Raw and llamabot alternate, round after round: a machine whose speed drifts (a
    # shared host) weighs on both alike, and each round gives a ratio of its own.
    runs = [
        {
            "round": number,
            **run_child(script, f"{variant}/{load}", ["--child", variant, load, *options]),
        }
        for number in range(1, max(args.rounds, 1) + 1)
        for load in LOADS
        for variant in VARIANTS
    ]
    report = {
        "machine": info,
        f"{lane}s": args.lanes,
        f"messages_per_{lane}": args.messages,
        "rounds": max(args.rounds, 1),
        "note": note,
        "runs": runs,
        "summary": summarise_rounds(runs),
    }
    print_table(report)
    save(report, Path(script).with_suffix(".json"))
    return 0


async def apply_load(
    load: str,
    lanes: int,
    count: int,
    send: Callable[[int, int], Awaitable[M]],
    answered: Callable[[M], Awaitable[None]],
    all_answered: Callable[[], Awaitable[None]],
) -> tuple[list[list[M]], float]:
    """Send ``count`` messages down each of ``lanes``; (each lane's messages, seconds).

    ``burst`` sends everything at once, round-robin over the lanes (throughput; latency
    then includes queueing behind earlier messages). ``paced`` has each lane wait for
    the answer to its message before sending the next (latency with ``lanes`` live
    conversations). ``send(lane, index)`` sends one message; the clock stops when
    ``all_answered()`` returns.
    """
    global _load_cpu_s
    sent: list[list[M]] = [[] for _ in range(lanes)]
    cpu_before = _cpu_s()
    started = time.monotonic()
    if load == "burst":
        for index in range(count):
            for lane in range(lanes):
                sent[lane].append(await send(lane, index))
    else:

        async def person(lane: int) -> None:
            for index in range(count):
                message = await send(lane, index)
                sent[lane].append(message)
                await answered(message)

        await asyncio.gather(*(person(lane) for lane in range(lanes)))
    await all_answered()
    seconds = time.monotonic() - started
    _load_cpu_s = _cpu_s() - cpu_before
    return sent, seconds


def _cpu_s() -> float:
    """CPU seconds this process used so far, every thread (the bot's database thread too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# CPU the last apply_load took (bot and fake server together: they share the process).
_load_cpu_s = 0.0


async def with_llamabot(
    folder: str,
    platform_toml: str,
    adapter_for: Callable[[Config], Adapter],
    load: Callable[[], Awaitable[T]],
) -> T:
    """The llamabot variant: ``load()`` against a real Bot answering at once.

    The bot keeps its history in a SQLite file in ``folder``; ``platform_toml`` is the
    adapter's section of bot.toml, and ``adapter_for`` builds the adapter from the config.
    """
    path = Path(folder) / "bot.toml"
    storage = f'[storage]\nurl = "sqlite+aiosqlite:///{folder}/bench.db"\n'
    config = parse_config(storage + platform_toml + UNLIMITED, path)
    async with Bot(
        config,
        config_path=path,
        model=ScriptedModel(chunk=10_000),
        adapters=[adapter_for(config)],
        plugins=PluginHost(),
    ) as bot:
        result = await load()
        await bot.wait_idle()
    return result


def load_figures(
    messages: int, seconds: float, latencies_s: Sequence[float], rss_before_mib: float
) -> dict[str, Any]:
    """What one variant under one load measured (the child's figures, minus its checks)."""
    return {
        "messages": messages,
        "seconds": seconds,
        "answered_per_s": messages / seconds,
        # Bot plus fake server; llamabot's minus raw's is what the bot costs per message.
        "cpu_ms_per_message": _load_cpu_s * 1000 / messages,
        "latency_ms": summary_ms(latencies_s),
        "peak_rss_mib": peak_rss_mib(),
        "rss_before_load_mib": rss_before_mib,
    }


def print_load_table(
    report: Mapping[str, Any],
    what: str,
    *,
    library: str,
    columns: str,
    cells: Callable[[Mapping[str, Any]], str],
    throughput: Callable[[float], str],
) -> None:
    """An adapter benchmark's table: a row per run, then llamabot's throughput per load.

    ``what`` opens the title, ``library`` is the machine's field with its version;
    ``columns`` heads the script's own cells (``cells(run)``) after the shared ones, and
    ``throughput(llamabot / raw)`` words the comparison.
    """
    m = report["machine"]
    print(headline(f"{what}, instant model", m, f"{library} {m[library]}"))
    rounds = report.get("rounds", 1)
    if rounds > 1:
        print(f"each row: the median of {rounds} rounds (by msg/s); raw and llamabot alternate")
    header = (
        f"{'load':<7}{'bot':<10}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'RSS MiB':>9}{columns}  checks"
    )
    print(header)
    print("-" * (len(header) + 30))
    for load in LOADS:
        for variant in VARIANTS:
            mine = [r for r in report["runs"] if r["load"] == load and r["variant"] == variant]
            if not mine:
                continue
            run = _median_run(mine)
            lat = run["latency_ms"]
            print(
                f"{load:<7}{variant:<10}{run['answered_per_s']:>8.0f}"
                f"{lat['p50']:>9.1f}{lat['p99']:>9.1f}{lat['max']:>9.1f}"
                f"{run['peak_rss_mib']:>9.0f}{cells(run)}"
            )
    for load, figures in report["summary"].items():
        ratios = ", ".join(f"{r:.2f}" for r in figures["ratios"])
        print(
            f"{load}: llamabot throughput is {throughput(figures['ratio'])} (median; rounds "
            f"{ratios}); the bot's CPU per message {figures['bot_cpu_ms']:.2f} ms (process "
            "CPU beyond the raw library's)"
        )


def _median_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    ordered = sorted(runs, key=lambda run: run["answered_per_s"])
    return ordered[(len(ordered) - 1) // 2]


def summarise_rounds(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per load: llamabot's throughput over raw's in each round, their median, and the
    median CPU the bot adds per message (process CPU beyond raw's, round by round)."""
    summary: dict[str, Any] = {}
    for load in LOADS:
        pairs = {}
        for run in runs:
            if run["load"] == load:
                pairs.setdefault(run.get("round", 1), {})[run["variant"]] = run
        whole = [p for p in pairs.values() if set(p) == set(VARIANTS)]
        if not whole:
            continue
        ratios = [p["llamabot"]["answered_per_s"] / p["raw"]["answered_per_s"] for p in whole]
        cpu = [p["llamabot"]["cpu_ms_per_message"] - p["raw"]["cpu_ms_per_message"] for p in whole]
        summary[load] = {
            "ratios": ratios,
            "ratio": statistics.median(ratios),
            "bot_cpu_ms_each_round": cpu,
            "bot_cpu_ms": statistics.median(cpu),
        }
    return summary
