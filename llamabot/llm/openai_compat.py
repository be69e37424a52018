"""The OpenAI-compatible backend: ``/v1/chat/completions`` streamed through the ``openai`` client.

For servers that speak the OpenAI chat API: llama.cpp's ``llama-server``, vLLM, LM Studio,
LocalAI, or Ollama's own ``/v1``. One or more servers (``[llm.openai] base_url`` /
``base_urls``); each generation goes to the least busy server that serves the model, moves
on when a server is down before the first token, and maps every failure to a
:class:`~llamabot.llm.errors.ModelError` the person chatting can read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import openai
import pydantic

from llamabot.llm.base import (
    ChatMessage,
    Delta,
    GenerationOptions,
    Health,
    ModelInfo,
    ToolSpec,
    estimate_tokens,
)
from llamabot.llm.errors import (
    ContextTooLong,
    GenerationTimeout,
    ModelError,
    ModelUnavailable,
    ReplyCut,
)
from llamabot.llm.openai_servers import (
    NO_KEY,
    TRANSPORT_ERRORS,
    OpenAIServer,
    ServerPool,
    describe,
    served_id,
)
from llamabot.llm.watchdog import Watchdog

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

    from llamabot.config import OpenAISection

log = logging.getLogger(__name__)

FIX = "start it or fix [llm.openai] base_url / base_urls in bot.toml"


def api_base(url: str) -> str:
    """``url`` as the client's base URL: a bare ``http://host:port`` means its ``/v1``."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        return urlunsplit(parts._replace(path="/v1"))
    return url.rstrip("/")


class OpenAICompatModel:
    """A :class:`~llamabot.llm.base.ChatModel` served by OpenAI-compatible servers."""

    def __init__(
        self, section: OpenAISection, *, first_token_timeout: float, idle_timeout: float
    ) -> None:
        self.name = "openai"
        self._section = section
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        env = section.api_key_env
        key = os.environ.get(env, "").strip() if env else ""
        self._key_note = "" if key or not env else f"${env} is not set, so no API key is sent"
        self._pool = ServerPool(
            [api_base(url) for url in section.all_base_urls],
            api_key=key or NO_KEY,
            retry_after_s=section.retry_after_s,
        )

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        """Put new first-token and idle timeouts in force from the next reply on."""
        self._first_token_timeout = first_token_s
        self._idle_timeout = idle_s

    def served_model(self, requested: str) -> str:
        """The server answers with the model the persona names."""
        return requested

    def install_hint(self, model: str) -> str:
        """How a server comes to serve ``model`` under that name."""
        return (
            f"load it on the server under that name (llama-server --alias {model}, "
            f"vllm --served-model-name {model}) or set the persona's model to a name "
            "`llamabot models` lists"
        )

    @property
    def base_urls(self) -> list[str]:
        """The configured server URLs, in config order."""
        return [server.url for server in self._pool.servers]

    async def stream_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]:
        """Yield the reply's text deltas as the server produces them (``tools`` are not
        offered: see :meth:`supports_tools`).

        Before the first delta a server that is down is skipped for the next one; after
        it, nothing is re-sent (the person already sees part of the reply) and the failure
        is raised.
        """
        payload = cast(
            "list[ChatCompletionMessageParam]",
            [{"role": m.role, "content": m.content} for m in messages],
        )
        sampling = _sampling(options)
        watchdog = Watchdog(self._first_token_timeout, self._idle_timeout)
        clock = time.monotonic
        idle = self._idle_timeout
        tried: set[str] = set()
        where = "while choosing a server"
        streamed = False
        try:
            while True:
                server = await self._pool.acquire(model, tried)
                tried.add(server.url)
                where = f"from the server at {server.url}"
                try:
                    stream = await server.client.chat.completions.create(
                        model=model, messages=payload, stream=True, **sampling
                    )
                    reason: str | None = None
                    async with stream:
                        # Bare on purpose: it runs once per token.
                        async for chunk in stream:
                            choices = chunk.choices
                            if not choices:
                                continue  # a usage-only chunk
                            choice = choices[0]
                            text = choice.delta.content
                            if text:
                                streamed = True
                                # Paused while the consumer holds the delta: a slow
                                # chat-platform edit is not model silence.
                                watchdog.deadline = None
                                yield text
                                watchdog.deadline = clock() + idle
                            if choice.finish_reason:
                                reason = choice.finish_reason
                    self._pool.mark_ok(server)
                    if reason is None:
                        raise ModelError(f"the server at {server.url} ended the reply unfinished")
                    if reason == "length":
                        raise ReplyCut(f"the server at {server.url} stopped at max_tokens")
                    return
                except openai.APIStatusError as exc:
                    # Only the request itself answers with a status, so nothing was streamed.
                    if exc.status_code == 404 and _about_a_model(exc):
                        # Unloaded since we listed it, or (one server) never served.
                        self._pool.forget_models(server)
                        continue
                    if exc.status_code >= 500 or exc.status_code == 429:
                        # Overloaded or still loading the model (llama-server's 503):
                        # another server may answer now.
                        self._pool.mark_failed(server, _status_text(server, exc))
                        continue
                    raise _status_error(server, exc) from None
                except TRANSPORT_ERRORS as exc:
                    self._pool.mark_failed(server, exc)
                    if streamed:
                        raise ModelUnavailable(
                            f"the server at {server.url} dropped the reply midway: {describe(exc)}"
                        ) from None
                    continue
                except openai.APIError as exc:
                    # An error event inside the stream (no HTTP status: the 200 was sent).
                    detail = f"the server at {server.url} failed mid-reply: {exc.message}"
                    if _about_context(exc.message):
                        raise ContextTooLong(detail) from None
                    raise ModelError(detail) from None
                except (json.JSONDecodeError, pydantic.ValidationError) as exc:
                    raise ModelError(
                        f"the server at {server.url} sent a malformed event: {exc}"
                    ) from None
                finally:
                    self._pool.release(server)
        except asyncio.CancelledError:
            if watchdog.fired():
                which, limit = ("token", idle) if streamed else ("first token", watchdog.first)
                raise GenerationTimeout(f"no {which} {where} within {limit:g}s") from None
            raise
        finally:
            watchdog.close()

    async def supports_vision(self, model: str) -> bool:
        """No, for now: servers differ in how (and whether) they take images."""
        return False

    async def supports_tools(self, model: str) -> bool:
        """No, for now: servers differ in whether they parse tool calls (llama-server
        only with ``--jinja``), and ``/v1/models`` does not say."""
        return False

    def count_tokens(self, text: str) -> int:
        """An estimate; the OpenAI API has no tokenize endpoint."""
        return estimate_tokens(text)

    async def context_length(self, model: str) -> int | None:
        """The context length a server reports in ``/v1/models``, None when none does."""
        now = time.monotonic()
        for server in self._pool.servers:
            if server.models is None and not server.usable(now):
                continue
            models = await self._pool.models_on(server)
            found = served_id(model, models or {})
            if models and found is not None and models[found] is not None:
                return models[found]
        return None

    async def list_models(self) -> list[ModelInfo]:
        """Every model on every server that answers."""
        servers = self._pool.servers
        found = await asyncio.gather(*(self._pool.models_on(s, fresh=True) for s in servers))
        if all(models is None for models in found):
            raise ModelUnavailable(
                f"no OpenAI-compatible server answered ({', '.join(self.base_urls)})"
            )
        return [
            ModelInfo(name=name, context_length=length, host=server.url)
            for server, models in zip(servers, found, strict=True)
            for name, length in (models or {}).items()
        ]

    async def health(self) -> Health:
        """One check per server; ok when at least one server answers."""
        checks = await asyncio.gather(*(self._check(s) for s in self._pool.servers))
        up = sum(1 for _, ok, _ in checks if ok)
        if up:
            detail = f"{up} of {len(checks)} OpenAI-compatible servers answer"
        else:
            detail = f"no OpenAI-compatible server answers; {FIX}"
        return Health(ok=up > 0, detail=detail, checks=tuple(checks))

    async def _check(self, server: OpenAIServer) -> tuple[str, bool, str]:
        models = await self._pool.models_on(server, fresh=True)
        if models is None:
            return (
                f"openai {server.url}",
                False,
                f"cannot use the server at {server.url} ({server.last_error}); {FIX}",
            )
        note = f"; {self._key_note}" if self._key_note else ""
        return (f"openai {server.url}", True, f"answers; serves {len(models)} model(s){note}")

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        """Model name -> the answering servers that do not serve it.

        Servers that cannot be reached are left out; :meth:`health` reports them.
        """
        servers = self._pool.servers
        listed = await asyncio.gather(*(self._pool.models_on(s, fresh=True) for s in servers))
        missing: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            lacking = [
                server.url
                for server, models in zip(servers, listed, strict=True)
                if models is not None and served_id(name, models) is None
            ]
            if lacking:
                missing[name] = lacking
        return missing

    async def aclose(self) -> None:
        """Close the HTTP connections to every server."""
        await self._pool.aclose()


