"""[metrics] listen: Prometheus scrapes what the bot received, answered and waited for."""

from __future__ import annotations

import socket
import subprocess
import sys

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamabot.app import Bot
from llamabot.errors import StartupError
from llamabot.plugin_host import PluginHost
from llamabot.testing import FakePlatform, ScriptedModel
from tests.conftest import BASE_TOML, MakeConfig


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_conversation_moves_the_counters_and_histograms(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    port = free_port()
    config = make_config(
        BASE_TOML + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n[limits]\nburst = 2\n'
    )
    adapter = FakePlatform(platform="telegram")
    async with Bot(config, model=model, adapters=[adapter], plugins=PluginHost()):
        before = await scrape(port)
        for n in range(3):
            await adapter.say(f"hi {n}", chat="dm", user="ann")
        after = await scrape(port)
    telegram = (("platform", "telegram"),)
    assert before.get(("llamabot_messages_received_total", telegram), 0) == 0
    assert after[("llamabot_messages_received_total", telegram)] == 3
    assert after[("llamabot_replies_total", (*telegram, ("status", "ok")))] == 2
    assert after[("llamabot_messages_skipped_total", (*telegram, ("reason", "flood")))] == 1
    assert after[("llamabot_platform_requests_total", (("kind", "send"), *telegram))] >= 2
    backend = (("backend", "scripted"),)
    assert after[("llamabot_model_first_token_seconds_count", backend)] == 2
    assert after[("llamabot_model_reply_seconds_count", backend)] == 2
    assert after[("llamabot_queued_messages", ())] == 0


async def test_nothing_listens_unless_asked(make_config: MakeConfig, model: ScriptedModel) -> None:
    async with Bot(make_config(), model=model, adapters=[], plugins=PluginHost()) as bot:
        assert not bot.metrics.enabled


async def test_a_taken_port_is_one_clear_line(
    make_config: MakeConfig, model: ScriptedModel
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = make_config(BASE_TOML + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
        with pytest.raises(StartupError, match=r"\[metrics\] cannot listen on 127.0.0.1:\d+"):
            async with Bot(config, model=model, adapters=[], plugins=PluginHost()):
                pass


def test_a_bot_without_metrics_loads_no_http_server_code() -> None:
    # The terminal chat's start: aiohttp cost ~0.25 s of it on a 2-core VM.
    code = (
        "import sys, llamabot.app, llamabot.adapters.console, llamabot.llm.llamacpp; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
