"""What `llamabot run` checks before it starts anything, each problem with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamabot.config import load_config
from llamabot.preflight import startup_problems

TELEGRAM = """
[storage]
url = "sqlite+aiosqlite:///{db}"

[telegram]
enabled = true
token_env = "PREFLIGHT_TOKEN"
mode = "webhook"
webhook_url = "https://example.org/hook"
secret_token_env = "PREFLIGHT_SECRET"

[web]
listen = "{listen}"
"""


def problems(tmp_path: Path, db: str = "bot.db", listen: str = "127.0.0.1:0") -> list[str]:
    path = tmp_path / "bot.toml"
    path.write_text(TELEGRAM.format(db=db, listen=listen))
    return startup_problems(load_config(path), path)


def test_a_ready_bot_has_no_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFLIGHT_TOKEN", "123:abc")
    monkeypatch.setenv("PREFLIGHT_SECRET", "s3cret_token-1")
    assert problems(tmp_path) == []


def test_a_webhook_secret_telegram_would_refuse_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFLIGHT_TOKEN", "123:abc")
    monkeypatch.setenv("PREFLIGHT_SECRET", "has spaces!")
    [problem] = problems(tmp_path)
    assert problem.startswith(f"{tmp_path / 'bot.toml'}:10: ")
    assert "PREFLIGHT_SECRET" in problem and "letters, digits" in problem


def test_each_problem_points_at_its_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFLIGHT_TOKEN", raising=False)
    monkeypatch.delenv("PREFLIGHT_SECRET", raising=False)
    found = problems(tmp_path, db="missing/bot.db")
    path = tmp_path / "bot.toml"
    assert [line.split(": ", 1)[0] for line in found] == [f"{path}:7", f"{path}:10", f"{path}:3"]
    assert "PREFLIGHT_TOKEN" in found[0]
    assert "PREFLIGHT_SECRET" in found[1]
    assert f"mkdir -p {tmp_path / 'missing'}" in found[2]


def test_a_taken_admin_page_port_is_named_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    monkeypatch.setenv("PREFLIGHT_TOKEN", "123:abc")
    monkeypatch.setenv("PREFLIGHT_SECRET", "s3cret_token-1")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        [problem] = problems(tmp_path, listen=f"127.0.0.1:{port}")
    assert f"[web] listen = '127.0.0.1:{port}': the port is taken" in problem
    assert problem.startswith(str(tmp_path / "bot.toml") + ":")
