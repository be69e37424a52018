"""What `llamabot run` needs before it starts anything: checked cheaply, reported all at once.

Tokens, the webhook secret, the database folder and the model file are checked before
the database is migrated or a model is loaded, so an admin fixes every problem in one
go instead of discovering them one start at a time.
"""

from __future__ import annotations

import os
from pathlib import Path

from llamabot.config import Config, WebSection, resolve_storage_url
from llamabot.errors import StartupError
from llamabot.storage.failures import folder_problem
from llamabot.tomlpos import locate_key


def startup_problems(config: Config, path: Path) -> list[str]:
    """One line per problem, each ``bot.toml:line: what is wrong; what to do``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = ""

    def at(*table: str) -> str:
        line = locate_key(text, table) if text else None
        return f"{path}:{line}" if line else str(path)

    problems: list[str] = []
    if not (config.discord.enabled or config.telegram.enabled):
        problems.append(
            f"{path}: no platform is enabled; set [discord] enabled = true or "
            "[telegram] enabled = true, or talk to the bot in the terminal with `llamabot chat`"
        )
    if config.discord.enabled and not _env(config.discord.token_env):
        problems.append(
            f"{at('discord', 'token_env')}: [discord] is enabled but the environment variable "
            f"{config.discord.token_env} is not set; set it to the bot token from the Discord "
            "developer portal (Bot -> Reset Token)"
        )
    web = config.web
    taken = _taken(web) if web.listen else ""
    if taken:
        problems.append(
            f"{at('web', 'listen')}: [web] listen = {web.listen!r}: {taken}; choose another "
            'port for the admin page, or listen = "" for none'
        )
    for key, name in (("tls_cert", web.tls_cert), ("tls_key", web.tls_key)):
        if web.listen and name and not (path.parent / name).is_file():
            problems.append(
                f"{at('web', key)}: [web] {key} = {name!r} is not a file (relative to "
                f"{path.parent}); give the PEM file, or listen on 127.0.0.1 without TLS"
            )
    telegram = config.telegram
    if telegram.enabled and not _env(telegram.token_env):
        problems.append(
            f"{at('telegram', 'token_env')}: [telegram] is enabled but the environment variable "
            f"{telegram.token_env} is not set; set it to the bot token @BotFather gave you "
            "(never put it in bot.toml)"
        )
    if telegram.enabled and telegram.mode == "webhook":
        if not telegram.webhook_url:
            problems.append(
                f'{at("telegram", "webhook_url")}: [telegram] mode = "webhook" needs webhook_url: '
                "the public HTTPS URL Telegram should post updates to"
            )
        secret_env = telegram.secret_token_env
        secret = os.environ.get(secret_env, "")  # used as is, like the adapter does
        where = at("telegram", "secret_token_env")
        if secret and not _valid_webhook_secret(secret):
            problems.append(
                f"{where}: the secret in {secret_env} may only hold 1-256 letters, digits, _ or -"
            )
        if not secret:
            problems.append(
                f"{where}: Telegram webhook mode needs the environment variable {secret_env}: "
                "a secret of 1-256 letters, digits, _ or -, which Telegram sends with every update"
            )
    storage = folder_problem(resolve_storage_url(config.storage.url, path))
    if storage is not None:
        problems.append(f"{at('storage', 'url')}: {storage}")
    if config.llm.backend == "embedded":
        model = _model_file_problem(config, path)
        if model is not None:
            problems.append(f"{at('llm', 'embedded', 'model_path')}: {model}")
    return problems


def _taken(web: WebSection) -> str:
    """Why the admin page could not listen on ``[web] listen`` ("" when it can)."""
    import socket

    host, port = web.host_port
    if port == 0:
        return ""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        return f"the port is taken or the address is not this machine's ({exc.strerror or exc})"
    return ""


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _valid_webhook_secret(secret: str) -> bool:
    from llamabot.adapters.telegram import SECRET_TOKEN

    return SECRET_TOKEN.fullmatch(secret) is not None


def _model_file_problem(config: Config, path: Path) -> str | None:
    from llamabot.llm.llamacpp import model_file

    try:
        model_file(config.llm.embedded, path.parent)
    except StartupError as exc:
        return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return None
