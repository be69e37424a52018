"""The Ollama backend: ``/api/chat`` streamed through the official ``ollama`` client.

One or more servers (``[llm.ollama] host`` / ``hosts``); each generation goes to the least
busy server that has the model, moves on when a server is down before the first token, and
maps every failure to a :class:`~llamabot.llm.errors.ModelError` the person chatting can read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import httpx
import ollama
import pydantic

from llamabot.llm.base import (
    ChatMessage,
    Delta,
    GenerationOptions,
    Health,
    ModelInfo,
    ToolCall,
    ToolSpec,
    estimate_tokens,
)
from llamabot.llm.errors import GenerationTimeout, ModelError, ModelUnavailable, ReplyCut
from llamabot.llm.ollama_hosts import (
    PROBE_TIMEOUT_S,
    TRANSPORT_ERRORS,
    HostPool,
    OllamaHost,
    model_key,
)
from llamabot.llm.watchdog import Watchdog

if TYPE_CHECKING:
    from llamabot.config import OllamaSection

log = logging.getLogger(__name__)

_SHOW_ERRORS: tuple[type[BaseException], ...] = (ollama.ResponseError, *TRANSPORT_ERRORS)
# Anything but an Ollama listing means "no Ollama there": wrong port, wrong service, bad URL.
_PROBE_ERRORS: tuple[type[BaseException], ...] = (
    *_SHOW_ERRORS,
    httpx.InvalidURL,
    ValueError,
    OSError,
)
_SAMPLING = ("temperature", "top_p", "top_k", "repeat_penalty", "num_predict", "seed")


class OllamaModel:
    """A :class:`~llamabot.llm.base.ChatModel` served by one or more Ollama servers."""

    def __init__(
        self, section: OllamaSection, *, first_token_timeout: float, idle_timeout: float
    ) -> None:
        self.name = "ollama"
        self._section = section
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._pool = HostPool(section.all_hosts, retry_after_s=section.retry_after_s)
        self._context: dict[tuple[str, str], int | None] = {}
        self._capability_cache: dict[str, frozenset[str]] = {}

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        """Put new first-token and idle timeouts in force from the next reply on."""
        self._first_token_timeout = first_token_s
        self._idle_timeout = idle_s

    def served_model(self, requested: str) -> str:
        """Ollama serves the model the persona names."""
        return requested

    def install_hint(self, model: str) -> str:
        """The pull that installs ``model``."""
        return f"run: ollama pull {model}"

    @property
    def hosts(self) -> list[str]:
        """The configured server URLs, in config order."""
        return [host.url for host in self._pool.hosts]

    async def stream_chat(
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]:
        """Yield the reply's text deltas as Ollama produces them, and its tool calls.

        Before the first delta a server that is down is skipped for the next one; after it,
        nothing is re-sent (the person already sees part of the reply) and the failure is
        raised.
        """
        payload = [_ollama_message(m) for m in messages]
        offered = [_ollama_tool(tool) for tool in tools] or None
        keep_alive = options.keep_alive or self._section.keep_alive
        watchdog = Watchdog(self._first_token_timeout, self._idle_timeout)
        clock = time.monotonic
        idle = self._idle_timeout
        tried: set[str] = set()
        where = "while choosing a server"
        streamed = False
        try:
            while True:
                host = await self._pool.acquire(model, tried)
                tried.add(host.url)
                where = f"from Ollama at {host.url}"
                try:
                    num_ctx = options.num_ctx or self._capped(
                        await self._context_length_on(host, model)
                    )
                    stream = cast(
                        AsyncGenerator[ollama.ChatResponse, None],
                        await host.client.chat(
                            model=model,
                            messages=payload,
                            stream=True,
                            options=_ollama_options(options, num_ctx),
                            keep_alive=keep_alive,
                            tools=offered,
                        ),
                    )
                    try:
                        # The loop stays this bare because it runs once per token. It reads
                        # to the end of the body, not just to `done`: a response closed early
                        # costs httpx its keep-alive connection.
                        part = None
                        async for part in stream:
                            text = part.message.content
                            if text:
                                streamed = True
                                # Paused while the consumer holds the delta: a slow
                                # chat-platform edit is not model silence.
                                watchdog.deadline = None
                                yield text
                                watchdog.deadline = clock() + idle
                            if part.message.tool_calls:
                                streamed = True
                                watchdog.deadline = None
                                for call in part.message.tool_calls:
                                    yield _tool_call(call)
                                watchdog.deadline = clock() + idle
                        if part is None or not part.done:
                            raise ModelError(f"Ollama at {host.url} ended the reply unfinished")
                    finally:
                        await stream.aclose()
                    self._pool.mark_ok(host)
                    if part.done_reason == "length":
                        raise ReplyCut(f"Ollama at {host.url} stopped at num_predict")
                    return
                except ollama.ResponseError as exc:
                    if exc.status_code == 404 and not streamed:
                        # Deleted since we listed it, or (one server) never pulled.
                        self._pool.forget_models(host)
                        continue
                    raise ModelError(f"Ollama at {host.url}: {exc.error}") from None
                except TRANSPORT_ERRORS as exc:
                    self._pool.mark_failed(host, exc)
                    if streamed:
                        raise ModelUnavailable(
                            f"Ollama at {host.url} dropped the reply midway: {exc}"
                        ) from None
                    continue
                except (json.JSONDecodeError, pydantic.ValidationError) as exc:
                    raise ModelError(f"Ollama at {host.url} sent a malformed line: {exc}") from None
                finally:
                    self._pool.release(host)
        except asyncio.CancelledError:
            if watchdog.fired():
                which, limit = ("token", idle) if streamed else ("first token", watchdog.first)
                raise GenerationTimeout(f"no {which} {where} within {limit:g}s") from None
            raise
        finally:
            watchdog.close()

    async def supports_tools(self, model: str) -> bool:
        """Whether ``/api/show`` lists ``tools`` among the model's capabilities.

        Ollama refuses a request with tools for a model without them.
        """
        return "tools" in await self._capabilities(model)

    async def supports_vision(self, model: str) -> bool:
        """Whether ``/api/show`` lists ``vision`` among the model's capabilities."""
        return "vision" in await self._capabilities(model)

    async def _capabilities(self, model: str) -> frozenset[str]:
        """The model's capabilities from the first server that shows it (cached); none
        for an unknown model or when no server answers."""
        key = model_key(model)
        known = self._capability_cache.get(key)
        if known is not None:
            return known
        now = time.monotonic()
        for host in self._pool.hosts:
            if not host.usable(now):
                continue
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    shown = await host.client.show(model)
            except _SHOW_ERRORS:
                continue
            found = frozenset(shown.capabilities or ())
            self._capability_cache[key] = found
            return found
        return frozenset()

    def count_tokens(self, text: str) -> int:
        """An estimate; Ollama has no tokenize endpoint."""
        return estimate_tokens(text)

    async def context_length(self, model: str) -> int | None:
        """The model's context length from ``/api/show`` (cached), None when unknown."""
        key = model_key(model)
        for host in self._pool.hosts:
            if (host.url, key) in self._context:
                return self._capped(self._context[host.url, key])
        now = time.monotonic()
        for host in self._pool.hosts:
            if not host.usable(now):
                continue
            try:
                return self._capped(await self._context_length_on(host, model))
            except ollama.ResponseError as exc:
                if exc.status_code != 404:
                    log.warning("Ollama at %s cannot show %s: %s", host.url, model, exc.error)
            except TRANSPORT_ERRORS as exc:
                self._pool.mark_failed(host, exc)
        return None

    async def _context_length_on(self, host: OllamaHost, model: str) -> int | None:
        key = (host.url, model_key(model))
        if key in self._context:
            return self._context[key]
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            shown = await host.client.show(model)
        length = _context_from(shown.modelinfo)
        self._context[key] = length
        return length

    def _capped(self, length: int | None) -> int | None:
        # Ollama allocates the KV cache for the whole num_ctx: a 128k-token model would
        # take gigabytes, so [llm.ollama] max_num_ctx bounds what llamabot asks for.
        return None if length is None else min(length, self._section.max_num_ctx)

    async def list_models(self) -> list[ModelInfo]:
        """Every model on every server that answers."""
        found = await asyncio.gather(*(self._models_on(host) for host in self._pool.hosts))
        if all(models is None for models in found):
            raise ModelUnavailable(f"no Ollama server answered ({', '.join(self.hosts)})")
        return [info for models in found if models for info in models]

    async def _models_on(self, host: OllamaHost) -> list[ModelInfo] | None:
        listing = await self._pool.listing(host)
        if listing is None:
            return None
        models = []
        for entry in listing.models:
            name = entry.model or ""
            try:
                length = await self._context_length_on(host, name)
            except _SHOW_ERRORS:
                length = None
            models.append(
                ModelInfo(
                    name=name,
                    size_bytes=int(entry.size) if entry.size is not None else None,
                    quantization=entry.details.quantization_level if entry.details else None,
                    context_length=length,
                    host=host.url,
                )
            )
        return models

    async def health(self) -> Health:
        """One check per server; ok when at least one server answers."""
        checks = await asyncio.gather(*(self._check(host) for host in self._pool.hosts))
        up = sum(1 for _, ok, _ in checks if ok)
        if up:
            detail = f"{up} of {len(checks)} Ollama servers answer"
        else:
            detail = (
                "no Ollama server answers; start it with `ollama serve` or fix "
                "[llm.ollama] host / hosts in bot.toml"
            )
        return Health(ok=up > 0, detail=detail, checks=tuple(checks))

    async def _check(self, host: OllamaHost) -> tuple[str, bool, str]:
        listing = await self._pool.listing(host)
        if listing is None:
            return (
                f"ollama {host.url}",
                False,
                f"cannot reach Ollama at {host.url} ({host.last_error}); start it there with "
                "`ollama serve` or fix [llm.ollama] host / hosts in bot.toml",
            )
        return (f"ollama {host.url}", True, f"answers; {len(listing.models)} models pulled")

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        """Model name -> the answering servers that lack it (for "run `ollama pull NAME`").

        Servers that cannot be reached are left out; :meth:`health` reports them.
        """
        hosts = self._pool.hosts
        pulled = await asyncio.gather(*(self._pool.models_on(h, fresh=True) for h in hosts))
        missing: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            key = model_key(name)
            lacking = [
                host.url
                for host, models in zip(hosts, pulled, strict=True)
                if models is not None and key not in models
            ]
            if lacking:
                missing[name] = lacking
        return missing

    async def aclose(self) -> None:
        """Close the HTTP connections to every server."""
        await self._pool.aclose()


