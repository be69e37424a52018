"""Discord adapter under load: 50 server channels x 20 messages through the fake gateway.

The real discord.py talks to the fake Discord (tests/fakes/discord.py) over loopback;
the model answers at once. Two bots run the same load, each in its own process:

* ``raw``: a bare discord.Client whose on_message posts the answer (the floor: discord.py
  plus the fake, nothing else);
* ``llamabot``: the real Bot with the DiscordAdapter — router lanes, SQLite history,
  typing indicator, ReplyStream.

Two loads: ``burst`` pushes all 1,000 MESSAGE_CREATE events at once (throughput; the
latency includes queueing behind earlier messages); ``paced`` has 50 people each waiting
for the bot's answer before sending the next (latency with 50 live conversations).

Measured: messages answered per second, time from MESSAGE_CREATE leaving the fake to
the reply's POST arriving at it (p50/p99), peak RSS of the process (bot + fake server).
Checked: every message answered exactly once, with the right text, and each channel's
answers in the order its messages were sent.

    PYTHONPATH=. python bench/bench_discord.py              # table + bench/bench_discord.json
    PYTHONPATH=. python bench/bench_discord.py --channels 10 --messages 5

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import discord
import yarl

from llamabot.adapters.discord import DiscordAdapter
from llamabot.app import Bot
from llamabot.config import parse_config
from llamabot.plugin_host import PluginHost
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeMessage, FakeUser
from tests.fakes.model import ScriptedModel

HERE = Path(__file__).resolve().parent
VARIANTS = ("raw", "llamabot")
LOADS = ("burst", "paced")
TIMEOUT_S = 600.0


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


class RawBot(discord.Client):
    """What a hand-written discord.py bot does: answer in on_message, nothing more."""

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        assert self.user is not None
        text = message.content.replace(self.user.mention, "").strip()
        await message.channel.send(
            f"echo: {message.author.display_name}: {text}",
            reference=message,
            allowed_mentions=discord.AllowedMentions.none(),
            mention_author=False,
        )


async def start_raw(fake: FakeDiscord) -> tuple[RawBot, asyncio.Task[None]]:
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.message_content = True
    client = RawBot(intents=intents, guild_ready_timeout=0.05, max_messages=None)
    await client.login(fake.token)
    task = asyncio.create_task(client.connect())
    await fake.wait_for(lambda: fake.identifies == 1 and fake.connected, 30)
    return client, task


async def run_load(
    fake: FakeDiscord, load: str, channels: list[FakeChannel], users: list[FakeUser], count: int
) -> tuple[list[list[FakeMessage]], float]:
    """Send the load; return each channel's messages and the seconds until all answered."""
    sent: list[list[FakeMessage]] = [[] for _ in channels]
    total = len(channels) * count
    started = time.monotonic()
    if load == "burst":
        for index in range(count):
            for lane, (channel, user) in enumerate(zip(channels, users, strict=True)):
                text = f"{fake.bot_user.mention} m{index}"
                sent[lane].append(await fake.send_message(channel.id, text, author=user))
    else:

        async def person(lane: int) -> None:
            channel, user = channels[lane], users[lane]
            for index in range(count):
                text = f"{fake.bot_user.mention} m{index}"
                message = await fake.send_message(channel.id, text, author=user)
                sent[lane].append(message)
                await fake.wait_for(lambda m=message: m.id in fake.replies_to, TIMEOUT_S)

        await asyncio.gather(*(person(lane) for lane in range(len(channels))))
    await fake.wait_for(lambda: len(fake.replies_to) >= total, TIMEOUT_S)
    return sent, time.monotonic() - started


def check(fake: FakeDiscord, sent: list[list[FakeMessage]], ordered: bool) -> dict[str, Any]:
    """Nothing lost, nothing doubled, right text, each channel's answers in order."""
    lost = wrong = out_of_order = 0
    for messages in sent:
        channel_id = messages[0].channel_id
        replies = fake.bot_messages(channel_id)
        answered = [r.reference_id for r in replies]
        lost += sum(1 for m in messages if m.id not in fake.replies_to)
        for message in messages:
            reply = fake.replies_to.get(message.id)
            text = message.content.replace(fake.bot_user.mention, "").strip()
            if (
                reply is not None
                and reply.content != f"echo: {message.author.display_name}: {text}"
            ):
                wrong += 1
        if answered != [m.id for m in messages]:
            out_of_order += 1
    duplicates = sum(len(fake.bot_messages(m[0].channel_id)) - len(m) for m in sent)
    return {
        "lost": lost,
        "duplicated": duplicates,
        "wrong_text": wrong,
        "channels_out_of_order": out_of_order,
        "order_checked": ordered,
    }


