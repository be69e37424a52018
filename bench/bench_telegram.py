"""Telegram adapter under load: 200 private chats x 10 messages through the fake Bot API.

The real python-telegram-bot long-polls the fake Bot API (tests/fakes/telegram.py) over
loopback; the model answers at once. Two bots run the same load, each in its own process:

* ``raw``: a bare PTB Application whose handler sends the answer (the floor: PTB with its
  defaults plus the fake, nothing else);
* ``llamabot``: the real Bot with the TelegramAdapter — router lanes, SQLite history,
  typing indicator, Markdown to HTML, ReplyStream.

Two loads: ``burst`` enqueues all 2,000 updates at once (throughput; the latency includes
queueing behind earlier messages); ``paced`` has 200 people each waiting for the bot's
answer before sending the next (latency with 200 live conversations).

Measured: messages answered per second, time from the update leaving the fake in a
getUpdates answer to the reply's sendMessage arriving at it (p50/p99), peak RSS of the
process (bot + fake server). Checked: every message answered exactly once, with the right
text, and each chat's answers in the order its messages were sent.

    PYTHONPATH=. python bench/bench_telegram.py              # table + bench/bench_telegram.json
    PYTHONPATH=. python bench/bench_telegram.py --chats 20 --messages 5

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

import telegram
from telegram import ReplyParameters, Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from llamabot.adapters.telegram import TelegramAdapter
from llamabot.app import Bot
from llamabot.config import parse_config
from llamabot.plugin_host import PluginHost
from tests.fakes.model import ScriptedModel
from tests.fakes.telegram import Call, FakeTelegram, Message, user

HERE = Path(__file__).resolve().parent
VARIANTS = ("raw", "llamabot")
LOADS = ("burst", "paced")
TIMEOUT_S = 600.0
FIRST_CHAT = 10_000


def peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


async def raw_echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """What a hand-written PTB bot does: answer in the handler, nothing more."""
    message = update.message
    if message is None or message.text is None:
        return
    await context.bot.send_message(
        chat_id=message.chat_id,
        text=f"echo: {message.text}",
        reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
    )


async def start_raw(fake: FakeTelegram) -> Application[Any, Any, Any, Any, Any, Any]:
    app = ApplicationBuilder().token(fake.token).base_url(fake.base_url).job_queue(None).build()
    app.add_handler(MessageHandler(filters.TEXT, raw_echo))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=10)
    return app


async def stop_raw(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    assert app.updater is not None
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


async def run_load(
    fake: FakeTelegram, load: str, chats: list[int], count: int
) -> tuple[list[list[Message]], float]:
    """Send the load; return each chat's messages and the seconds until all answered."""
    sent: list[list[Message]] = [[] for _ in chats]
    total = len(chats) * count
    replied: dict[tuple[int, int], asyncio.Future[None]] = {}
    all_answered = asyncio.get_running_loop().create_future()
    answers = 0

    def on_call(call: Call) -> None:
        nonlocal answers
        if call.method != "sendMessage" or call.status != 200:
            return
        reply = (call.params.get("reply_parameters") or {}).get("message_id")
        if reply is None:
            return
        answers += 1
        waiter = replied.get((call.params["chat_id"], reply))
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if answers >= total and not all_answered.done():
            all_answered.set_result(None)

    fake.listeners.append(on_call)
    started = time.monotonic()
    if load == "burst":
        for index in range(count):
            for lane, chat in enumerate(chats):
                sent[lane].append(
                    fake.push_message(chat, f"m{index}", from_user=user(chat, f"User {chat}"))
                )
    else:

        async def person(lane: int) -> None:
            chat = chats[lane]
            for index in range(count):
                waiter = asyncio.get_running_loop().create_future()
                message = fake.push_message(chat, f"m{index}", from_user=user(chat, f"User {chat}"))
                replied[(chat, message.message_id)] = waiter
                sent[lane].append(message)
                await waiter

        await asyncio.gather(*(person(lane) for lane in range(len(chats))))
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await all_answered
    except TimeoutError:
        raise SystemExit(
            f"only {answers} of {total} messages answered in {TIMEOUT_S:.0f} s; "
            f"unconfirmed updates: {len(fake.pending_updates)}; "
            f"last calls: {[(c.method, c.status) for c in fake.calls[-5:]]}"
        ) from None
    return sent, time.monotonic() - started


def check(fake: FakeTelegram, sent: list[list[Message]]) -> dict[str, Any]:
    """Nothing lost, nothing doubled, right text, each chat's answers in order."""
    lost = wrong = out_of_order = duplicated = 0
    for messages in sent:
        chat = messages[0].chat_id
        replies = fake.bot_messages(chat)
        duplicated += max(0, len(replies) - len(messages))
        answered_ids = [r.reply_to for r in replies]
        for message in messages:
            mine = [r for r in replies if r.reply_to == message.message_id]
            if not mine:
                lost += 1
            elif mine[0].text != f"echo: {message.text}":
                wrong += 1
        if answered_ids != [m.message_id for m in messages]:
            out_of_order += 1
    return {
        "lost": lost,
        "duplicated": duplicated,
        "wrong_text": wrong,
        "chats_out_of_order": out_of_order,
        "updates_left_unconfirmed": len(fake.pending_updates),
    }


