"""One person floods a Telegram group: how long do the others wait for their answer?

The real Bot with the TelegramAdapter (real python-telegram-bot) long-polls the fake Bot
API (tests/fakes/telegram.py) over loopback; the model answers at once but streams its
reply in small pieces, as a model does, so the edit interval (1 s) is part of what is
measured. While one flooder sends 200 messages in 2 s into a group where the bot answers
every message, 5 other people send one message each into the same group and 5 more into
other chats (private chats and a second group), spread over the same 2 s.

Measured: for the other people, the time from their update leaving the fake (in a
getUpdates answer) to the first sendMessage answering it — p50/p99/max, in the flooded
group and elsewhere; how many model calls and notices the flooder got; the run's length.
Target (issue 12): the others' p99 ≤ 2 s, the flooder's model calls bounded.

    PYTHONPATH=. python bench/bench_flood.py                 # table + bench/bench_flood.json
    PYTHONPATH=. python bench/bench_flood.py --flood 500 --seconds 2 --normal 5
    PYTHONPATH=. python bench/bench_flood.py --extra-toml limits.toml   # other [limits]

Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import telegram

from bench import measure
from llamabot.adapters.telegram import TelegramAdapter
from llamabot.app import Bot
from llamabot.config import parse_config
from llamabot.plugin_host import PluginHost
from llamabot.testing import ScriptedModel
from tests.fakes.telegram import Call, FakeTelegram, Message, user

GROUP = -100_100
OTHER_GROUP = -100_200
FLOODER = 666
FIRST_NORMAL = 10_000

TOML = """
[storage]
url = "sqlite+aiosqlite:///{folder}/flood.db"

[telegram]
enabled = true
base_url = "{base_url}"

[[bindings]]
platform = "telegram"
channel = "{group}"
persona = "assistant"
respond = "always"

[[bindings]]
platform = "telegram"
channel = "{other_group}"
persona = "assistant"
respond = "always"
"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = Path(args.extra_toml).read_text(encoding="utf-8") if args.extra_toml else ""
    model = ScriptedModel(chunk=args.chunk)
    answered: dict[tuple[int, int], float] = {}
    waiting: dict[tuple[int, int], asyncio.Future[None]] = {}

    def on_call(call: Call) -> None:
        if call.method != "sendMessage" or call.status != 200:
            return
        reply = (call.params.get("reply_parameters") or {}).get("message_id")
        if reply is None:
            return
        key = (int(call.params["chat_id"]), int(reply))
        answered.setdefault(key, time.monotonic())
        waiter = waiting.get(key)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async with FakeTelegram() as fake:
        fake.listeners.append(on_call)
        with tempfile.TemporaryDirectory() as folder:
            text = TOML.format(
                folder=folder, base_url=fake.base_url, group=GROUP, other_group=OTHER_GROUP
            )
            config = parse_config(text + extra, Path(folder) / "bot.toml")
            adapter = TelegramAdapter(config.telegram, token=fake.token)
            async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()) as bot:
                started = time.monotonic()
                flood_ids: set[int] = set()
                normal = await send_load(fake, args, waiting, flood_ids)
                unanswered = await wait_for(waiting, args.timeout)
                try:
                    async with asyncio.timeout(args.timeout):
                        await bot.wait_idle()
                except TimeoutError:
                    pass
                seconds = time.monotonic() - started
            return figures(fake, model, normal, flood_ids, answered, unanswered, seconds)