def _sampling(options: GenerationOptions) -> dict[str, Any]:
    """The persona's options as chat-completion parameters; absent ones are not sent."""
    mapped: dict[str, Any] = {}
    if options.temperature is not None:
        mapped["temperature"] = options.temperature
    if options.top_p is not None:
        mapped["top_p"] = options.top_p
    # Ollama's num_predict -1 (no limit) and -2 (fill the context) have no OpenAI spelling.
    if options.num_predict is not None and options.num_predict > 0:
        mapped["max_tokens"] = options.num_predict
    if options.seed is not None:
        mapped["seed"] = options.seed
    if options.stop:
        mapped["stop"] = list(options.stop)
    # Not in the OpenAI API, but llama-server, vLLM, LM Studio and LocalAI read top_k, and
    # llama-server and LM Studio repeat_penalty; sent only when a persona sets them.
    extra: dict[str, Any] = {}
    if options.top_k is not None:
        extra["top_k"] = options.top_k
    if options.repeat_penalty is not None:
        extra["repeat_penalty"] = options.repeat_penalty
    if extra:
        mapped["extra_body"] = extra
    return mapped


def _about_a_model(exc: openai.APIStatusError) -> bool:
    # A 404 naming the model (OpenAI's code "model_not_found", vLLM's "The model `x` does
    # not exist") rather than a wrong path, which needs a config fix, not another server.
    return exc.code == "model_not_found" or "model" in str(exc.message).lower()


def _about_context(message: str) -> bool:
    # vLLM: "maximum context length is ..."; llama-server: "exceeds the available context
    # size"; OpenAI: code context_length_exceeded.
    text = message.lower()
    return "context" in text and ("length" in text or "size" in text or "exceed" in text)


def _status_text(server: OpenAIServer, exc: openai.APIStatusError) -> str:
    return f"the server at {server.url} answered {exc.status_code}: {exc.message}"


def _status_error(server: OpenAIServer, exc: openai.APIStatusError) -> ModelError:
    detail = _status_text(server, exc)
    if exc.code == "context_length_exceeded" or _about_context(str(exc.message)):
        return ContextTooLong(detail)
    if exc.status_code in (401, 403):
        return ModelUnavailable(
            f"{detail}; set the key in the variable [llm.openai] api_key_env names"
        )
    if exc.status_code == 404:
        return ModelUnavailable(
            f"{detail}; check [llm.openai] base_url (for most servers it ends in /v1)"
        )
    return ModelError(detail)
