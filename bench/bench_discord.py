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

import asyncio
import tempfile
from collections.abc import Mapping
from typing import Any

import discord
import yarl

from bench import measure
from llamabot.adapters.discord import DiscordAdapter
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeMessage, FakeUser


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
    total = len(channels) * count
    loop = asyncio.get_running_loop()
    replied: dict[str, asyncio.Future[None]] = {}
    everything: asyncio.Future[None] = loop.create_future()

    # Told of each reply: 50 people waiting on a condition re-checked after every
    # request cost the harness ~20 wake-ups a message, more the slower the bot.
    def on_reply(message: FakeMessage, _reply: FakeMessage) -> None:
        waiter = replied.get(message.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if len(fake.replies_to) >= total and not everything.done():
            everything.set_result(None)

    async def send(lane: int, index: int) -> FakeMessage:
        text = f"{fake.bot_user.mention} m{index}"
        message = await fake.send_message(channels[lane].id, text, author=users[lane])
        # Before this returns to the load: the reply cannot be in before its waiter.
        replied[message.id] = loop.create_future()
        return message

    async def answered(message: FakeMessage) -> None:
        if message.id not in fake.replies_to:
            async with asyncio.timeout(measure.LOAD_TIMEOUT_S):
                await replied[message.id]

    async def all_answered() -> None:
        if len(fake.replies_to) < total:
            async with asyncio.timeout(measure.LOAD_TIMEOUT_S):
                await everything

    fake.reply_listeners.append(on_reply)
    return await measure.apply_load(load, len(channels), count, send, answered, all_answered)


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
        rss_before = measure.peak_rss_mib()
        with tempfile.TemporaryDirectory() as folder:
            if variant == "raw":
                client, task = await start_raw(fake)
                try:
                    sent, seconds = await run_load(fake, load, channels, users, n_messages)
                finally:
                    await client.close()
                    await task
            else:
                platform_toml = f"""
[discord]
enabled = true
api_base = "{fake.api_base}"
gateway_url = "{fake.gateway_url}"
"""
                sent, seconds = await measure.with_llamabot(
                    folder,
                    platform_toml,
                    lambda config: DiscordAdapter(
                        config.discord, token=fake.token, guild_ready_timeout=0.05
                    ),
                    lambda: run_load(fake, load, channels, users, n_messages),
                )
        latencies = []
        for messages in sent:
            for message in messages:
                reply = fake.replies_to.get(message.id)
                if reply is not None and reply.posted_at and message.dispatched_at:
                    latencies.append(reply.posted_at - message.dispatched_at)
        posts = len(fake.requests_to("POST", r"/channels/\d+/messages"))
        typing = len(fake.requests_to("POST", r"/channels/\d+/typing"))
        patches = len(fake.requests_to("PATCH", r"/channels/\d+/messages/\d+"))
        return {
            "variant": variant,
            "load": load,
            "channels": n_channels,
            "messages_per_channel": n_messages,
            **measure.load_figures(n_channels * n_messages, seconds, latencies, rss_before),
            "requests": {"message_posts": posts, "typing_posts": typing, "edits": patches},
            "checks": check(fake, sent, ordered=variant == "llamabot"),
        }


def cells(run: Mapping[str, Any]) -> str:
    """Discord's own columns: the requests, and what the checks found."""
    c = run["checks"]
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
    req = run["requests"]
    return f"{req['message_posts']:>7}{req['typing_posts']:>7}  {verdict}"


def print_table(report: dict[str, Any]) -> None:
    what = (
        f"Discord adapter, {report['channels']} channels x "
        f"{report['messages_per_channel']} messages"
    )
    measure.print_load_table(
        report,
        what,
        library="discord.py",
        columns=f"{'POSTs':>7}{'typing':>7}",
        cells=cells,
        throughput=lambda ratio: f"1/{1 / ratio:.2f} of raw discord.py",
    )


if __name__ == "__main__":
    raise SystemExit(
        measure.load_main(
            __file__,
            __doc__,
            lane="channel",
            defaults=(50, 20),
            library=("discord.py", discord.__version__),
            note="bot and fake Discord share one process and event loop; RSS covers both",
            child=child,
            print_table=print_table,
        )
    )
