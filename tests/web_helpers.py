"""A running bot (fake platform, fake Ollama) with its admin page on a free port, for the
admin page's HTTP and browser tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from llamabot.app import Bot
from llamabot.config import load_config
from llamabot.plugin_loader import load_plugins
from llamabot.testing import FakePlatform
from llamabot.web.logs import LogTail
from llamabot.web.server import AdminPage, AdminParts
from tests.fakes.ollama import FakeOllama

TOKEN = "discord-token-SECRET-4711"


def bot_toml(ollama: str, tmp_path: Path, web: str = "", storage: str | None = None) -> str:
    url = storage or f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    return f"""# the admin's own comment, kept across edits
[bot]
admins = ["console:root"]
[llm]
backend = "ollama"
[llm.ollama]
host = "{ollama}"
[storage]
url = "{url}"
[discord]
token_env = "WEB_TEST_DISCORD_TOKEN"
[personas.assistant]
prompt = "FIRST-PROMPT"   # a comment on the prompt
[personas.pirate]
prompt = "You talk like a pirate."
[[bindings]]
platform = "console"
channel = "*"
persona = "assistant"
respond = "always"
[plugins]
dirs = []
[web]
listen = "127.0.0.1:0"
{web}
"""


@dataclass
class Site:
    bot: Bot
    page: AdminPage
    adapter: FakePlatform
    ollama: FakeOllama
    path: Path
    link: str

    @property
    def url(self) -> str:
        return self.page.url


@contextlib.asynccontextmanager
async def running_site(
    tmp_path: Path, web: str = "", storage: str | None = None
) -> AsyncIterator[Site]:
    async with FakeOllama() as ollama:
        path = tmp_path / "bot.toml"
        path.write_text(bot_toml(ollama.url, tmp_path, web, storage), encoding="utf-8")
        config = load_config(path)
        adapter = FakePlatform()
        bot = Bot(
            config, config_path=path, adapters=[adapter], plugins=load_plugins(config, tmp_path)
        )
        async with bot:
            page = AdminPage(AdminParts.of(bot, LogTail()), config.web)
            link = await page.start()
            try:
                yield Site(bot, page, adapter, ollama, path, link)
            finally:
                await page.stop()
