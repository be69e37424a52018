"""Pictures people send: prepared for a vision model, refused clearly otherwise — through
the real Telegram and Discord adapters, the real Ollama client and the fake servers."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from llamabot.adapters import telegram as telegram_adapter
from llamabot.adapters.discord import DiscordAdapter
from llamabot.adapters.telegram import TelegramAdapter
from llamabot.app import Bot
from llamabot.images import ImageRejected, prepare
from llamabot.plugin_host import PluginHost
from llamabot.plugin_loader import load_plugins
from tests.conftest import MakeConfig, World
from tests.fakes.ollama import FakeModel, FakeOllama
from tests.fakes.telegram import FakeTelegram, user

ALICE = user(1001, "Alice")
VISION = FakeModel("llava", capabilities=("completion", "vision"))
TEXT_ONLY = FakeModel("llama3.2", capabilities=("completion", "tools"))


def picture(width: int = 64, height: int = 48, kind: str = "PNG", mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red").save(out, format=kind)
    return out.getvalue()


def llm(url: str, model: str, extra: str = "") -> str:
    return f"""
[llm]
backend = "ollama"
[llm.ollama]
host = "{url}"
[personas.assistant]
prompt = "Describe what you see."
model = "{model}"
{extra}
"""


def stored_images(db: Path) -> list[str | None]:
    with sqlite3.connect(db) as conn:
        return [row[0] for row in conn.execute("SELECT images FROM messages WHERE role = 'user'")]


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    async with FakeOllama([VISION, TEXT_ONLY]) as server:
        server.reply = "A red square."
        yield server


@pytest.fixture(autouse=True)
def short_conflict_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telegram_adapter, "CONFLICT_PROBE_S", 0)


# -- preparing a picture ----------------------------------------------------------------


def test_a_big_picture_is_shrunk_to_fit_and_reencoded() -> None:
    ready = prepare(picture(3000, 2000), 1120)
    with Image.open(io.BytesIO(ready.data)) as image:
        assert image.size == (1120, 747)
        assert image.format == "JPEG"


def test_transparency_is_kept_and_an_animation_gives_its_first_frame() -> None:
    assert prepare(picture(40, 40, mode="RGBA"), 1120).mime == "image/png"
    frames = [Image.new("RGB", (30, 30), color) for color in ("blue", "green")]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(prepare(out.getvalue(), 1120).data)) as image:
        assert image.convert("RGB").getpixel((5, 5))[2] > 200  # blue: the first frame


def test_what_is_not_a_picture_is_refused_with_a_line() -> None:
    with pytest.raises(ImageRejected, match="cannot read that file as an image"):
        prepare(b"GIF89a this is not really a picture", 1120)


# -- Telegram -----------------------------------------------------------------------------


def telegram_toml(fake: FakeTelegram, ollama: FakeOllama, model: str, extra: str = "") -> str:
    return (
        llm(ollama.url, model, extra)
        + f'[telegram]\nenabled = true\nbase_url = "{fake.base_url}"\n'
    )


async def test_a_telegram_photo_is_seen_by_a_vision_model(
    make_config: MakeConfig, ollama: FakeOllama, tmp_path: Path
) -> None:
    photo = picture(2000, 1000)
    async with FakeTelegram(username="llama_bot") as fake:
        config = make_config(telegram_toml(fake, ollama, "llava"))
        adapter = TelegramAdapter(config.telegram, token=fake.token)
        async with Bot(config, adapters=[adapter], plugins=PluginHost()) as bot:
            sent = fake.push_message(1001, "what is this?", from_user=ALICE, photo=photo)
            await fake.wait_for(lambda: bool(fake.replies_to(1001, sent.message_id)))
            await bot.wait_idle()
            fake.push_message(1001, "and now?", from_user=ALICE)
            await fake.wait_for(lambda: len(ollama.chat_requests) == 2)
        [reply] = fake.replies_to(1001, sent.message_id)
        assert reply.text == "A red square."
        assert fake.downloads == ["photos/file_2.jpg"]  # the largest size of the photo
    first = ollama.chat_requests[0]["messages"][-1]
    assert first["content"] == "what is this? [sent a picture]"
    [seen] = ollama.images
    with Image.open(io.BytesIO(seen)) as image:
        assert max(image.size) == 1120  # shrunk before it was sent
    later = ollama.chat_requests[1]["messages"]
    assert not any(m.get("images") for m in later)  # older pictures: a note only
    [refs] = [json.loads(r) for r in stored_images(tmp_path / "bot.db") if r]
    assert refs[0]["source"].startswith("AgAC-file-") and len(refs[0]["sha256"]) == 64


async def test_a_text_model_refuses_pictures_in_one_line_and_stores_nothing(
    make_config: MakeConfig, ollama: FakeOllama, tmp_path: Path
) -> None:
    async with FakeTelegram(username="llama_bot") as fake:
        config = make_config(telegram_toml(fake, ollama, "llama3.2"))
        adapter = TelegramAdapter(config.telegram, token=fake.token)
        async with Bot(config, adapters=[adapter], plugins=PluginHost()):
            sent = fake.push_message(1001, "", from_user=ALICE, photo=picture())
            await fake.wait_for(lambda: bool(fake.replies_to(1001, sent.message_id)))
        [reply] = fake.replies_to(1001, sent.message_id)
    assert reply.text == (
        "This persona's model (llama3.2) cannot see images; an admin can give it a vision "
        "model such as llama3.2-vision."
    )
    assert ollama.chat_requests == [] and fake.downloads == []
    assert stored_images(tmp_path / "bot.db") == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ((picture(), "image/png", "big.png"), "larger than 0.0001 MB"),
        ((b"\x89PNG not an image", "image/png", "broken.png"), "cannot read that file"),
    ],
    ids=["oversized", "corrupt"],
)
async def test_an_oversized_or_corrupt_picture_is_refused(
    make_config: MakeConfig,
    ollama: FakeOllama,
    document: tuple[bytes, str, str],
    expected: str,
) -> None:
    async with FakeTelegram(username="llama_bot") as fake:
        extra = "[limits]\nmax_image_bytes = 100\n" if expected.startswith("larger") else ""
        config = make_config(telegram_toml(fake, ollama, "llava", extra))
        adapter = TelegramAdapter(config.telegram, token=fake.token)
        async with Bot(config, adapters=[adapter], plugins=PluginHost()):
            sent = fake.push_message(1001, "look", from_user=ALICE, document=document)
            await fake.wait_for(lambda: bool(fake.replies_to(1001, sent.message_id)))
        [reply] = fake.replies_to(1001, sent.message_id)
    assert expected in reply.text
    assert ollama.chat_requests == []


# -- Discord ------------------------------------------------------------------------------


def discord_toml(world: World, ollama: FakeOllama, model: str, extra: str = "") -> str:
    return llm(ollama.url, model, extra) + (
        f'[discord]\nenabled = true\napi_base = "{world.fake.api_base}"\n'
        f'gateway_url = "{world.fake.gateway_url}"\n'
    )


def discord_adapter(world: World, config: object) -> DiscordAdapter:
    return DiscordAdapter(
        config.discord,  # type: ignore[attr-defined]
        token=world.fake.token,
        guild_ready_timeout=0.05,
        connect_timeout=10,
    )


async def test_a_discord_attachment_in_a_channel_is_seen_by_a_vision_model(
    world: World, make_config: MakeConfig, ollama: FakeOllama
) -> None:
    config = make_config(discord_toml(world, ollama, "llava"))
    async with Bot(config, adapters=[discord_adapter(world, config)], plugins=PluginHost()):
        asked = await world.fake.send_message(
            world.general.id,
            f"{world.bot.mention} what's in the picture?",
            author=world.bob,
            attachments=[("cat.webp", picture(kind="WEBP"), "image/webp")],
        )
        await world.fake.wait_for(lambda: asked.id in world.fake.replies_to)
    assert world.fake.replies_to[asked.id].content == "A red square."
    assert len(world.fake.cdn_downloads) == 1
    [seen] = ollama.images
    with Image.open(io.BytesIO(seen)) as image:
        assert image.size == (64, 48)


async def test_a_download_that_outgrows_the_cap_is_stopped_while_streaming(
    world: World, make_config: MakeConfig, ollama: FakeOllama
) -> None:
    config = make_config(discord_toml(world, ollama, "llava", "[limits]\nmax_image_bytes = 5000\n"))
    big = picture(600, 600, kind="BMP")  # about 1 MB, but the message claims 10 bytes
    async with Bot(config, adapters=[discord_adapter(world, config)], plugins=PluginHost()):
        asked = await world.fake.send_message(
            world.general.id,
            f"{world.bot.mention} look",
            author=world.bob,
            attachments=[("big.bmp", big, "image/bmp")],
            declared_size=10,
        )
        await world.fake.wait_for(lambda: asked.id in world.fake.replies_to)
    assert "larger than 0.005 MB" in world.fake.replies_to[asked.id].content
    assert ollama.chat_requests == []


async def test_too_many_pictures_in_one_message_are_refused(
    world: World, make_config: MakeConfig, ollama: FakeOllama
) -> None:
    config = make_config(
        discord_toml(world, ollama, "llava", "[limits]\nmax_images_per_message = 1\n")
    )
    two = [("a.png", picture(), "image/png"), ("b.png", picture(), "image/png")]
    async with Bot(config, adapters=[discord_adapter(world, config)], plugins=PluginHost()):
        asked = await world.fake.send_message(
            world.general.id, f"{world.bot.mention} two", author=world.bob, attachments=two
        )
        await world.fake.wait_for(lambda: asked.id in world.fake.replies_to)
    assert world.fake.replies_to[asked.id].content == (
        "Please send at most 1 image in one message."
    )


async def test_kept_pictures_are_seen_again_within_image_turns_without_a_download(
    make_config: MakeConfig, ollama: FakeOllama, tmp_path: Path
) -> None:
    extra = "[history]\nimage_turns = 3\nstore_images = true\n"
    async with FakeTelegram(username="llama_bot") as fake:
        config = make_config(telegram_toml(fake, ollama, "llava", extra))
        adapter = TelegramAdapter(config.telegram, token=fake.token)
        plugins = load_plugins(config, tmp_path)  # /forgetme
        async with Bot(config, adapters=[adapter], plugins=plugins) as bot:
            sent = fake.push_message(1001, "what is this?", from_user=ALICE, photo=picture())
            await fake.wait_for(lambda: bool(fake.replies_to(1001, sent.message_id)))
            await bot.wait_idle()
            fake.push_message(1001, "what colour was it?", from_user=ALICE)
            await fake.wait_for(lambda: len(ollama.chat_requests) == 2)
            await bot.wait_idle()
            fake.push_message(1001, "/forgetme", from_user=ALICE)
            await fake.wait_for(lambda: len(fake.bot_messages(1001)) == 3)
        assert len(fake.downloads) == 1  # the second time, from the bot's own store
    follow_up = ollama.chat_requests[1]["messages"]
    assert [bool(m.get("images")) for m in follow_up] == [False, True, False, False]
    with sqlite3.connect(tmp_path / "bot.db") as db:
        assert db.execute("SELECT count(*) FROM stored_images").fetchone() == (0,)