async def child(variant: str, load: str, n_channels: int, n_messages: int) -> dict[str, Any]:
    async with FakeDiscord() as fake:
        guild = await fake.add_guild("Bench")
        channels = [await fake.add_channel(guild, f"c{i}") for i in range(n_channels)]
        users = [fake.add_user(f"user{i}", global_name=f"User {i}") for i in range(n_channels)]
        rss_before = peak_rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            if variant == "raw":
                client, task = await start_raw(fake)
                try:
                    sent, seconds = await run_load(fake, load, channels, users, n_messages)
                finally:
                    await client.close()
                    await task
            else:
                config = parse_config(
                    f"""
[storage]
url = "sqlite+aiosqlite:///{folder}/bench.db"
[discord]
enabled = true
api_base = "{fake.api_base}"
gateway_url = "{fake.gateway_url}"
""",
                    Path(folder) / "bot.toml",
                )
                adapter = DiscordAdapter(config.discord, token=fake.token, guild_ready_timeout=0.05)
                model = ScriptedModel(chunk=10_000)
                async with Bot(
                    config,
                    config_path=Path(folder) / "bot.toml",
                    model=model,
                    adapters=[adapter],
                    plugins=PluginHost(),
                ) as bot:
                    sent, seconds = await run_load(fake, load, channels, users, n_messages)
                    await bot.wait_idle()
        latencies = []
        for messages in sent:
            for message in messages:
                reply = fake.replies_to.get(message.id)
                if reply is not None and reply.posted_at and message.dispatched_at:
                    latencies.append((reply.posted_at - message.dispatched_at) * 1000)
        total = n_channels * n_messages
        posts = len(fake.requests_to("POST", r"/channels/\d+/messages"))
        typing = len(fake.requests_to("POST", r"/channels/\d+/typing"))
        patches = len(fake.requests_to("PATCH", r"/channels/\d+/messages/\d+"))
        return {
            "variant": variant,
            "load": load,
            "channels": n_channels,
            "messages_per_channel": n_messages,
            "messages": total,
            "seconds": seconds,
            "answered_per_s": total / seconds,
            "latency_ms": {
                "p50": statistics.median(latencies),
                "p99": percentile(latencies, 0.99),
                "max": max(latencies),
            },
            "requests": {"message_posts": posts, "typing_posts": typing, "edits": patches},
            "peak_rss_mib": peak_rss_mib(),
            "rss_before_load_mib": rss_before,
            "checks": check(fake, sent, ordered=variant == "llamabot"),
        }


def run_child(variant: str, load: str, channels: int, messages: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        load,
        "--channels",
        str(channels),
        "--messages",
        str(messages),
    ]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    env.setdefault("NO_PROXY", "127.0.0.1,localhost")
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant}/{load} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "discord.py": discord.__version__,
    }


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"Discord adapter, {report['channels']} channels x {report['messages_per_channel']} "
        f"messages, instant model — {m['cores']} cores, Python {m['python']}, "
        f"discord.py {m['discord.py']}"
    )
    header = (
        f"{'load':<7}{'bot':<10}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'RSS MiB':>9}{'POSTs':>7}{'typing':>7}  checks"
    )
    print(header)
    print("-" * (len(header) + 30))
    for r in report["runs"]:
        c = r["checks"]
        verdict = (
            "ok"
            if not (c["lost"] or c["duplicated"] or c["wrong_text"])
            and (not c["order_checked"] or not c["channels_out_of_order"])
            else (
                f"lost {c['lost']}, dup {c['duplicated']}, wrong {c['wrong_text']}, "
                f"out of order {c['channels_out_of_order']}"
            )
        )
        if not c["order_checked"]:
            verdict += f" (order not promised; {c['channels_out_of_order']} channels reordered)"
        lat = r["latency_ms"]
        print(
            f"{r['load']:<7}{r['variant']:<10}{r['answered_per_s']:>8.0f}{lat['p50']:>9.1f}"
            f"{lat['p99']:>9.1f}{lat['max']:>9.1f}{r['peak_rss_mib']:>9.0f}"
            f"{r['requests']['message_posts']:>7}{r['requests']['typing_posts']:>7}  {verdict}"
        )
    for load in LOADS:
        by = {r["variant"]: r for r in report["runs"] if r["load"] == load}
        if len(by) == 2:
            ratio = by["raw"]["answered_per_s"] / by["llamabot"]["answered_per_s"]
            print(f"{load}: llamabot throughput is 1/{ratio:.2f} of raw discord.py")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "LOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, load = args.child
        result = asyncio.run(child(variant, load, args.channels, args.messages))
        print(json.dumps(result))
        return 0
    runs = [
        run_child(variant, load, args.channels, args.messages)
        for load in LOADS
        for variant in VARIANTS
    ]
    report = {
        "machine": machine(),
        "channels": args.channels,
        "messages_per_channel": args.messages,
        "note": "bot and fake Discord share one process and event loop; RSS covers both",
        "runs": runs,
    }
    print_table(report)
    (HERE / "bench_discord.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
