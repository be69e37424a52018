"""Which Ollama server takes the next generation: one that has the model, least busy first.

A server that failed is skipped until ``retry_after_s`` has passed, then tried again, so a
restarted server is used again without restarting the bot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
import ollama

from llamabot.llm.errors import ModelNotFound, ModelUnavailable

log = logging.getLogger(__name__)

# /api/tags is cheap but a round trip; a pull on a server shows up within this long.
TAGS_TTL_S = 10.0
# Bounds the metadata calls (/api/tags, /api/show); generation has its own timeouts.
PROBE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0

# What a server that is down, unreachable or dropping connections raises through the
# ollama client: httpx errors from streams, ConnectionError from non-streaming calls.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TransportError,
    ConnectionError,
    TimeoutError,
)


def model_key(name: str) -> str:
    """The name Ollama stores a model under: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass(eq=False)
class OllamaHost:
    """One Ollama server and what llamabot knows about it right now."""

    url: str
    client: ollama.AsyncClient
    in_flight: int = 0
    failed_until: float = 0.0
    failing: bool = False
    last_error: str = ""
    models: frozenset[str] | None = None
    models_at: float = 0.0

    def usable(self, now: float) -> bool:
        """Not inside a back-off after a failure."""
        return now >= self.failed_until


class HostPool:
    """The configured Ollama servers, with busy counts, back-off and a tags cache."""

    def __init__(self, urls: Iterable[str], *, retry_after_s: float) -> None:
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_S)
        self.hosts = [
            OllamaHost(url=url, client=ollama.AsyncClient(host=url, timeout=timeout))
            for url in dict.fromkeys(urls)
        ]
        self.retry_after_s = retry_after_s

    async def acquire(self, model: str, tried: set[str]) -> OllamaHost:
        """The least busy usable server with ``model`` not in ``tried``; counts it busy.

        Raises :class:`ModelNotFound` when every server answered without the model and
        :class:`ModelUnavailable` when the servers that might have it are down.
        """
        now = time.monotonic()
        untried = [h for h in self.hosts if h.url not in tried]
        # A server in its back-off is still better than none: it may be back already, and
        # the person would otherwise be told "unavailable" without anything being tried.
        usable = [h for h in untried if h.usable(now)] or untried
        if len(self.hosts) > 1 and usable:
            # With one server there is nothing to choose; its 404 says "not pulled".
            await asyncio.gather(*(self.models_on(h) for h in usable))
            key = model_key(model)
            now = time.monotonic()
            usable = [
                h for h in usable if h.usable(now) and h.models is not None and key in h.models
            ]
        if not usable:
            raise self._nowhere(model)
        # min() keeps config order among equals, so an idle bot uses the first server.
        host = min(usable, key=lambda h: h.in_flight)
        host.in_flight += 1
        return host

    def release(self, host: OllamaHost) -> None:
        """One generation on ``host`` ended."""
        host.in_flight -= 1

    def mark_failed(self, host: OllamaHost, exc: BaseException) -> None:
        """Back ``host`` off; warn once per failure episode, not on every retry."""
        host.failed_until = time.monotonic() + self.retry_after_s
        host.models = None
        host.last_error = _describe(exc)
        if host.failing:
            log.debug("Ollama at %s still failing: %s", host.url, host.last_error)
            return
        host.failing = True
        log.warning(
            "Ollama at %s failed: %s; skipping it for %gs, then trying it again",
            host.url,
            host.last_error,
            self.retry_after_s,
        )

    def mark_ok(self, host: OllamaHost) -> None:
        """``host`` answered; end its failure episode."""
        host.failed_until = 0.0
        if host.failing:
            host.failing = False
            log.info("Ollama at %s answers again", host.url)

    def forget_models(self, host: OllamaHost) -> None:
        """``host`` said a model it listed is missing: list its models again next time."""
        host.models = None

    async def models_on(self, host: OllamaHost, *, fresh: bool = False) -> frozenset[str] | None:
        """The models pulled on ``host`` (cached briefly), or None when it cannot be reached."""
        now = time.monotonic()
        if not fresh and host.models is not None and now - host.models_at < TAGS_TTL_S:
            return host.models
        await self.listing(host)
        return host.models

    async def listing(self, host: OllamaHost) -> ollama.ListResponse | None:
        """``/api/tags`` of ``host`` (refreshing the cache), or None when it cannot answer."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                listing = await host.client.list()
        except TRANSPORT_ERRORS as exc:
            self.mark_failed(host, exc)
            return None
        except ollama.ResponseError as exc:
            host.last_error = f"/api/tags answered {exc.status_code}: {exc.error}"
            log.warning("Ollama at %s could not list its models: %s", host.url, exc.error)
            return None
        self.mark_ok(host)
        host.models = frozenset(model_key(m.model) for m in listing.models if m.model)
        host.models_at = time.monotonic()
        return listing

    def _nowhere(self, model: str) -> Exception:
        down = [h for h in self.hosts if h.failing]
        if down:
            what = "; ".join(f"{h.url} ({h.last_error})" for h in down)
            return ModelUnavailable(f"no reachable Ollama server has {model!r}; down: {what}")
        urls = ", ".join(h.url for h in self.hosts)
        return ModelNotFound(model, f"model {model!r} is not pulled on any Ollama server ({urls})")

    async def aclose(self) -> None:
        """Close every server's HTTP connections."""
        for host in self.hosts:
            await host.client.close()  # type: ignore[no-untyped-call]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # The ollama client's own message points at the download page, not at the host.
    if isinstance(exc, ConnectionError) and "Failed to connect" in text:
        return "cannot connect"
    return text
