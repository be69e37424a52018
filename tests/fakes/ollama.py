"""A loopback Ollama server speaking the wire protocol of ``ollama serve``.

The real ``ollama`` client talks to it unmodified. It answers ``/api/version``,
``/api/tags``, ``/api/show``, ``/api/ps`` and ``/api/chat`` (NDJSON stream or one object)
with the shapes the Ollama server sends, records every request, and has switches for the
ways a real server fails: an unknown model (404), an ``{"error": ...}`` line mid-stream, a
slow or stalled stream, a connection closed mid-response, and going down and coming back
on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

DEFAULT_REPLY = "Hello! I am a fake Llama, answering from a loopback Ollama server."


@dataclass
class FakeModel:
    """One pulled model, as ``/api/tags`` and ``/api/show`` describe it."""

    name: str
    context_length: int = 131_072
    architecture: str = "llama"
    size: int = 2_019_393_189
    quantization: str = "Q4_K_M"
    parameter_size: str = "3.2B"
    family: str = "llama"
    capabilities: tuple[str, ...] = ("completion", "tools")
    digest: str = "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72"

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization,
        }


def full_name(name: str) -> str:
    """Ollama's default tag: ``llama3.2`` means ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def split_tokens(text: str) -> list[str]:
    """Word-sized deltas (each keeps its trailing space) that join back to ``text``."""
    return re.findall(r"\S+\s*|\s+", text)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOllama:
    """An aiohttp Ollama server on 127.0.0.1; use ``async with FakeOllama() as fake``.

    Behaviour switches (plain attributes, change them between requests):

    - ``reply`` / ``tokens``: what ``/api/chat`` answers (``tokens`` wins when set).
    - ``first_token_delay`` / ``token_delay``: seconds before the first / each later delta.
    - ``rate``: a fixed rate in tokens per second (overrides ``token_delay``).
    - ``chunks_per_write``: NDJSON lines per socket write, so a fast stream is not bound
      by one syscall per token.
    - ``stall_after``: after that many deltas the stream hangs until :meth:`release` or
      :meth:`stop` (0 hangs before the first token).
    - ``error_after``: after that many deltas send ``{"error": error_message}`` and end.
    - ``close_after``: after that many deltas drop the connection without finishing.
    - ``script``: answers for the next chat requests, one each, before ``reply`` again:
      text, or a list of tool calls ``{"name": ..., "arguments": {...}}`` streamed as
      Ollama streams them (a chunk whose message carries ``tool_calls``).
    - ``route(body)``: answers a chat request by what it asks (a summary, say) before
      the script is consulted: text to stream, an HTTP status to fail with, or None to
      leave the request to the script and ``reply``.
    - ``hold(body)``: a chat request it is true for waits, before answering, until
      :meth:`release` (``held`` counts them).
    """

    def __init__(
        self,
        models: Iterable[str | FakeModel] = ("llama3.2",),
        *,
        version: str = "0.12.6",
    ) -> None:
        self.models: dict[str, FakeModel] = {}
        for model in models:
            entry = model if isinstance(model, FakeModel) else FakeModel(full_name(model))
            entry.name = full_name(entry.name)
            self.models[entry.name] = entry
        self.version = version
        self.reply = DEFAULT_REPLY
        self.tokens: list[str] | None = None
        self.first_token_delay = 0.0
        self.token_delay = 0.0
        self.rate: float | None = None
        self.chunks_per_write = 1
        self.stall_after: int | None = None
        self.error_after: int | None = None
        self.error_message = "an error was encountered while running the model: unexpected EOF"
        self.close_after: int | None = None
        self.script: list[str | list[dict[str, Any]]] = []
        self.route: Callable[[dict[str, Any]], str | int | None] | None = None
        self.hold: Callable[[dict[str, Any]], bool] | None = None
        self.held = 0
        self.images: list[bytes] = []  # every picture /api/chat received, decoded
        self.blobs: dict[str, bytes] = {}  # "sha256:…" -> the bytes uploaded
        self.create_requests: list[dict[str, Any]] = []
        self.embed_requests: list[dict[str, Any]] = []

        self.requests: list[str] = []
        self.chat_requests: list[dict[str, Any]] = []
        self.show_requests: list[dict[str, Any]] = []
        self.client_ports: list[int] = []  # per request: one port = one kept-alive connection
        self.deltas_sent = 0
        self.active_streams = 0
        self.loaded: dict[str, float] = {}

        self.port = 0
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._release = asyncio.Event()
        self._changed: asyncio.Condition | None = None

    # lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def __aenter__(self) -> FakeOllama:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on a free port, or on the same port again after :meth:`stop`."""
        app = web.Application()
        app.router.add_get("/", self._root)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/show", self._show)
        app.router.add_get("/api/ps", self._ps)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embed", self._embed)
        app.router.add_head("/api/blobs/{digest}", self._has_blob)
        app.router.add_post("/api/blobs/{digest}", self._put_blob)
        app.router.add_post("/api/create", self._create)
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
        """How many requests reached ``path`` (e.g. ``"/api/show"``)."""
        return sum(1 for seen in self.requests if seen.endswith(" " + path))

    # handlers ------------------------------------------------------------------------

    async def _enter(self, request: web.Request) -> None:
        self.requests.append(f"{request.method} {request.path}")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.client_ports.append(peer[1] if peer else 0)
        await self._notify()

    async def _root(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        return web.json_response({"version": self.version})

    async def _tags(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        modified = "2025-01-10T12:00:00.000000000Z"
        return web.json_response(
            {
                "models": [
                    {
                        "name": m.name,
                        "model": m.name,
                        "modified_at": modified,
                        "size": m.size,
                        "digest": m.digest,
                        "details": m.details(),
                    }
                    for m in self.models.values()
                ]
            }
        )

    async def _show(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        body = await request.json()
        self.show_requests.append(body)
        name = body.get("model") or body.get("name") or ""
        model = self.models.get(full_name(name))
        if model is None:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        arch = model.architecture
        return web.json_response(
            {
                "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
                "modelfile": f'# Modelfile generated by "ollama show"\nFROM {model.name}\n',
                "parameters": 'stop                           "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": model.details(),
                "model_info": {
                    "general.architecture": arch,
                    "general.file_type": 15,
                    "general.parameter_count": 3_212_749_888,
                    "general.quantization_version": 2,
                    f"{arch}.attention.head_count": 24,
                    f"{arch}.block_count": 28,
                    f"{arch}.context_length": model.context_length,
                    f"{arch}.embedding_length": 3072,
                    "tokenizer.ggml.model": "gpt2",
                },
                "capabilities": list(model.capabilities),
                "modified_at": "2025-01-10T12:00:00.000000000Z",
            }
        )

    async def _has_blob(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        return web.Response(status=200 if request.match_info["digest"] in self.blobs else 404)

    async def _put_blob(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        digest = request.match_info["digest"]
        data = await request.read()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            return web.json_response({"error": "digest mismatch"}, status=400)
        self.blobs[digest] = data
        return web.Response(status=201)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        """A model made from another (``from``), with adapters by blob digest, a system
        prompt and parameters; answered as one object when ``stream`` is false."""
        await self._enter(request)
        body = await request.json()
        self.create_requests.append(body)
        base = self.models.get(full_name(body.get("from") or ""))
        if base is None:
            return web.json_response({"error": f"model '{body.get('from')}' not found"}, status=404)
        for digest in (body.get("adapters") or {}).values():
            if digest not in self.blobs:
                return web.json_response({"error": f"blob {digest} not found"}, status=400)
        name = full_name(body["model"])
        self.models[name] = FakeModel(name, capabilities=base.capabilities)
        if body.get("stream", True):
            lines = [{"status": "using existing layer"}, {"status": "success"}]
            return web.Response(
                body=b"".join(_line(line) for line in lines),
                content_type="application/x-ndjson",
            )
        return web.json_response({"status": "success"})

    async def _ps(self, request: web.Request) -> web.StreamResponse:
        await self._enter(request)
        running = []
        for name, expires in self.loaded.items():
            model = self.models.get(name)
            if model is None:
                continue
            running.append(
                {
                    "name": name,
                    "model": name,
                    "size": model.size,
                    "digest": model.digest,
                    "details": model.details(),
                    "expires_at": (datetime.now(UTC) + timedelta(seconds=expires)).isoformat(),
                    "size_vram": model.size,
                    "context_length": model.context_length,
                }
            )
        return web.json_response({"models": running})

    async def _embed(self, request: web.Request) -> web.StreamResponse:
        """``/api/embed``: a deterministic vector per text, by its words' meanings
        (``MEANINGS`` folds words of one meaning together), so tests can find a message
        by meaning without sharing a word with it."""
        body = await request.json()
        self.embed_requests.append(body)
        await self._enter(request)
        name = body.get("model") or ""
        if full_name(name) not in self.models:
            return web.json_response(
                {"error": f'model "{name}" not found, try pulling it first'}, status=404
            )
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        return web.json_response(
            {"model": name, "embeddings": [_meaning_vector(text) for text in texts]}
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
        await self._enter(request)
        name = body.get("model") or ""
        if not name:
            return web.json_response({"error": "model is required"}, status=400)
        model = self.models.get(full_name(name))
        if model is None:
            return web.json_response(
                {"error": f'model "{name}" not found, try pulling it first'}, status=404
            )
        pictures = [i for m in body.get("messages") or [] for i in m.get("images") or []]
        if pictures and "vision" not in model.capabilities:
            return web.json_response({"error": f"{model.name} does not support images"}, status=400)
        for picture in pictures:
            try:
                self.images.append(base64.b64decode(picture, validate=True))
            except (binascii.Error, ValueError):
                return web.json_response({"error": "illegal base64 data"}, status=400)
        if body.get("tools") and "tools" not in model.capabilities:
            return web.json_response(
                {"error": f"registry.ollama.ai/library/{model.name} does not support tools"},
                status=400,
            )
        self.loaded[model.name] = 300.0
        if self.hold is not None and self.hold(body):
            release = self._release
            self.held += 1
            await self._notify()
            await release.wait()
        routed = self.route(body) if self.route is not None else None
        if isinstance(routed, int):
            return web.json_response({"error": f"routed to fail with {routed}"}, status=routed)
        started = time.perf_counter_ns()
        answer: str | list[dict[str, Any]] | None = routed
        if answer is None:
            answer = self.script.pop(0) if self.script else None
        if isinstance(answer, list):
            return await self._stream_calls(request, name, answer, started)
        reply = answer if answer is not None else self.reply
        tokens = (
            list(self.tokens) if self.tokens is not None and answer is None else split_tokens(reply)
        )
        messages = body.get("messages") or []
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)
        if not messages:
            return web.json_response(self._final(name, "", "load", 0, 0, started))
        # Like Ollama: num_predict cuts the answer and the final chunk says "length".
        reason = "stop"
        limit = (body.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 < limit < len(tokens):
            tokens, reason = tokens[:limit], "length"
        if body.get("stream", True) is False:
            await self._sleep(self.first_token_delay)
            return web.json_response(
                self._final(name, "".join(tokens), reason, len(tokens), prompt_tokens, started)
            )
        return await self._stream(request, name, tokens, prompt_tokens, started, reason)

    async def _stream(
        self,
        request: web.Request,
        name: str,
        tokens: list[str],
        prompt_tokens: int,
        started: int,
        reason: str = "stop",
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        self.active_streams += 1
        pending: list[bytes] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            for index, token in enumerate(tokens):
                if index == self.stall_after:
                    await self._flush(response, pending)
                    await self._release.wait()
                if index == self.error_after:
                    pending.append(_line({"error": self.error_message}))
                    await self._flush(response, pending)
                    return response
                if index == self.close_after:
                    await self._flush(response, pending)
                    self._drop(request)
                    return response
                if self.rate is not None:
                    await self._sleep(t0 + index / self.rate - loop.time())
                else:
                    await self._sleep(self.first_token_delay if index == 0 else self.token_delay)
                pending.append(
                    _line(
                        {
                            "model": name,
                            "created_at": _now(),
                            "message": {"role": "assistant", "content": token},
                            "done": False,
                        }
                    )
                )
                self.deltas_sent += 1
                # The first delta goes out alone so time-to-first-token is not batched.
                if index == 0 or len(pending) >= self.chunks_per_write:
                    await self._flush(response, pending)
            if self.stall_after is not None and self.stall_after >= len(tokens):
                await self._flush(response, pending)
                await self._release.wait()
            pending.append(
                _line(self._final(name, "", reason, len(tokens), prompt_tokens, started))
            )
            await self._flush(response, pending)
            await response.write_eof()
            return response
        except ConnectionResetError:
            return response  # the client went away, as Ollama sees a cancelled request
        finally:
            self.active_streams -= 1
            # Uncontended, so it completes without suspending even in a cancelled handler.
            await self._notify()

    async def _stream_calls(
        self, request: web.Request, name: str, calls: list[dict[str, Any]], started: int
    ) -> web.StreamResponse:
        """A turn in which the model calls tools: one chunk carrying the calls, then done."""
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        message = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                for c in calls
            ],
        }
        await response.write(
            _line({"model": name, "created_at": _now(), "message": message, "done": False})
        )
        await response.write(_line(self._final(name, "", "stop", len(calls), 10, started)))
        await response.write_eof()
        await self._notify()
        return response

    async def _flush(self, response: web.StreamResponse, pending: list[bytes]) -> None:
        if pending:
            data = b"".join(pending)
            pending.clear()
            await response.write(data)
            await self._notify()

    def _drop(self, request: web.Request) -> None:
        # Closing the socket without the final zero-length chunk is what a crashed server
        # looks like to an HTTP/1.1 client: an incomplete chunked body.
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    async def _sleep(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    @staticmethod
    def _final(
        name: str, content: str, reason: str, eval_count: int, prompt_count: int, started: int
    ) -> dict[str, Any]:
        total = max(time.perf_counter_ns() - started, 1)
        return {
            "model": name,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done": True,
            "done_reason": reason,
            "total_duration": total,
            "load_duration": 1_334_875,
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": total // 10,
            "eval_count": eval_count,
            "eval_duration": total - total // 10,
        }


# Words of one meaning, for the fake embedding model.
MEANINGS = {
    "dog": "animal",
    "dogs": "animal",
    "puppy": "animal",
    "cat": "animal",
    "pet": "animal",
    "pets": "animal",
    "tea": "drink",
    "coffee": "drink",
    "drink": "drink",
    "drinks": "drink",
}
EMBED_DIMENSIONS = 64


def _meaning_vector(text: str) -> list[float]:
    vector = [0.0] * EMBED_DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        meaning = MEANINGS.get(word, word)
        digest = hashlib.sha256(meaning.encode()).digest()
        vector[digest[0] % EMBED_DIMENSIONS] += 1.0
    return vector


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