async def send_load(
    fake: FakeTelegram,
    args: argparse.Namespace,
    waiting: dict[tuple[int, int], asyncio.Future[None]],
    flood_ids: set[int],
) -> list[tuple[str, Message]]:
    """The flood and the others' messages, interleaved in time; the others', labelled."""
    loop = asyncio.get_running_loop()
    flooder = user(FLOODER, "Flooder")
    spread = args.seconds / args.flood
    # The others speak evenly over the flood, the first just after it begins.
    due = [index * args.seconds / args.normal + spread for index in range(args.normal)]
    normal: list[tuple[str, Message]] = []
    start = loop.time()
    for n in range(args.flood):
        while due and due[0] <= n * spread:
            due.pop(0)
            index = args.normal - len(due) - 1
            person = user(FIRST_NORMAL + index, f"Person {index}")
            stranger = user(FIRST_NORMAL + 500 + index, f"Elsewhere {index}")
            elsewhere = (
                fake.push_message(FIRST_NORMAL + 500 + index, f"hello {index}", from_user=stranger)
                if index % 2 == 0
                else fake.push_message(
                    OTHER_GROUP, f"hello {index}", from_user=stranger, chat_type="group"
                )
            )
            here = fake.push_message(GROUP, f"hello {index}", from_user=person, chat_type="group")
            for where, message in (("flooded group", here), ("other chats", elsewhere)):
                waiting[(message.chat_id, message.message_id)] = loop.create_future()
                normal.append((where, message))
        message = fake.push_message(GROUP, f"flood {n}", from_user=flooder, chat_type="group")
        flood_ids.add(message.message_id)
        delay = start + (n + 1) * spread - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return normal


async def wait_for(waiting: dict[tuple[int, int], asyncio.Future[None]], limit_s: float) -> int:
    """Wait for every other person's answer; how many never came within ``limit_s``."""
    _, pending = await asyncio.wait(waiting.values(), timeout=limit_s)
    return len(pending)


def figures(
    fake: FakeTelegram,
    model: ScriptedModel,
    normal: list[tuple[str, Message]],
    flood_ids: set[int],
    answered: dict[tuple[int, int], float],
    unanswered: int,
    seconds: float,
) -> dict[str, Any]:
    latency: dict[str, list[float]] = {"flooded group": [], "other chats": []}
    for where, message in normal:
        delivered = fake.delivered_at.get(message.update_id or -1)
        at = answered.get((message.chat_id, message.message_id))
        if delivered is not None and at is not None:
            latency[where].append(at - delivered)
    flooder_replies = [m for m in fake.bot_messages(GROUP) if m.reply_to in flood_ids]
    return {
        "latency_ms": {k: measure.summary_ms(v) for k, v in latency.items() if v},
        "unanswered": unanswered,
        "flooder_model_calls": sum(1 for c in model.calls if "flood " in c.last_user),
        "flooder_notices": sum(1 for m in flooder_replies if not m.text.startswith("echo:")),
        "model_calls": len(model.calls),
        "seconds": seconds,
        "requests": {
            method: len(fake.calls_of(method))
            for method in ("sendMessage", "editMessageText", "sendChatAction")
        },
    }


def print_table(report: dict[str, Any]) -> None:
    setup = report["setup"]
    print(
        measure.headline(
            f"Flood: {setup['flood']} messages in {setup['seconds']:g} s from one person, "
            f"{setup['normal']} others in the group and {setup['normal']} elsewhere",
            report["machine"],
        )
    )
    print(f"{'others answered':<24}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for where, row in report["latency_ms"].items():
        print(f"{where:<24}{row['n']:>5}{row['p50']:>9.0f}{row['p99']:>9.0f}{row['max']:>9.0f}")
    print(
        f"unanswered {report['unanswered']}; flooder: {report['flooder_model_calls']} model "
        f"calls, {report['flooder_notices']} notices; {report['model_calls']} model calls in "
        f"all; {report['seconds']:.1f} s; requests {report['requests']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=200, help="the flooder's messages")
    parser.add_argument("--seconds", type=float, default=2.0, help="over this long")
    parser.add_argument("--normal", type=int, default=5, help="others, in each place")
    parser.add_argument("--chunk", type=int, default=8, help="characters per model delta")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up waiting after")
    parser.add_argument("--extra-toml", default="", help="a file appended to bot.toml")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    report["setup"] = {
        "flood": args.flood,
        "seconds": args.seconds,
        "normal": args.normal,
        "chunk": args.chunk,
        "extra_toml": Path(args.extra_toml).read_text() if args.extra_toml else "",
    }
    report["machine"] = measure.machine({"python-telegram-bot": telegram.__version__})
    print_table(report)
    measure.save(report, Path(__file__).with_suffix(".json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
