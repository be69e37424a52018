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
from llamabot.llm.failover import FailoverPool, Server

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


@dataclass(eq=False, kw_only=True)
class OpenAIServer(Server):
    """One OpenAI-compatible server, its client, and what it served when last listed."""

    client: openai.AsyncOpenAI
    # Model id -> context length (None when the server does not say); None: not listed yet.
    models: dict[str, int | None] | None = None

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


class ServerPool(FailoverPool[OpenAIServer]):
    """The configured servers, with busy counts, back-off and a cache of what they serve."""

    kind = "OpenAI-compatible server"
    log = log

    def __init__(self, urls: Iterable[str], *, api_key: str, retry_after_s: float) -> None:
        timeout = openai.Timeout(None, connect=CONNECT_TIMEOUT_S)
        servers = [
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
        super().__init__(servers, retry_after_s=retry_after_s)

    async def refresh(self, server: OpenAIServer) -> None:
        await self.models_on(server)

    def serves(self, server: OpenAIServer, model: str) -> bool:
        return server.lists(model)

    def describe(self, exc: BaseException | str) -> str:
        return describe(exc)

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

    def nowhere(self, model: str) -> Exception:
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
