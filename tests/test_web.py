"""The admin page over HTTP: who gets in, what a change must carry, what never leaks, and
that an edit reaches bot.toml (comments kept), the audit log and the next reply."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from llamabot.cli import main
from llamabot.web.security import CSP, hash_password
from tests.web_helpers import TOKEN, Site, running_site

PAGES = [
    "/",
    "/personas",
    "/personas/assistant",
    "/bindings",
    "/conversations",
    "/plugins",
    "/logs",
    "/audit",
]
ACTIONS = [
    "/personas",
    "/personas/assistant",
    "/personas/pirate/delete",
    "/bindings",
    "/bindings/0",
    "/bindings/0/delete",
    "/people/forget",
    "/jobs/cancel",
    "/personas/pirate/try",
    "/logout",
]


@pytest.fixture
async def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Site]:
    monkeypatch.setenv("WEB_TEST_DISCORD_TOKEN", TOKEN)
    hashed = hash_password("correct horse")
    users = (
        f'[web.users.ada]\npassword_hash = "{hashed}"\n'
        f'[web.users.vic]\npassword_hash = "{hashed}"\nrole = "viewer"\n'
    )
    async with running_site(tmp_path, users) as running:
        yield running


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def logged_in(site: Site) -> aiohttp.ClientSession:
    session = client()
    async with session.get(site.link, allow_redirects=False) as answer:
        assert answer.status == 302 and answer.headers["Location"] == "/"
    return session


async def csrf_of(
    session: aiohttp.ClientSession, site: Site, page: str = "/personas"
) -> tuple[str, str]:
    async with session.get(site.url + page) as answer:
        html = await answer.text()
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    version = re.search(r'name="version" value="([^"]+)"', html)
    assert csrf is not None
    return csrf.group(1), version.group(1) if version else ""


async def test_nothing_is_served_without_a_session(site: Site) -> None:
    async with client() as session:
        for page in PAGES:
            async with session.get(site.url + page, allow_redirects=False) as answer:
                assert answer.status == 302 and answer.headers["Location"] == "/login", page
        for action in ACTIONS:
            headers = {"Origin": site.url}
            async with session.post(
                site.url + action, headers=headers, allow_redirects=False
            ) as answer:
                assert answer.status == 401, action
        async with session.get(site.url + "/logs/stream") as answer:
            assert answer.status == 401


async def test_the_login_link_works_once(site: Site) -> None:
    async with await logged_in(site) as session, session.get(site.url + "/") as answer:
        assert answer.status == 200 and "Overview" in await answer.text()
    async with client() as again, again.get(site.link, allow_redirects=False) as answer:
        assert answer.status == 403


async def test_a_change_needs_the_token_and_the_page_s_origin(site: Site) -> None:
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site)
        form = {"prompt": "CHANGED", "model": "llama3.2", "version": version}
        good = {"Origin": site.url}
        async with session.post(
            site.url + "/personas/assistant", data=form, headers=good, allow_redirects=False
        ) as answer:
            assert answer.status == 403  # no CSRF token
        form["csrf"] = csrf
        evil = {"Origin": "http://evil.example"}
        async with session.post(
            site.url + "/personas/assistant", data=form, headers=evil, allow_redirects=False
        ) as answer:
            assert answer.status == 403
        async with session.post(
            site.url + "/personas/assistant", data=form, allow_redirects=False
        ) as answer:
            assert answer.status == 403  # no Origin at all
        assert "FIRST-PROMPT" in site.path.read_text()
        async with session.post(
            site.url + "/personas/assistant", data=form, headers=good, allow_redirects=False
        ) as answer:
            assert answer.status == 302
        assert "CHANGED" in site.path.read_text()


async def test_the_sixth_wrong_password_in_a_minute_is_refused(site: Site) -> None:
    headers = {"Origin": site.url}
    async with client() as session:
        for _ in range(5):
            form = {"user": "ada", "password": "wrong"}
            async with session.post(site.url + "/login", data=form, headers=headers) as answer:
                assert answer.status == 403
        form = {"user": "ada", "password": "correct horse"}
        async with session.post(site.url + "/login", data=form, headers=headers) as answer:
            assert answer.status == 429


async def test_a_password_logs_in_and_a_viewer_changes_nothing(site: Site) -> None:
    headers = {"Origin": site.url}
    async with client() as session:
        form = {"user": "vic", "password": "correct horse"}
        async with session.post(
            site.url + "/login", data=form, headers=headers, allow_redirects=False
        ) as answer:
            assert answer.status == 302
            cookie = answer.cookies["llamabot_session"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        csrf, version = await csrf_of(session, site)
        form = {"csrf": csrf, "version": version, "prompt": "VIEWER WAS HERE"}
        async with session.post(
            site.url + "/personas/assistant", data=form, headers=headers
        ) as answer:
            assert answer.status == 403
        async with session.get(site.url + "/conversations/1") as answer:
            assert answer.status in (403, 404)
    assert "VIEWER WAS HERE" not in site.path.read_text()


async def test_headers_on_every_page_and_no_secret_in_any(site: Site) -> None:
    await site.adapter.say("hello")
    async with await logged_in(site) as session:
        for page in [*PAGES, "/conversations/1", "/login"]:
            async with session.get(site.url + page) as answer:
                assert answer.status == 200, page
                body = await answer.text()
                assert answer.headers["Content-Security-Policy"] == CSP
                assert answer.headers["X-Frame-Options"] == "DENY"
                assert answer.headers["Cache-Control"] == "no-store"
                assert TOKEN not in body
                assert "<script>" not in body and "onclick" not in body  # no inline script


async def test_an_edit_keeps_comments_is_audited_and_answers_the_next_message(site: Site) -> None:
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site, "/personas/assistant")
        form = {
            "csrf": csrf,
            "version": version,
            "prompt": "SECOND-PROMPT",
            "model": "llama3.2",
            "temperature": "0.3",
            "tools": "",
        }
        async with session.post(
            site.url + "/personas/assistant", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 200 and "Saved to bot.toml" in await answer.text()
        async with session.get(site.url + "/audit") as answer:
            audit = await answer.text()
    text = site.path.read_text()
    assert "# the admin's own comment, kept across edits" in text and "temperature = 0.3" in text
    assert "persona assistant edited" in audit and "+prompt = &#34;SECOND-PROMPT&#34;" in audit
    await site.adapter.say("who are you?")
    assert site.ollama.chat_requests[-1]["messages"][0]["content"] == "SECOND-PROMPT"


async def test_an_invalid_value_is_shown_by_its_field_and_nothing_is_written(site: Site) -> None:
    before = site.path.read_text()
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site, "/personas/assistant")
        for field, value, expected in [
            ("temperature", "warm", "is not a number"),
            ("tools", "mcp:nope", "there is no [mcp.servers.nope]"),
        ]:
            form = {
                "csrf": csrf,
                "version": version,
                "prompt": "X",
                "model": "llama3.2",
                "temperature": "",
                "tools": "",
                field: value,
            }
            async with session.post(
                site.url + "/personas/assistant", data=form, headers={"Origin": site.url}
            ) as answer:
                assert answer.status == 400
                assert expected in (await answer.text()).replace("&#39;", "'")
    assert site.path.read_text() == before


async def test_a_save_over_a_changed_file_is_refused_with_the_diff(site: Site) -> None:
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site, "/personas/assistant")
        site.path.write_text(
            site.path.read_text().replace("You talk like a pirate.", "Arr, edited by hand.")
        )
        form = {"csrf": csrf, "version": version, "prompt": "FROM THE PAGE", "model": "llama3.2"}
        async with session.post(
            site.url + "/personas/assistant", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 409
            page = await answer.text()
    assert "+prompt = &#34;Arr, edited by hand.&#34;" in page
    assert "FROM THE PAGE" not in site.path.read_text()


async def test_a_persona_in_use_is_not_deleted(site: Site) -> None:
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site)
        form = {"csrf": csrf, "version": version}
        async with session.post(
            site.url + "/personas/assistant/delete", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 400
            assert "console channel *" in await answer.text()
        async with session.post(
            site.url + "/personas/pirate/delete", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 200
    assert "[personas.pirate]" not in site.path.read_text()


def test_check_refuses_a_page_open_to_other_machines_without_tls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bot.toml"
    path.write_text('[web]\nlisten = "0.0.0.0:8780"\n')
    assert main(["check", "--config", str(path)]) == 1
    assert "reaches other machines: set tls_cert and tls_key" in capsys.readouterr().err
    path.write_text('[web]\nlisten = "0.0.0.0:8780"\ntrust_proxy = true\n')
    assert main(["check", "--config", str(path)]) == 0


def test_passwd_writes_an_argon2_hash_into_bot_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamabot.config import load_config
    from llamabot.web.security import check_password

    path = tmp_path / "bot.toml"
    path.write_text("# mine\n[bot]\nname = 'Llama'\n")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a long passphrase")
    assert main(["web", "passwd", "ada", "--role", "viewer", "--config", str(path)]) == 0
    user = load_config(path).web.users["ada"]
    assert user.role == "viewer" and user.password_hash.startswith("$argon2")
    assert check_password(user.password_hash, "a long passphrase")
    assert path.read_text().startswith("# mine\n")


async def test_the_page_alone_serves_bot_toml_and_the_history(tmp_path: Path) -> None:
    import asyncio
    import sys

    from tests.test_run import stop_run

    path = tmp_path / "bot.toml"
    path.write_text(
        f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path / "bot.db"}"\n'
        '[personas.assistant]\nprompt = "ALONE"\n[web]\nlisten = "127.0.0.1:0"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llamabot.cli", "web", "--config", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("admin page (the bot is not running): http://127.0.0.1:")
        link = line.split(": ", 1)[1].strip()
        base = link.split("/login")[0]
        async with client() as session:
            async with session.get(link) as answer:
                assert answer.status == 200 and "not running" in await answer.text()
            async with session.get(base + "/personas") as answer:
                assert "ALONE" in await answer.text()
    finally:
        log = await stop_run(process)  # SIGTERM, and killed should it hang
    assert process.returncode == 0, log


async def test_an_admin_command_s_change_is_in_the_audit_log_too(site: Site) -> None:
    await site.adapter.say("/persona set pirate", user="root", chat="den")
    assert site.bot.audit is not None
    await site.bot.audit.settle()
    async with await logged_in(site) as session, session.get(site.url + "/audit") as answer:
        audit = await answer.text()
    assert "console:root (Root, console:den)" in audit and "persona: /persona set pirate" in audit
    assert "+persona = &#34;pirate&#34;" in audit


async def test_a_transcript_search_finds_the_newest_matches(site: Site) -> None:
    for text in ("the quick brown fox", "nothing to see", "a fox again"):
        await site.adapter.say(text)
    async with (
        await logged_in(site) as session,
        session.get(site.url + "/conversations/1?q=fox") as answer,
    ):
        page = await answer.text()
    found = re.findall(r'<div class="text">([^<]*)</div>', page)
    assert found == ["a fox again", "the quick brown fox"]


async def test_chats_are_shown_by_their_names(site: Site) -> None:
    await site.adapter.say("hello", chat="4242", private=False, addressed=True, title="Llama fans")
    async with await logged_in(site) as session:
        async with session.get(site.url + "/conversations") as answer:
            listed = await answer.text()
        async with session.get(site.url + "/bindings") as answer:
            bindings = await answer.text()
    assert ">Llama fans</a>" in listed and "console:4242" in listed
    assert '<option value="4242">Llama fans (console)</option>' in bindings


async def test_a_login_with_an_app_code_needs_the_right_code(tmp_path: Path) -> None:
    from llamabot.web.security import new_totp_secret, totp_code

    secret = new_totp_secret()
    user = (
        f'[web.users.ada]\npassword_hash = "{hash_password("a long passphrase")}"\n'
        f'totp_secret = "{secret}"\n'
    )
    async with running_site(tmp_path, user) as site, client() as session:
        headers = {"Origin": site.url}
        form = {"user": "ada", "password": "a long passphrase", "code": ""}
        async with session.post(site.url + "/login", data=form, headers=headers) as answer:
            assert answer.status == 403  # the password alone is not enough
        form["code"] = str((int(totp_code(secret)) + 1) % 1_000_000).zfill(6)
        async with session.post(site.url + "/login", data=form, headers=headers) as answer:
            assert answer.status == 403
        form["code"] = totp_code(secret)
        async with session.post(
            site.url + "/login", data=form, headers=headers, allow_redirects=False
        ) as answer:
            assert answer.status == 302


def test_passwd_with_totp_prints_the_app_s_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llamabot.config import load_config

    path = tmp_path / "bot.toml"
    path.write_text("")
    monkeypatch.setattr("getpass.getpass", lambda prompt="": "a long passphrase")
    assert main(["web", "passwd", "ada", "--totp", "--config", str(path)]) == 0
    secret = load_config(path).web.users["ada"].totp_secret
    assert len(secret) == 32
    assert f"otpauth://totp/llamabot:ada?secret={secret}&issuer=llamabot" in capsys.readouterr().out


def test_totp_codes_are_rfc_6238_s() -> None:
    from llamabot.web.security import check_totp, totp_code

    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"  # "12345678901234567890", the RFC's key
    assert totp_code(secret, at=59) == "287082"  # the RFC's 94287082, six digits
    assert totp_code(secret, at=1111111109) == "081804"
    assert check_totp(secret, "287082", at=59 + 30) and not check_totp(secret, "287082", at=200)


async def test_sampling_options_and_the_adapter_are_edited_too(site: Site) -> None:
    async with await logged_in(site) as session:
        csrf, version = await csrf_of(session, site, "/personas/pirate")
        form = {"csrf": csrf, "version": version, "top_k": "40", "num_ctx": "4096", "seed": "7"}
        async with session.post(
            site.url + "/personas/pirate", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 200
        form = {"csrf": csrf, "version": version, "top_k": "forty"}
        async with session.post(
            site.url + "/personas/pirate", data=form, headers={"Origin": site.url}
        ) as answer:
            assert answer.status == 400 and "is not a number, e.g. 4096" in await answer.text()
    pirate = site.bot.config.personas["pirate"]
    assert (pirate.top_k, pirate.num_ctx, pirate.seed) == (40, 4096, 7)
    assert pirate.prompt == "You talk like a pirate."  # fields not sent are kept


async def test_a_conversation_s_summary_is_shown_with_its_transcript(site: Site) -> None:
    await site.adapter.say("hello")
    memory = site.bot.memory
    assert memory is not None
    await memory.store.save_summary(1, text="SUMMARY <b>of</b> the start", covers_through=1)
    async with (
        await logged_in(site) as session,
        session.get(site.url + "/conversations/1") as answer,
    ):
        page = await answer.text()
    assert "SUMMARY &lt;b&gt;of&lt;/b&gt; the start" in page


async def test_a_transcript_goes_to_a_date_and_to_one_person(site: Site) -> None:
    import sqlite3

    await site.adapter.say("said long ago", user="ada")
    await site.adapter.say("said today", user="bob")
    with sqlite3.connect(site.path.parent / "bot.db") as db:
        db.execute("UPDATE messages SET created_at = '2025-03-01 10:00:00' WHERE id <= 2")
    async with await logged_in(site) as session:
        async with session.get(site.url + "/conversations/1?date=2025-03-01") as answer:
            dated = re.findall(r'<div class="text">([^<]*)</div>', await answer.text())
        async with session.get(site.url + "/conversations/1?person=console:bob") as answer:
            bobs = re.findall(r'<div class="text">([^<]*)</div>', await answer.text())
    assert dated[-1] == "said long ago" and "said today" not in dated
    assert bobs == ["said today"]


async def test_every_page_on_sqlite_and_postgresql(store_url: str, tmp_path: Path) -> None:
    async with running_site(tmp_path, storage=store_url) as site:
        await site.adapter.say("the quick brown fox", user="ada", title="Fox chat")
        await site.adapter.say("/remind 2h feed the fox", user="ada")
        async with await logged_in(site) as session:
            for page in [
                *PAGES,
                "/conversations/1",
                "/conversations/1?q=fox",
                "/conversations/1?date=2099-01-01",
                "/conversations/1?person=console:ada",
                "/conversations/1/export?format=sharegpt",
            ]:
                async with session.get(site.url + page) as answer:
                    assert answer.status == 200, page
                    body = await answer.text()
                    if page == "/conversations/1?q=fox":
                        assert "the quick brown fox" in body
                    if page == "/conversations":
                        assert "Fox chat" in body
            csrf, _ = await csrf_of(session, site)
            form = {"csrf": csrf, "person": "console:ada", "back": "/conversations/1"}
            async with session.post(
                site.url + "/people/forget", data=form, headers={"Origin": site.url}
            ) as answer:
                assert answer.status == 200
                assert "quick brown fox" not in await answer.text()
        assert site.bot.scheduler is not None
        assert await site.bot.scheduler.everything_pending() == []  # the reminder went too
