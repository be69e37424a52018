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
from llamabot.llm.failover import FailoverPool, Server

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


@dataclass(eq=False, kw_only=True)
class OllamaHost(Server):
    """One Ollama server, its client, and the models it had when last listed."""

    client: ollama.AsyncClient
    models: frozenset[str] | None = None


class HostPool(FailoverPool[OllamaHost]):
    """The configured Ollama servers, with busy counts, back-off and a tags cache."""

    kind = "Ollama"
    log = log

    def __init__(self, urls: Iterable[str], *, retry_after_s: float) -> None:
        timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT_S)
        hosts = [
            OllamaHost(url=url, client=ollama.AsyncClient(host=url, timeout=timeout))
            for url in dict.fromkeys(urls)
        ]
        super().__init__(hosts, retry_after_s=retry_after_s)

    @property
    def hosts(self) -> list[OllamaHost]:
        return self.servers

    async def refresh(self, server: OllamaHost) -> None:
        await self.models_on(server)

    def serves(self, server: OllamaHost, model: str) -> bool:
        return server.models is not None and model_key(model) in server.models

    def describe(self, exc: BaseException | str) -> str:
        return _describe(exc) if isinstance(exc, BaseException) else exc

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

    def nowhere(self, model: str) -> Exception:
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
