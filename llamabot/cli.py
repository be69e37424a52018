"""``llamabot run | chat | check | db | models | doctor``: the admin's command line.

Errors an admin can cause (a bad bot.toml, a missing model) end the program with the
message and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llamabot.config import Config, ConfigError, load_config, resolve_storage_url
from llamabot.errors import StartupError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("llamabot")

DEFAULT_CONFIG = "bot.toml"


def _config_path(args: argparse.Namespace) -> Path:
    return Path(args.config or os.environ.get("LLAMABOT_CONFIG") or DEFAULT_CONFIG)


def _setup_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Library chatter (HTTP requests, gateway events) stays out of the admin's log.
    for noisy in ("httpx", "discord", "telegram", "apscheduler", "alembic", "aiosqlite"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _fail(message: str) -> int:
    print(f"llamabot: {message}", file=sys.stderr)
    return 1


def _summary(config: Config, path: Path) -> str:
    platforms = [
        name
        for name, on in (("discord", config.discord.enabled), ("telegram", config.telegram.enabled))
        if on
    ]
    return (
        f"{path}: OK — {len(config.personas)} persona(s), {len(config.bindings)} binding(s), "
        f"backend {config.llm.backend}, platforms: {', '.join(platforms) or 'none (console only)'}"
    )


async def _check(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = load_config(path)
    print(_summary(config, path))
    return 0


async def _chat(args: argparse.Namespace) -> int:
    from llamabot.adapters.console import ConsoleAdapter
    from llamabot.app import Bot

    path = _config_path(args)
    config = load_config(path)
    console = ConsoleAdapter(args.channel, bot_name=config.bot.name, jsonl=args.jsonl)
    async with Bot(config, config_path=path, adapters=[console]) as bot:
        await console.chat(history=bot.store)
    return 0


async def _run(args: argparse.Namespace) -> int:
    from llamabot.app import Bot
    from llamabot.preflight import startup_problems

    path = _config_path(args)
    config = load_config(path)
    problems = startup_problems(config, path)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Bot(config, config_path=path, watch_config=True) as bot:
        page = await _admin_page(bot, config)
        try:
            log.info("llamabot is running; Ctrl-C or SIGTERM stops it")
            await stop.wait()
            log.info("stopping")
        finally:
            if page is not None:
                await page.stop()
    return 0


async def _admin_page(bot: Any, config: Config) -> Any:
    """Serve the admin page next to the bot (``[web] listen``) and print its login link."""
    if not config.web.listen:
        return None
    from llamabot.web.logs import LogTail
    from llamabot.web.server import AdminPage, AdminParts

    page = AdminPage(AdminParts.of(bot, LogTail()), config.web)
    link = await page.start()
    print(f"admin page: {link}", flush=True)
    return page


async def _web(args: argparse.Namespace) -> int:
    path = _config_path(args)
    if args.web_command == "passwd":
        return _passwd(path, args.name, args.role, totp=args.totp)
    from llamabot.storage.engine import create_engine, upgrade
    from llamabot.web.server import AdminPage, AdminParts

    config = load_config(path)
    if not config.web.listen:
        return _fail(f'{path}: [web] listen = "" turns the admin page off; set it to serve one')
    engine = create_engine(resolve_storage_url(config.storage.url, path))
    await upgrade(engine)
    parts = AdminParts.alone(path, config, engine)
    page = AdminPage(parts, config.web)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        link = await page.start()
        print(f"admin page (the bot is not running): {link}", flush=True)
        await stop.wait()
    finally:
        await page.stop()
        await parts.audit.settle()
        await parts.store.aclose()
        await engine.dispose()
    return 0


def _passwd(path: Path, name: str, role: str, *, totp: bool = False) -> int:
    import getpass

    from llamabot.config_editor import rewrite_config
    from llamabot.web.security import hash_password, new_totp_secret, totp_uri

    password = getpass.getpass(f"password for {name}: ")
    if len(password) < 8:
        return _fail("a password of 8 characters or more, please")
    if getpass.getpass("again: ") != password:
        return _fail("the two passwords differ; nothing was changed")
    hashed = hash_password(password)
    secret = new_totp_secret() if totp else ""

    def add(document: Any) -> None:
        import tomlkit

        web = document.setdefault("web", tomlkit.table())
        users = web.setdefault("users", tomlkit.table(is_super_table=True))
        user = tomlkit.table()
        user.add("password_hash", hashed)
        user.add("role", role)
        if secret:
            user.add("totp_secret", secret)
        users[name] = user

    rewrite_config(path, add)
    print(f"{path}: [web.users.{name}] set ({role}); restart the bot for it to take effect")
    if secret:
        print(f"add it to your authenticator app: {totp_uri(name, secret)}")
        print("(the secret is in bot.toml now: keep that file readable by the bot's user only)")
    return 0


async def _db(args: argparse.Namespace) -> int:
    from llamabot.storage.engine import create_engine, current_revision, head_revision, upgrade

    path = _config_path(args)
    config = load_config(path)
    if args.db_command == "copy":
        return await _copy(args, resolve_storage_url(config.storage.url, path), path)
    engine = create_engine(resolve_storage_url(config.storage.url, path))
    try:
        if args.db_command == "upgrade":
            await upgrade(engine)
            print(f"database is at revision {await current_revision(engine)} (head)")
        elif args.db_command == "prune":
            return await _prune(engine, args.older_than)
        else:
            current = await current_revision(engine)
            head = head_revision()
            state = "up to date" if current == head else f"behind head {head}"
            print(f"database revision: {current or 'none (empty)'} — {state}")
    finally:
        await engine.dispose()
    return 0


async def _copy(args: argparse.Namespace, configured: str, path: Path) -> int:
    from llamabot.storage.copy import copy_database
    from llamabot.storage.engine import create_engine

    if not args.to:
        return _fail("say where to: llamabot db copy --to postgresql+asyncpg://user@host/db")
    source_url = resolve_storage_url(args.source or configured, path)
    target_url = resolve_storage_url(args.to, path)
    if source_url == target_url:
        return _fail("--from and --to name the same database; nothing to copy")
    source, target = create_engine(source_url), create_engine(target_url)
    try:
        report = await copy_database(source, target)
    finally:
        await source.dispose()
        await target.dispose()
    for table in report:
        state = "ok" if table.complete else "INCOMPLETE"
        print(
            f"{table.table:<18} {table.source:>10,} in the source, {table.target:>10,} in the "
            f"target ({table.copied:,} copied now)  {state}"
        )
    if not all(table.complete for table in report):
        return _fail("the target holds fewer rows than the source; run the copy again")
    print(f'done: set [storage] url = "{args.to}" in {path} and start the bot')
    return 0


async def _prune(engine: AsyncEngine, older_than: str | None) -> int:
    from llamabot.retention import parse_age, prune_older_than
    from llamabot.storage.engine import upgrade
    from llamabot.storage.history import HistoryStore

    if older_than is None:
        return _fail("say how old: llamabot db prune --older-than 30d")
    try:
        age = parse_age(older_than)
    except ValueError as exc:
        return _fail(str(exc))
    await upgrade(engine)
    store = HistoryStore(engine)
    try:
        removed = await prune_older_than(store, age)
    finally:
        await store.aclose()
    print(f"deleted {removed} message(s) older than {older_than}")
    return 0


async def _export(args: argparse.Namespace) -> int:
    from llamabot.export import ExportFilter, Pseudonyms, export
    from llamabot.storage.engine import create_engine, upgrade

    path = _config_path(args)
    config = load_config(path)
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since)
        except ValueError:
            return _fail(f"--since {args.since!r} is not a date; write it like 2026-01-31")
    where = ExportFilter(conversation=args.conversation, persona=args.persona, since=since)
    pseudonyms = None if args.keep_ids else Pseudonyms.beside(path)
    engine = create_engine(resolve_storage_url(config.storage.url, path))
    try:
        await upgrade(engine)
        with contextlib.ExitStack() as files:
            # Blocking writes are fine here: exporting is all this process does.
            out = sys.stdout
            if args.out:
                out = files.enter_context(open(args.out, "w", encoding="utf-8"))  # noqa: ASYNC230
            count = await export(
                engine, config, out, fmt=args.format, where=where, pseudonym=pseudonyms
            )
    finally:
        await engine.dispose()
    print(f"exported {count} record(s) as {args.format}", file=sys.stderr)
    return 0


async def _models(args: argparse.Namespace) -> int:
    from llamabot.llm.select import select_model

    path = _config_path(args)
    config = load_config(path)
    model = await select_model(config.llm, config_dir=path.parent)
    try:
        for info in await model.list_models():
            size = f"{info.size_bytes / 1e9:.1f} GB" if info.size_bytes else "?"
            context = f"ctx {info.context_length}" if info.context_length else "ctx ?"
            quant = info.quantization or "?"
            print(f"{info.host or model.name}\t{info.name}\t{size}\t{quant}\t{context}")
    finally:
        await model.aclose()
    return 0


async def _plugins(args: argparse.Namespace) -> int:
    from llamabot.plugin_loader import load_plugins

    path = _config_path(args)
    config = load_config(path)
    host = load_plugins(config, path.parent)
    prefix = config.bot.command_prefix
    print(f"loaded ({len(host.loaded)}):")
    for loaded in host.loaded:
        commands = ", ".join(
            prefix + c.name + (" (admins)" if c.permission == "admin" else "")
            for c in sorted(loaded.plugin.commands, key=lambda c: c.name)
        )
        tools = ", ".join(f"{t.name} (tool)" for t in loaded.plugin.tools)
        offered = ", ".join(part for part in (commands, tools) if part)
        print(f"  {loaded.plugin.name:<12} {offered or '(no commands)'}")
        print(f"  {'':<12} from {loaded.source}")
    if host.failures:
        print(f"failed ({len(host.failures)}):")
        for failure in host.failures:
            print(f"  {failure.name:<12} {failure.reason}")
            print(f"  {'':<12} from {failure.source}")
        return 1
    return 0


async def _doctor(args: argparse.Namespace) -> int:
    from llamabot.doctor import run_checks

    checks = await run_checks(_config_path(args))
    for check in checks:
        print(check.line())
    return 0 if all(check.ok for check in checks) else 1


async def _mcp(args: argparse.Namespace) -> int:
    from llamabot.mcp_servers import probe

    path = _config_path(args)
    config = load_config(path)
    servers = config.mcp.servers
    if not servers:
        print(f"no MCP servers in {path}; add one as [mcp.servers.NAME] (see the README)")
        return 0
    found = {status.name: status for status in await probe(config.mcp, path.parent)}
    print(f"{'server':<16} {'state':<10} {'transport':<16} {'protocol':<11} tools")
    failed = False
    for name in sorted(servers):
        status = found.get(name)
        if status is None:
            print(f"{name:<16} {'off':<10} {'':<16} {'':<11} (enabled = false)")
            continue
        failed |= status.state != "up"
        tools = ", ".join(status.tools) if status.state == "up" else status.detail
        print(
            f"{name:<16} {status.state:<10} {status.transport:<16} {status.protocol or '-':<11} "
            f"{tools or '-'}"
        )
    return 1 if failed else 0


async def _publish(args: argparse.Namespace) -> int:
    from llamabot.config_editor import rewrite_config
    from llamabot.publish import publish
    from llamabot.storage.engine import create_engine, upgrade
    from llamabot.storage.state import StateStore

    path = _config_path(args)
    config = load_config(path)
    engine = create_engine(resolve_storage_url(config.storage.url, path))
    try:
        await upgrade(engine)
        done = await publish(
            config, path.parent, args.persona, StateStore(engine), name=args.name, host=args.host
        )
    finally:
        await engine.dispose()
    status = "published" if done.changed else "is up to date (nothing changed)"
    print(f"persona {args.persona}: {done.name} on {done.host} {status}")
    print(f"try it:  ollama run {done.name}")
    if config.personas[args.persona].model == done.name:
        return 0
    if args.bind:

        def bind(document: Any) -> None:
            document["personas"][args.persona]["model"] = done.name

        rewrite_config(path, bind)
        print(f"bot.toml: [personas.{args.persona}] model = {done.name!r}")
    else:
        print(f"to answer with it, set [personas.{args.persona}] model = {done.name!r} (or --bind)")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "check": _check,
    "chat": _chat,
    "run": _run,
    "db": _db,
    "models": _models,
    "export": _export,
    "plugins": _plugins,
    "doctor": _doctor,
    "publish": _publish,
    "mcp": _mcp,
    "web": _web,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="llamabot", description="Chat bots that answer with a local Llama model."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--config", help=f"path to bot.toml (default: ./{DEFAULT_CONFIG})")
        return command

    add("run", "start every enabled platform and run until Ctrl-C / SIGTERM")
    chat = add("chat", "chat with the bot in this terminal (reads lines when piped)")
    chat.add_argument("--channel", default="local", help="console channel name (default: local)")
    chat.add_argument(
        "--jsonl",
        action="store_true",
        help="one JSON object per reply (text, status, tokens, seconds), for scripts",
    )
    add("check", "validate bot.toml and print a summary")
    db = add("db", "database maintenance")
    db.add_argument("db_command", choices=["upgrade", "current", "prune", "copy"])
    db.add_argument("--older-than", help="with prune: an age like 30d, 12h or 2w")
    db.add_argument(
        "--from", dest="source", help="with copy: the database to copy (default: [storage] url)"
    )
    db.add_argument(
        "--to", help="with copy: the database to copy into, e.g. postgresql+asyncpg://…"
    )
    add("models", "list the models the backend can serve")
    add("plugins", "list the plugins that load, with their commands, and the ones that fail")
    add("doctor", "check config, database, model servers, persona models and tokens")
    exporter = add("export", "write conversations as JSONL for fine-tuning (LoRA)")
    exporter.add_argument("--format", choices=["chatml", "sharegpt", "alpaca"], default="chatml")
    exporter.add_argument("--conversation", help="only this conversation key, e.g. discord:123")
    exporter.add_argument("--persona", help="only windows answered by this persona")
    exporter.add_argument("--since", help="only messages from this date on (YYYY-MM-DD)")
    exporter.add_argument("--out", help="the file to write (default: standard output)")
    exporter.add_argument(
        "--keep-ids", action="store_true", help="keep user ids instead of pseudonyms"
    )
    web = add("web", "serve the admin page alone (no platforms), or set a login's password")
    web.add_argument("web_command", nargs="?", choices=["serve", "passwd"], default="serve")
    web.add_argument("name", nargs="?", default="admin", help="with passwd: the login's name")
    web.add_argument("--role", choices=["admin", "viewer"], default="admin")
    web.add_argument("--totp", action="store_true", help="with passwd: also ask for an app code")
    mcp = add("mcp", "connect to each [mcp.servers] server once and list its state and tools")
    mcp.add_argument("mcp_command", choices=["list"])
    publisher = add("publish", "make a persona (model, LoRA adapter, prompt) an Ollama model")
    publisher.add_argument("persona", help="the persona in bot.toml")
    publisher.add_argument("--name", help="the Ollama model's name (default: llamabot-PERSONA)")
    publisher.add_argument("--host", help="the Ollama server (default: [llm.ollama] host)")
    publisher.add_argument(
        "--bind", action="store_true", help="then set the persona's model to it in bot.toml"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``llamabot`` console script."""
    args = build_parser().parse_args(argv)
    _setup_logging(
        args.verbose, quiet=args.command in ("chat", "check", "doctor", "plugins", "mcp")
    )
    try:
        status = asyncio.run(COMMANDS[args.command](args))
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return status
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 1
    except StartupError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`llamabot export | head`): end quietly, as `grep | head` does.
        _discard_stdout()
        return 0


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so flushing it at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
