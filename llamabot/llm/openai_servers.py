"""Which OpenAI-compatible server takes the next generation, and what each one serves.

The same rules as the Ollama hosts (``ollama_hosts.py``): the least busy server that lists
the model, a failed server skipped for ``retry_after_s`` and then tried again, and one
warning per failure episode. What a server serves comes from ``GET /v1/models``, with the
context length where the server reports one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import openai

from llamabot.llm.errors import ModelNotFound, ModelUnavailable

log = logging.getLogger(__name__)

# /v1/models is cheap but a round trip; a model loaded on a server shows up within this long.
MODELS_TTL_S = 10.0
# Bounds /v1/models; generation has its own first-token and idle timeouts.
PROBE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# The client insists on a key; servers started without authentication ignore it.
NO_KEY = "sk-no-key-required"

# What a server that is down, unreachable or dropping connections raises through the
# openai client (APITimeoutError is a kind of APIConnectionError).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,
    ConnectionError,
    TimeoutError,
)

# Where servers put the context length in a /v1/models entry: vLLM says max_model_len,
# llama.cpp's llama-server meta.n_ctx_train, LM Studio, LocalAI and routers context_length.
_CONTEXT_KEYS = ("context_length", "max_model_len", "max_context_length", "context_window")


@dataclass(eq=False)
class OpenAIServer:
    """One OpenAI-compatible server and what llamabot knows about it right now."""

    url: str
    client: openai.AsyncOpenAI
    in_flight: int = 0
    failed_until: float = 0.0
    failing: bool = False
    last_error: str = ""
    # Model id -> context length (None when the server does not say); None: not listed yet.
    models: dict[str, int | None] | None = None
    models_at: float = 0.0

    def usable(self, now: float) -> bool:
        """Not inside a back-off after a failure."""
        return now >= self.failed_until

    def lists(self, model: str) -> bool:
        """Whether the last listing names ``model`` (Ollama's ``/v1`` adds ``:latest``)."""
        return self.models is not None and served_id(model, self.models) is not None


def served_id(model: str, models: Mapping[str, object]) -> str | None:
    """The listed id that ``model`` names, or None."""
    if model in models:
        return model
    latest = f"{model}:latest"
    return latest if latest in models else None


def context_from(entry: Mapping[str, Any]) -> int | None:
    """The context length a ``/v1/models`` entry reports, or None."""
    for key in _CONTEXT_KEYS:
        value = entry.get(key)
        if isinstance(value, int) and value > 0:
            return value
    meta = entry.get("meta")
    if isinstance(meta, Mapping):
        value = meta.get("n_ctx_train")
        if isinstance(value, int) and value > 0:
            return value
    return None


class ServerPool:
    """The configured servers, with busy counts, back-off and a cache of what they serve."""

    def __init__(self, urls: Iterable[str], *, api_key: str, retry_after_s: float) -> None:
        timeout = openai.Timeout(None, connect=CONNECT_TIMEOUT_S)
        self.servers = [
            OpenAIServer(
                url=url,
                # Failover, back-off and timeouts are ours: the client's own retries would
                # hold a reply for seconds before the next server is tried.
                client=openai.AsyncOpenAI(
                    base_url=url, api_key=api_key, timeout=timeout, max_retries=0
                ),
            )
            for url in dict.fromkeys(urls)
        ]
        self.retry_after_s = retry_after_s

    async def acquire(self, model: str, tried: set[str]) -> OpenAIServer:
        """The least busy usable server serving ``model`` not in ``tried``; counts it busy.

        Raises :class:`ModelNotFound` when every server answered without the model and
        :class:`ModelUnavailable` when the servers that might serve it are down.
        """
        now = time.monotonic()
        untried = [s for s in self.servers if s.url not in tried]
        # A server in its back-off is still better than none: it may be back already.
        usable = [s for s in untried if s.usable(now)] or untried
        if len(self.servers) > 1 and usable:
            # With one server there is nothing to choose; its 404 says "not served".
            await asyncio.gather(*(self.models_on(s) for s in usable))
            now = time.monotonic()
            usable = [s for s in usable if s.usable(now) and s.lists(model)]
        if not usable:
            raise self._nowhere(model)
        # min() keeps config order among equals, so an idle bot uses the first server.
        server = min(usable, key=lambda s: s.in_flight)
        server.in_flight += 1
        return server

    def release(self, server: OpenAIServer) -> None:
        """One generation on ``server`` ended."""
        server.in_flight -= 1

    def mark_failed(self, server: OpenAIServer, exc: BaseException | str) -> None:
        """Back ``server`` off; warn once per failure episode, not on every retry."""
        server.failed_until = time.monotonic() + self.retry_after_s
        server.models = None
        server.last_error = describe(exc)
        if server.failing:
            log.debug("server at %s still failing: %s", server.url, server.last_error)
            return
        server.failing = True
        log.warning(
            "OpenAI-compatible server at %s failed: %s; skipping it for %gs, then trying again",
            server.url,
            server.last_error,
            self.retry_after_s,
        )

    def mark_ok(self, server: OpenAIServer) -> None:
        """``server`` answered; end its failure episode."""
        server.failed_until = 0.0
        if server.failing:
            server.failing = False
            log.info("OpenAI-compatible server at %s answers again", server.url)

    def forget_models(self, server: OpenAIServer) -> None:
        """``server`` said a model it listed is missing: list its models again next time."""
        server.models = None

    async def models_on(
        self, server: OpenAIServer, *, fresh: bool = False
    ) -> dict[str, int | None] | None:
        """What ``server`` serves (cached briefly), or None when it cannot answer."""
        now = time.monotonic()
        if not fresh and server.models is not None and now - server.models_at < MODELS_TTL_S:
            return server.models
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                page = await server.client.models.list()
        except TRANSPORT_ERRORS as exc:
            self.mark_failed(server, exc)
            return None
        except openai.APIStatusError as exc:
            server.last_error = f"/models answered {exc.status_code}: {exc.message}"
            if exc.status_code in (401, 403):
                server.last_error += "; check [llm.openai] api_key_env and that variable"
            log.warning("server at %s could not list its models: %s", server.url, exc.message)
            return None
        except (openai.APIError, json.JSONDecodeError) as exc:
            # Something answered, but not an OpenAI-compatible server (a wrong port or path).
            server.last_error = f"/models gave no model list ({describe(exc)})"
            return None
        self.mark_ok(server)
        models: dict[str, int | None] = {}
        for entry in page.data:
            models[entry.id] = context_from(entry.model_extra or {})
        server.models = models
        server.models_at = time.monotonic()
        return models

    def _nowhere(self, model: str) -> Exception:
        down = [s for s in self.servers if s.failing]
        if down:
            what = "; ".join(f"{s.url} ({s.last_error})" for s in down)
            return ModelUnavailable(f"no reachable server serves {model!r}; down: {what}")
        urls = ", ".join(s.url for s in self.servers)
        return ModelNotFound(
            model,
            f"model {model!r} is not served by any OpenAI-compatible server ({urls})",
            user_message=(
                f"The model {model} isn't served by this bot's model server; an admin can "
                "see the names it serves with `llamabot models`."
            ),
        )

    async def aclose(self) -> None:
        """Close every server's HTTP connections."""
        for server in self.servers:
            await server.client.close()


def describe(exc: BaseException | str) -> str:
    """A short text for a failure, for logs and doctor lines."""
    if isinstance(exc, str):
        return exc
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    # "Connection error." alone does not say refused from reset from unresolvable.
    if isinstance(exc, openai.APIConnectionError) and cause is not None and str(cause):
        return f"{text.rstrip('.')}: {cause}"
    return text