async def child(variant: str, load: str, n_chats: int, n_messages: int) -> dict[str, Any]:
    chats = [FIRST_CHAT + i for i in range(n_chats)]
    async with FakeTelegram() as fake:
        rss_before = peak_rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            if variant == "raw":
                app = await start_raw(fake)
                try:
                    sent, seconds = await run_load(fake, load, chats, n_messages)
                finally:
                    await stop_raw(app)
            else:
                config = parse_config(
                    f"""
[storage]
url = "sqlite+aiosqlite:///{folder}/bench.db"
[telegram]
enabled = true
base_url = "{fake.base_url}"
""",
                    Path(folder) / "bot.toml",
                )
                adapter = TelegramAdapter(config.telegram, token=fake.token)
                model = ScriptedModel(chunk=10_000)
                async with Bot(
                    config,
                    config_path=Path(folder) / "bot.toml",
                    model=model,
                    adapters=[adapter],
                    plugins=PluginHost(),
                ) as bot:
                    sent, seconds = await run_load(fake, load, chats, n_messages)
                    await bot.wait_idle()
        latencies = []
        for messages in sent:
            for message in messages:
                replies = fake.replies_to(message.chat_id, message.message_id)
                delivered = fake.delivered_at.get(message.update_id or -1)
                if replies and delivered is not None:
                    latencies.append((replies[0].sent_at - delivered) * 1000)
        total = n_chats * n_messages
        return {
            "variant": variant,
            "load": load,
            "chats": n_chats,
            "messages_per_chat": n_messages,
            "messages": total,
            "seconds": seconds,
            "answered_per_s": total / seconds,
            "latency_ms": {
                "p50": statistics.median(latencies),
                "p99": percentile(latencies, 0.99),
                "max": max(latencies),
            },
            "requests": {
                "getUpdates": len(fake.calls_of("getUpdates")),
                "sendMessage": len(fake.calls_of("sendMessage")),
                "sendChatAction": len(fake.calls_of("sendChatAction")),
                "editMessageText": len(fake.calls_of("editMessageText")),
            },
            "peak_rss_mib": peak_rss_mib(),
            "rss_before_load_mib": rss_before,
            "checks": check(fake, sent),
        }


def run_child(variant: str, load: str, chats: int, messages: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        variant,
        load,
        "--chats",
        str(chats),
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
        "python-telegram-bot": telegram.__version__,
    }


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"Telegram adapter, {report['chats']} private chats x {report['messages_per_chat']} "
        f"messages, instant model — {m['cores']} cores, Python {m['python']}, "
        f"python-telegram-bot {m['python-telegram-bot']}"
    )
    header = (
        f"{'load':<7}{'bot':<10}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'RSS MiB':>9}{'polls':>7}{'sends':>7}{'typing':>7}  checks"
    )
    print(header)
    print("-" * (len(header) + 30))
    for r in report["runs"]:
        c = r["checks"]
        problems = {k: v for k, v in c.items() if v}
        verdict = "ok" if not problems else ", ".join(f"{k} {v}" for k, v in problems.items())
        lat = r["latency_ms"]
        req = r["requests"]
        print(
            f"{r['load']:<7}{r['variant']:<10}{r['answered_per_s']:>8.0f}{lat['p50']:>9.1f}"
            f"{lat['p99']:>9.1f}{lat['max']:>9.1f}{r['peak_rss_mib']:>9.0f}"
            f"{req['getUpdates']:>7}{req['sendMessage']:>7}{req['sendChatAction']:>7}  {verdict}"
        )
    for load in LOADS:
        by = {r["variant"]: r for r in report["runs"] if r["load"] == load}
        if len(by) == 2:
            ratio = by["llamabot"]["answered_per_s"] / by["raw"]["answered_per_s"]
            print(f"{load}: llamabot throughput is {ratio:.2f}x raw python-telegram-bot")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "LOAD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        variant, load = args.child
        result = asyncio.run(child(variant, load, args.chats, args.messages))
        print(json.dumps(result))
        return 0
    runs = [
        run_child(variant, load, args.chats, args.messages)
        for load in LOADS
        for variant in VARIANTS
    ]
    report = {
        "machine": machine(),
        "chats": args.chats,
        "messages_per_chat": args.messages,
        "note": "bot and fake Bot API share one process and event loop; RSS covers both",
        "runs": runs,
    }
    print_table(report)
    (HERE / "bench_telegram.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
