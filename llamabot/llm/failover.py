"""Failover between model servers, the same for every backend with several servers.

The least busy server that has the model takes the next generation; a server that failed
is skipped until ``retry_after_s`` has passed, then tried again, so a restarted server is
used again without restarting the bot; a failure episode is warned about once. The
backends say how to list a server's models and how to name a failure
(``ollama_hosts.py``, ``openai_servers.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Generic, TypeVar


@dataclass(eq=False, kw_only=True)
class Server:
    """One model server and what llamabot knows about it right now."""

    url: str
    in_flight: int = 0
    failed_until: float = 0.0
    failing: bool = False
    last_error: str = ""
    models_at: float = 0.0

    def usable(self, now: float) -> bool:
        """Not inside a back-off after a failure."""
        return now >= self.failed_until


S = TypeVar("S", bound=Server)


class FailoverPool(ABC, Generic[S]):
    """The configured servers of one backend, with busy counts and back-off."""

    #: How log lines name a server of this kind ("{kind} at {url}"), and where they go.
    kind = "server"
    log = logging.getLogger(__name__)

    def __init__(self, servers: list[S], *, retry_after_s: float) -> None:
        self.servers = servers
        self.retry_after_s = retry_after_s

    @abstractmethod
    async def refresh(self, server: S) -> None:
        """List what ``server`` serves now, if the cached listing is old (may mark it failed)."""

    @abstractmethod
    def serves(self, server: S, model: str) -> bool:
        """Whether the last listing of ``server`` has ``model``."""

    @abstractmethod
    def forget_models(self, server: S) -> None:
        """Drop the cached listing of ``server``: list again next time."""

    @abstractmethod
    def nowhere(self, model: str) -> Exception:
        """The error for "no server can take ``model``" (down, or not there)."""

    def describe(self, exc: BaseException | str) -> str:
        """A short text for a failure, for logs and doctor lines."""
        return exc if isinstance(exc, str) else str(exc) or type(exc).__name__

    async def acquire(self, model: str, tried: set[str]) -> S:
        """The least busy usable server with ``model`` not in ``tried``; counts it busy.

        Raises what :meth:`nowhere` gives when no server can take it.
        """
        now = time.monotonic()
        untried = [s for s in self.servers if s.url not in tried]
        # A server in its back-off is still better than none: it may be back already, and
        # the person would otherwise be told "unavailable" without anything being tried.
        usable = [s for s in untried if s.usable(now)] or untried
        if len(self.servers) > 1 and usable:
            # With one server there is nothing to choose; its own answer says "not there".
            await asyncio.gather(*(self.refresh(s) for s in usable))
            now = time.monotonic()
            usable = [s for s in usable if s.usable(now) and self.serves(s, model)]
        if not usable:
            raise self.nowhere(model)
        # min() keeps config order among equals, so an idle bot uses the first server.
        server = min(usable, key=lambda s: s.in_flight)
        server.in_flight += 1
        return server

    def release(self, server: S) -> None:
        """One generation on ``server`` ended."""
        server.in_flight -= 1

    def mark_failed(self, server: S, exc: BaseException | str) -> None:
        """Back ``server`` off; warn once per failure episode, not on every retry."""
        server.failed_until = time.monotonic() + self.retry_after_s
        self.forget_models(server)
        server.last_error = self.describe(exc)
        if server.failing:
            self.log.debug("%s at %s still failing: %s", self.kind, server.url, server.last_error)
            return
        server.failing = True
        self.log.warning(
            "%s at %s failed: %s; skipping it for %gs, then trying it again",
            self.kind,
            server.url,
            server.last_error,
            self.retry_after_s,
        )

    def mark_ok(self, server: S) -> None:
        """``server`` answered; end its failure episode."""
        server.failed_until = 0.0
        if server.failing:
            server.failing = False
            self.log.info("%s at %s answers again", self.kind, server.url)
