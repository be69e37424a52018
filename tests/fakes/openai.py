"""A loopback OpenAI-compatible server, shaped like llama-server, vLLM or LM Studio.

The real ``openai`` client talks to it unmodified. It answers ``GET /v1/models`` and
``POST /v1/chat/completions`` (an SSE stream of ``data: {...}`` chunks ending in
``data: [DONE]``, or one JSON object), records every request, and has switches for the ways
a real server fails: an unknown model (404 with an OpenAI-style error body), an error event
mid-stream, a slow or stalled stream, a connection closed mid-response, a status answer
(e.g. 503 while loading), and going down and coming back on the same port.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.ollama import split_tokens

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

DEFAULT_REPLY = "Hello! I am a fake Llama, answering from a loopback OpenAI-compatible server."


@dataclass
class ServedModel:
    """One model as ``/v1/models`` lists it; ``extra`` holds server-specific fields."""

    id: str
    extra: dict[str, Any] = field(default_factory=dict)


def llama_server_model(name: str, n_ctx_train: int = 131_072) -> ServedModel:
    """An entry the way llama.cpp's llama-server lists its model (``meta.n_ctx_train``)."""
    return ServedModel(
        name,
        {"meta": {"vocab_type": 2, "n_vocab": 128_256, "n_ctx_train": n_ctx_train}},
    )


def vllm_model(name: str, max_model_len: int = 32_768) -> ServedModel:
    """An entry the way vLLM lists a model (``max_model_len``)."""
    return ServedModel(name, {"root": name, "parent": None, "max_model_len": max_model_len})


