"""The embedded model's worker process: llama.cpp outside the bot's process.

A native crash in llama.cpp (a segfault in a CPU kernel, an abort, the OOM killer) ends
this process and costs one reply, not the bot. The bot starts it by file path, so it
imports only the standard library and llama_cpp, and talks to it in JSON lines:

    bot -> worker (stdin)     {"op": "load", "path": ..., "n_ctx": ..., "extra_bufts": ...,
                               "adapters": [path, ...]}
                              {"op": "chat", "id": N, "messages": [...], "args": {...},
                               "adapter": path | null, "adapter_scale": 1.0}
                              {"op": "stop", "id": N}
    worker -> bot (stdout)    {"ev": "ready", "pid": ...} | {"ev": "load_failed", "message": ...}
                              {"ev": "text", "id": N, "t": "..."}         (one per token)
                              {"ev": "done", "id": N, "finish": "stop" | "length" | null}
                              {"ev": "error", "id": N, "kind": "context" | "other", "message": ...}

End of input (the bot stopped or died) ends the worker, also mid-generation.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import queue
import sys
import threading
from collections.abc import Iterator
from typing import Any, BinaryIO


class Channel:
    """The protocol pipe to the bot; native code's own prints go to stderr instead."""

    def __init__(self) -> None:
        # Anything llama.cpp prints on fd 1 would corrupt the protocol: keep a private
        # copy of stdout for it and point fd 1 at stderr.
        self._out: BinaryIO = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)
        self._lock = threading.Lock()

    def send(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n"
        with self._lock:
            self._out.write(line)


@contextlib.contextmanager
def weight_buffers(extra: bool) -> Iterator[None]:
    """Load with or without llama.cpp's extra (repacked, e.g. AMX) weight buffers.

    ``Llama()`` has no argument for ``use_extra_bufts``; it takes its model parameters
    from ``llama_model_default_params()``, so that is wrapped for the one load.
    """
    import llama_cpp.llama_cpp as native

    original = native.llama_model_default_params

    def params() -> Any:
        value = original()
        if hasattr(value, "use_extra_bufts"):
            value.use_extra_bufts = extra
        return value

    native.llama_model_default_params = params
    try:
        yield
    finally:
        native.llama_model_default_params = original


class Adapters:
    """The personas' LoRA adapters, loaded once beside the one base model; each reply
    applies its persona's (llama.cpp's per-context adapters), or none."""

    def __init__(self, llm: Any, model_path: str, paths: list[str]) -> None:
        import llama_cpp

        self._native = llama_cpp
        self._loaded: dict[str, Any] = {}
        for path in paths:
            adapter = llama_cpp.llama_adapter_lora_init(llm._model.model, path.encode("utf-8"))
            if not adapter:
                raise ValueError(
                    f"the LoRA adapter {path} does not fit the model {model_path}: it was "
                    "made for another architecture or size (tensor shapes differ), or it "
                    "is not a LoRA GGUF (convert it with llama.cpp's convert_lora_to_gguf.py)"
                )
            self._loaded[path] = adapter
        self._current: tuple[str | None, float] = (None, 0.0)

    def apply(self, llm: Any, path: str | None, scale: float) -> None:
        wanted = (path, scale) if path is not None else (None, 0.0)
        if wanted == self._current:
            return
        native = self._native
        if path is None:
            native.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
        else:
            adapters = (native.llama_adapter_lora_p_ctypes * 1)(self._loaded[path])
            scales = (ctypes.c_float * 1)(scale)
            if native.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, scales):
                raise RuntimeError(f"llama.cpp could not apply the LoRA adapter {path}")
        # The cached prompt was computed with the other adapter: compute it again.
        llm.reset()
        self._current = wanted


def load(settings: dict[str, Any]) -> tuple[Any, Adapters]:
    from llama_cpp import Llama

    with weight_buffers(bool(settings["extra_bufts"])):
        llm = Llama(
            model_path=settings["path"],
            n_ctx=int(settings["n_ctx"]),
            n_threads=int(settings["threads"]),
            n_threads_batch=int(settings["threads_batch"]),
            verbose=False,
        )
    return llm, Adapters(llm, settings["path"], list(settings.get("adapters") or []))


def generate(
    llm: Any,
    adapters: Adapters,
    channel: Channel,
    request: dict[str, Any],
    stop: threading.Event,
) -> None:
    ident = request["id"]
    finish: str | None = None
    try:
        adapters.apply(llm, request.get("adapter"), float(request.get("adapter_scale", 1.0)))
        chunks = llm.create_chat_completion(
            messages=request["messages"], stream=True, **request["args"]
        )
        for chunk in chunks:
            if stop.is_set():
                chunks.close()
                break
            choice = chunk["choices"][0]
            text = choice["delta"].get("content")
            if text:
                channel.send({"ev": "text", "id": ident, "t": text})
            finish = choice.get("finish_reason") or finish
    except ValueError as exc:
        kind = "context" if "exceed context window" in str(exc) else "other"
        channel.send({"ev": "error", "id": ident, "kind": kind, "message": str(exc)})
        return
    except Exception as exc:
        channel.send({"ev": "error", "id": ident, "kind": "other", "message": repr(exc)})
        return
    channel.send({"ev": "done", "id": ident, "finish": None if stop.is_set() else finish})


def serve(llm: Any, adapters: Adapters, channel: Channel) -> None:
    """Generate on this thread; read requests and stops on another."""
    requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
    stops: dict[int, threading.Event] = {}
    lock = threading.Lock()

    def read() -> None:
        for raw in sys.stdin.buffer:
            message = json.loads(raw)
            if message["op"] == "chat":
                with lock:
                    stops[message["id"]] = threading.Event()
                requests.put(message)
            elif message["op"] == "stop":
                with lock:
                    event = stops.get(message["id"])
                if event is not None:
                    event.set()
        # The bot is gone or closed the pipe: stop generating too.
        with lock:
            for event in stops.values():
                event.set()
        requests.put(None)

    threading.Thread(target=read, name="requests", daemon=True).start()
    while (request := requests.get()) is not None:
        with lock:
            stop = stops[request["id"]]
        try:
            generate(llm, adapters, channel, request, stop)
        finally:
            with lock:
                stops.pop(request["id"], None)


def main() -> int:
    faulthandler.enable()  # a native crash leaves a Python stack on stderr for the log
    channel = Channel()
    first = sys.stdin.buffer.readline()
    if not first:
        return 0
    try:
        llm, adapters = load(json.loads(first))
    except Exception as exc:
        channel.send({"ev": "load_failed", "message": str(exc) or repr(exc)})
        return 1
    channel.send({"ev": "ready", "pid": os.getpid()})
    serve(llm, adapters, channel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