async def ollama_answers(host: str, timeout: float = 1.0) -> bool:  # noqa: ASYNC109
    """Whether an Ollama server answers at ``host`` within ``timeout`` seconds."""
    client = ollama.AsyncClient(host=host, timeout=timeout)
    try:
        async with asyncio.timeout(timeout):
            await client.list()
    except _PROBE_ERRORS:
        return False
    else:
        return True
    finally:
        await client.close()  # type: ignore[no-untyped-call]


def _ollama_message(message: ChatMessage) -> dict[str, Any]:
    """A turn as ``/api/chat`` takes it: tool calls on the assistant's turn, and each
    result as a ``tool`` turn naming its tool."""
    payload: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        payload["tool_calls"] = [
            {"function": {"name": call.name, "arguments": dict(call.arguments)}}
            for call in message.tool_calls
        ]
    if message.tool_name is not None:
        payload["tool_name"] = message.tool_name
    if message.images:
        payload["images"] = list(message.images)  # the client sends them base64-encoded
    return payload


def _ollama_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": dict(tool.parameters),
        },
    }


def _tool_call(call: ollama.Message.ToolCall) -> ToolCall:
    # Ollama gives calls no id; one is made so that a result can name its call.
    return ToolCall(
        id=f"call_{secrets.token_hex(6)}",
        name=call.function.name,
        arguments=dict(call.function.arguments or {}),
    )


def _ollama_options(options: GenerationOptions, num_ctx: int | None) -> dict[str, Any]:
    mapped: dict[str, Any] = {}
    for name in _SAMPLING:
        value = getattr(options, name)
        if value is not None:
            mapped[name] = value
    if num_ctx is not None:
        mapped["num_ctx"] = num_ctx
    if options.stop:
        mapped["stop"] = list(options.stop)
    return mapped


def _context_from(model_info: Mapping[str, Any] | None) -> int | None:
    if not model_info:
        return None
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    return value if isinstance(value, int) and value > 0 else None
