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

import asyncio
import tempfile
from collections.abc import Mapping
from typing import Any

import telegram
from telegram import ReplyParameters, Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, MessageHandler, filters

from bench import measure
from llamabot.adapters.telegram import TelegramAdapter
from tests.fakes.telegram import Call, FakeTelegram, Message, user

FIRST_CHAT = 10_000


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
    total = len(chats) * count
    replied: dict[tuple[int, int], asyncio.Future[None]] = {}
    everything = asyncio.get_running_loop().create_future()
    answers = 0

    # Told of every request the fake answers: cheaper than re-checking a condition per
    # request with 200 people waiting.
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
        if answers >= total and not everything.done():
            everything.set_result(None)

    async def send(lane: int, index: int) -> Message:
        chat = chats[lane]
        return fake.push_message(chat, f"m{index}", from_user=user(chat, f"User {chat}"))

    async def answered(message: Message) -> None:
        # Registered before this coroutine first suspends: the bot cannot have answered
        # yet, since push_message only queues the update.
        waiter = asyncio.get_running_loop().create_future()
        replied[(message.chat_id, message.message_id)] = waiter
        await waiter

    async def all_answered() -> None:
        try:
            async with asyncio.timeout(measure.LOAD_TIMEOUT_S):
                await everything
        except TimeoutError:
            raise SystemExit(
                f"only {answers} of {total} messages answered in {measure.LOAD_TIMEOUT_S:.0f} s; "
                f"unconfirmed updates: {len(fake.pending_updates)}; "
                f"last calls: {[(c.method, c.status) for c in fake.calls[-5:]]}"
            ) from None

    fake.listeners.append(on_call)
    return await measure.apply_load(load, len(chats), count, send, answered, all_answered)


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
        rss_before = measure.peak_rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            if variant == "raw":
                app = await start_raw(fake)
                try:
                    sent, seconds = await run_load(fake, load, chats, n_messages)
                finally:
                    await stop_raw(app)
            else:
                platform_toml = f"""
[telegram]
enabled = true
base_url = "{fake.base_url}"
max_messages_per_s = 0  # the fake has no limit; this measures llamabot's own overhead
"""
                sent, seconds = await measure.with_llamabot(
                    folder,
                    platform_toml,
                    lambda config: TelegramAdapter(config.telegram, token=fake.token),
                    lambda: run_load(fake, load, chats, n_messages),
                )
        latencies = []
        for messages in sent:
            for message in messages:
                replies = fake.replies_to(message.chat_id, message.message_id)
                delivered = fake.delivered_at.get(message.update_id or -1)
                if replies and delivered is not None:
                    latencies.append(replies[0].sent_at - delivered)
        return {
            "variant": variant,
            "load": load,
            "chats": n_chats,
            "messages_per_chat": n_messages,
            **measure.load_figures(n_chats * n_messages, seconds, latencies, rss_before),
            "requests": {
                "getUpdates": len(fake.calls_of("getUpdates")),
                "sendMessage": len(fake.calls_of("sendMessage")),
                "sendChatAction": len(fake.calls_of("sendChatAction")),
                "editMessageText": len(fake.calls_of("editMessageText")),
            },
            "checks": check(fake, sent),
        }


def cells(run: Mapping[str, Any]) -> str:
    """Telegram's own columns: the requests, and what the checks found."""
    problems = {k: v for k, v in run["checks"].items() if v}
    verdict = "ok" if not problems else ", ".join(f"{k} {v}" for k, v in problems.items())
    req = run["requests"]
    return f"{req['getUpdates']:>7}{req['sendMessage']:>7}{req['sendChatAction']:>7}  {verdict}"


def print_table(report: dict[str, Any]) -> None:
    what = (
        f"Telegram adapter, {report['chats']} private chats x "
        f"{report['messages_per_chat']} messages"
    )
    measure.print_load_table(
        report,
        what,
        library="python-telegram-bot",
        columns=f"{'polls':>7}{'sends':>7}{'typing':>7}",
        cells=cells,
        throughput=lambda ratio: f"{ratio:.2f}x raw python-telegram-bot",
    )


if __name__ == "__main__":
    raise SystemExit(
        measure.load_main(
            __file__,
            __doc__,
            lane="chat",
            defaults=(200, 10),
            library=("python-telegram-bot", telegram.__version__),
            note="bot and fake Bot API share one process and event loop; RSS covers both",
            child=child,
            print_table=print_table,
        )
    )