class FakeOpenAI:
    """An aiohttp OpenAI-compatible server on 127.0.0.1; ``async with FakeOpenAI() as fake``.

    Behaviour switches (plain attributes, change them between requests):

    - ``reply`` / ``tokens``: what a chat completion answers (``tokens`` wins when set).
    - ``first_token_delay`` / ``token_delay``: seconds before the first / each later delta.
    - ``chunks_per_write``: SSE events per socket write, so a fast stream is not bound by
      one syscall per token.
    - ``stall_after``: after that many deltas the stream hangs until :meth:`release` or
      :meth:`stop` (0 hangs before the first token).
    - ``error_after``: after that many deltas send an ``{"error": {...}}`` event and end.
    - ``close_after``: after that many deltas drop the connection without finishing.
    - ``status``: answer every chat completion with this HTTP status and an error body.
    - ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
    """

    def __init__(self, models: Iterable[str | ServedModel] = ("llama3.2",)) -> None:
        self.models: dict[str, ServedModel] = {}
        for model in models:
            entry = model if isinstance(model, ServedModel) else ServedModel(model)
            self.models[entry.id] = entry
        self.reply = DEFAULT_REPLY
        self.tokens: list[str] | None = None
        self.first_token_delay = 0.0
        self.token_delay = 0.0
        self.chunks_per_write = 1
        self.stall_after: int | None = None
        self.error_after: int | None = None
        self.error_message = "an error was encountered while running the model"
        self.close_after: int | None = None
        self.status: int | None = None
        self.api_key: str | None = None

        self.requests: list[str] = []
        self.chat_requests: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        self.client_ports: list[int] = []  # per request: one port = one kept-alive connection
        self.deltas_sent = 0
        self.active_streams = 0

        self.port = 0
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._release = asyncio.Event()
        self._changed: asyncio.Condition | None = None

    # lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL a client is given (with ``/v1``, as these servers document it)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on a free port, or on the same port again after :meth:`stop`."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner
        self._release = asyncio.Event()

    async def stop(self) -> None:
        """Go down like a killed server: open streams are cut, new connections refused."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._release.set()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await runner.cleanup()

    def release(self) -> None:
        """Let the streams stalled so far (``stall_after``) go on; later ones stall again."""
        self._release.set()
        self._release = asyncio.Event()

    # observation ---------------------------------------------------------------------

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def _notify(self) -> None:
        changed = self._condition()
        async with changed:
            changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until ``predicate()`` holds; re-checked on every request and every delta."""
        changed = self._condition()
        async with asyncio.timeout(timeout), changed:
            await changed.wait_for(predicate)

    def count(self, path: str) -> int:
        """How many requests reached ``path`` (e.g. ``"/v1/models"``)."""
        return sum(1 for seen in self.requests if seen.endswith(" " + path))

    # handlers ------------------------------------------------------------------------

    async def _enter(self, request: web.Request) -> web.Response | None:
        self.requests.append(f"{request.method} {request.path}")
        authorization = request.headers.get("Authorization", "")
        self.authorizations.append(authorization)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else 0)
        await self._notify()
        if self.api_key is not None and authorization != f"Bearer {self.api_key}":
            return _error(401, "Invalid API Key", "authentication_error", "invalid_api_key")
        return None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        refused = await self._enter(request)
        if refused is not None:
            return refused
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": m.id,
                        "object": "model",
                        "created": 1_735_689_600,
                        "owned_by": "llamacpp",
                        **m.extra,
                    }
                    for m in self.models.values()
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._chat_inner(request)
        finally:
            self._handlers.discard(task)

    async def _chat_inner(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.chat_requests.append(body)
        refused = await self._enter(request)
        if refused is not None:
            return refused
        if self.status is not None:
            return _error(self.status, f"fake status {self.status}", "server_error", None)
        name = body.get("model") or ""
        if name not in self.models:
            return _error(
                404,
                f"The model `{name}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        tokens = list(self.tokens) if self.tokens is not None else split_tokens(self.reply)
        # Like every such server: max_tokens cuts the answer and finish_reason says "length".
        reason = "stop"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, reason = tokens[:limit], "length"
        stop = body.get("stop") or []
        for word in [stop] if isinstance(stop, str) else stop:
            text = "".join(tokens)
            if word and word in text:
                tokens, reason = split_tokens(text[: text.index(word)]), "stop"
        chunk_id = f"chatcmpl-{len(self.chat_requests)}"
        if not body.get("stream"):
            await self._sleep(self.first_token_delay)
            return web.json_response(
                {
                    "id": chunk_id,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": name,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(tokens)},
                            "finish_reason": reason,
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": len(tokens)},
                }
            )
        return await self._stream(request, chunk_id, name, tokens, reason)

    async def _stream(
        self, request: web.Request, chunk_id: str, name: str, tokens: list[str], reason: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        self.active_streams += 1
        created = int(time.time())

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            chunk = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return _event(chunk)

        pending: list[bytes] = [event({"role": "assistant", "content": ""})]
        try:
            for index, token in enumerate(tokens):
                if index == self.stall_after:
                    await self._flush(response, pending)
                    await self._release.wait()
                if index == self.error_after:
                    error = {"message": self.error_message, "type": "server_error", "code": 500}
                    pending.append(_event({"error": error}))
                    await self._flush(response, pending)
                    await response.write_eof()
                    return response
                if index == self.close_after:
                    await self._flush(response, pending)
                    self._drop(request)
                    return response
                await self._sleep(self.first_token_delay if index == 0 else self.token_delay)
                pending.append(event({"content": token}))
                self.deltas_sent += 1
                # The first delta goes out alone so time-to-first-token is not batched.
                if index == 0 or len(pending) >= self.chunks_per_write:
                    await self._flush(response, pending)
            if self.stall_after is not None and self.stall_after >= len(tokens):
                await self._flush(response, pending)
                await self._release.wait()
            pending.append(event({}, reason))
            pending.append(b"data: [DONE]\n\n")
            await self._flush(response, pending)
            await response.write_eof()
            return response
        except ConnectionResetError:
            return response  # the client went away, as a server sees a cancelled request
        finally:
            self.active_streams -= 1
            # Uncontended, so it completes without suspending even in a cancelled handler.
            await self._notify()

    async def _flush(self, response: web.StreamResponse, pending: list[bytes]) -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            await response.write(data)
            await self._notify()

    def _drop(self, request: web.Request) -> None:
        # An incomplete chunked body: what a crashed server looks like to an HTTP/1.1 client.
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    # OpenAI's error body; vLLM and llama-server send the same shape.
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status=status,
    )
