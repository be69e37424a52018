"""Persistence: SQLAlchemy models, the history store, engine setup and migrations."""

from __future__ import annotations

from llamabot.storage.engine import create_engine, upgrade
from llamabot.storage.history import HistoryStore, NewMessage, Turn

__all__ = ["HistoryStore", "NewMessage", "Turn", "create_engine", "upgrade"]
