"""The admin page in a real browser: Debian's Chromium driven by Playwright, against the
running bot on a fake platform and the fake Ollama. As an admin would use it."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.web_helpers import Site, running_site

playwright = pytest.importorskip("playwright.async_api")
Page = playwright.Page
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="no chromium: apt-get install chromium (as .ci/run does)"
)
# Chromium as the probe started it here: no network of its own on this closed machine.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# LLAMABOT_SCREENSHOTS=1 makes the README's pictures (tests/screenshots/) anew.
SCREENSHOTS = Path(__file__).parent / "screenshots"


async def screenshot(tab: Page, name: str) -> None:
    if os.environ.get("LLAMABOT_SCREENSHOTS"):
        SCREENSHOTS.mkdir(exist_ok=True)
        await tab.screenshot(path=str(SCREENSHOTS / name))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with running_site(tmp_path) as running:
        yield running


@pytest.fixture
async def tab(site: Site) -> AsyncIterator[Page]:
    async with playwright.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(viewport={"width": 1100, "height": 760})
        tab = await context.new_page()
        tab.on("dialog", lambda dialog: dialog.accept())  # the confirmations
        await tab.goto(site.link)  # the printed login link
        yield tab
        await browser.close()


async def test_the_login_link_opens_the_overview(site: Site, tab: Page) -> None:
    await site.adapter.say("hello there")
    await tab.goto(site.url + "/")
    assert await tab.inner_text("h1") == "Overview"
    assert "1 messages" in await tab.inner_text("main")
    await screenshot(tab, "overview.png")


async def test_a_prompt_edited_in_the_page_answers_the_next_message(site: Site, tab: Page) -> None:
    await tab.goto(site.url + "/personas")
    await screenshot(tab, "personas.png")
    await tab.click("text=assistant")
    await tab.fill("textarea[name=prompt]", "PROMPT-FROM-THE-BROWSER")
    assert await tab.inner_text("#prompt-tokens") != "0"
    await tab.click("button:has-text('Save')")
    await tab.wait_for_selector("text=Saved to bot.toml")
    await site.adapter.say("who are you?")
    assert site.ollama.chat_requests[-1]["messages"][0]["content"] == "PROMPT-FROM-THE-BROWSER"
    assert "# the admin's own comment, kept across edits" in site.path.read_text()


async def test_a_binding_changed_in_the_page_gives_the_chat_its_persona(
    site: Site, tab: Page
) -> None:
    await tab.goto(site.url + "/bindings")
    await tab.select_option("select[name=persona]", "pirate")
    await tab.click("form.row button:has-text('Save')")
    await tab.wait_for_url(site.url + "/bindings")
    await site.adapter.say("ahoy?")
    assert site.ollama.chat_requests[-1]["messages"][0]["content"] == "You talk like a pirate."


async def test_an_invalid_value_is_shown_inline_and_the_file_is_unchanged(
    site: Site, tab: Page
) -> None:
    before = site.path.read_text()
    await tab.goto(site.url + "/personas/assistant")
    await tab.fill("input[name=temperature]", "very warm")
    await tab.click("button:has-text('Save')")
    assert "is not a number" in await tab.inner_text("#temperature-error")
    assert site.path.read_text() == before


async def test_a_concurrent_edit_on_disk_is_refused_with_a_diff(site: Site, tab: Page) -> None:
    await tab.goto(site.url + "/personas/assistant")
    site.path.write_text(site.path.read_text().replace("FIRST-PROMPT", "EDITED-IN-VIM"))
    await tab.fill("textarea[name=prompt]", "EDITED-IN-THE-PAGE")
    await tab.click("button:has-text('Save')")
    diff = await tab.inner_text("pre.diff")
    assert '+prompt = "EDITED-IN-VIM"' in diff
    assert "EDITED-IN-THE-PAGE" not in site.path.read_text()


async def test_chat_text_is_shown_as_text_and_a_person_can_be_forgotten(
    site: Site, tab: Page
) -> None:
    hostile = (
        "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    )
    await site.adapter.say(hostile, user="mallory")
    await tab.goto(site.url + "/conversations")
    await tab.click("text=console:local")
    assert hostile in await tab.inner_text("ol.transcript")
    assert await tab.title() != "pwned" and await tab.locator("ol.transcript img").count() == 0
    await tab.click("summary:has-text('Forget a person')")
    await tab.click("button:has-text('Forget Mallory')")
    await tab.wait_for_url("**/conversations/*")
    assert "mallory" not in (await tab.inner_text("ol.transcript")).lower()
    with sqlite3.connect(site.path.parent / "bot.db") as db:
        assert db.execute(
            "SELECT count(*) FROM messages WHERE author_id = 'console:mallory'"
        ).fetchone() == (0,)


async def test_the_live_log_shows_a_line_as_it_happens(site: Site, tab: Page) -> None:
    await tab.goto(site.url + "/logs")
    await tab.wait_for_function("document.getElementById('log').dataset.stream !== undefined")
    logging.getLogger("llamabot.test").warning("a line written while the page watches 8231")
    await tab.wait_for_selector("#log li:has-text('while the page watches 8231')")
    await tab.select_option("#log-level", "ERROR")
    assert not await tab.locator("#log li:has-text('8231')").is_visible()


async def test_a_reminder_is_cancelled_from_the_page(site: Site, tab: Page) -> None:
    await site.adapter.say("/remind 2h water the plants")
    await tab.goto(site.url + "/plugins")
    assert "water the plants" in await tab.inner_text("main")
    await tab.click("form[action='/jobs/cancel'] button")
    await tab.wait_for_url(site.url + "/plugins")
    assert "water the plants" not in await tab.inner_text("main")
    assert site.bot.scheduler is not None and await site.bot.scheduler.everything_pending() == []


async def test_try_it_streams_the_persona_s_answer_and_stores_nothing(
    site: Site, tab: Page
) -> None:
    site.ollama.reply = "Arr, I be tried and true."
    await tab.goto(site.url + "/personas/pirate")
    await tab.fill("#try input[name=text]", "who goes there?")
    await tab.click("#try button")
    await tab.wait_for_selector("#try-answer[data-done='1']")
    assert await tab.inner_text("#try-answer") == "Arr, I be tried and true."
    asked = site.ollama.chat_requests[-1]["messages"]
    assert asked == [
        {"role": "system", "content": "You talk like a pirate."},
        {"role": "user", "content": "who goes there?"},
    ]
    with sqlite3.connect(site.path.parent / "bot.db") as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_every_page_fits_a_phone_in_light_and_dark(site: Site, scheme: str) -> None:
    await site.adapter.say("hello from a phone")
    async with playwright.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(
            viewport={"width": 360, "height": 740}, color_scheme=scheme
        )
        tab = await context.new_page()
        await tab.goto(site.link)
        for path in ["/", "/personas", "/personas/assistant", "/bindings", "/conversations",
                     "/conversations/1", "/plugins", "/logs", "/audit"]:  # fmt: skip
            await tab.goto(site.url + path)
            width = await tab.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"{path} is {width} px wide"
        await tab.goto(site.url + "/personas")
        background = await tab.evaluate("getComputedStyle(document.body).backgroundColor")
        await screenshot(tab, f"phone-{scheme}.png")
        await browser.close()
    dark = background == "rgb(24, 23, 21)"
    assert dark == (scheme == "dark")


async def test_a_persona_is_saved_with_the_keyboard_alone(site: Site, tab: Page) -> None:
    await tab.goto(site.url + "/personas/assistant")
    await tab.focus("textarea[name=prompt]")
    await tab.keyboard.press("Control+A")
    await tab.keyboard.type("TYPED-WITHOUT-A-MOUSE")
    for _ in range(20):  # Tab to the Save button, then Enter
        await tab.keyboard.press("Tab")
        if await tab.evaluate("document.activeElement.textContent") == "Save":
            break
    await tab.keyboard.press("Enter")
    await tab.wait_for_selector("text=Saved to bot.toml")
    assert site.bot.config.personas["assistant"].prompt == "TYPED-WITHOUT-A-MOUSE"
