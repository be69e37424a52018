"""One llama.cpp worker process as the bot sees it: start, generate, stop, and its death.

The worker (``llamacpp_worker.py``) answers one generation at a time. A reader task
turns its stdout into events for the generation in progress; every text event already
waiting when the reader wakes is joined into one batch, so a fast model costs the event
loop one wake-up per batch rather than per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import signal
import sys
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("llamacpp_worker.py")
# Lines of the worker's stderr kept to explain a crash in the log.
STDERR_TAIL = 30


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What a worker loads: the GGUF file, its context and threads, the weight buffers."""

    path: Path
    n_ctx: int
    threads: int
    threads_batch: int
    extra_bufts: bool
    adapters: tuple[str, ...] = ()  # LoRA adapter files, loaded beside the model


@dataclass(frozen=True, slots=True)
class Text:
    """Text the model produced (one or more tokens)."""

    text: str


@dataclass(frozen=True, slots=True)
class Done:
    """The generation ended; ``finish`` is ``"length"`` when max_tokens cut it."""

    finish: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """llama.cpp raised (the worker lives on); ``kind`` is ``"context"`` or ``"other"``."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Died:
    """The worker process ended; ``how`` says how (``killed by SIGSEGV``, ``exit status 1``)."""

    how: str
    signal: int | None


Event = Text | Done | Failed | Died


class WorkerDied(Exception):
    """The worker ended before it was ready."""

    def __init__(self, died: Died, detail: str = "") -> None:
        super().__init__(detail or f"the llama.cpp worker {died.how}")
        self.died = died


class WorkerLoadFailed(Exception):
    """The worker is alive but llama.cpp refused the model file."""


def describe_exit(returncode: int | None) -> Died:
    """A returncode as words: negative codes are the signal that ended the process."""
    if returncode is not None and returncode < 0:
        number = -returncode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return Died(f"was killed by {name}", number)
    return Died(f"exited with status {returncode}", None)


class WorkerProcess:
    """A running worker. Create with :meth:`start`; one generation at a time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._current: int | None = None
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL)
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.died: Died | None = None
        self._reader = asyncio.create_task(self._read(), name=f"llama.cpp worker {self.pid}")
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self.died is None

    @property
    def stderr_tail(self) -> str:
        """What the worker last wrote to stderr (a native crash's report lands here)."""
        return "\n".join(self._stderr)

    @classmethod
    async def start(cls, settings: WorkerSettings) -> WorkerProcess:
        """Start a worker and wait until its model is loaded.

        Raises :class:`WorkerLoadFailed` when llama.cpp refuses the file, and
        :class:`WorkerDied` when the process dies while loading.
        """
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            # -P: the script's folder (llamabot/llm, which has a select.py) must not
            # shadow the standard library.
            "-P",
            str(WORKER_SCRIPT),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        worker = cls(process)
        worker._write(
            {
                "op": "load",
                "path": str(settings.path),
                "n_ctx": settings.n_ctx,
                "threads": settings.threads,
                "threads_batch": settings.threads_batch,
                "extra_bufts": settings.extra_bufts,
                "adapters": list(settings.adapters),
            }
        )
        try:
            ready = await worker._ready
        except BaseException:
            await worker.kill()
            raise
        if "message" in ready:
            await worker.close()
            raise WorkerLoadFailed(str(ready["message"]))
        return worker

    async def generate(
        self,
        messages: list[dict[str, str]],
        args: dict[str, Any],
        adapter: str | None = None,
        adapter_scale: float = 1.0,
    ) -> AsyncGenerator[Event, None]:
        """Ask for one generation and yield its events, ending with Done, Failed or Died.

        Leaving early (break, cancel) tells the worker to stop; it is idle again once it
        has said so (:meth:`wait_idle`).
        """
        if self.died is not None:
            yield self.died
            return
        await self._idle.wait()
        ident = next(self._ids)
        self._current = ident
        self._idle.clear()
        self._events = asyncio.Queue()
        self._write(
            {
                "op": "chat",
                "id": ident,
                "messages": messages,
                "args": args,
                "adapter": adapter,
                "adapter_scale": adapter_scale,
            }
        )
        finished = False
        try:
            while True:
                event = await self._events.get()
                if not isinstance(event, Text):
                    finished = True
                yield event
                if finished:
                    return
        finally:
            if not finished and self.died is None:
                self._write({"op": "stop", "id": ident})

    async def wait_idle(self) -> None:
        """Wait until the worker has finished (or abandoned) its generation, or died."""
        await self._idle.wait()

    async def close(self, grace_s: float = 2.0) -> None:
        """Let the worker end by closing its input; kill it if it does not within the grace."""
        if self._process.stdin is not None and not self._process.stdin.is_closing():
            self._process.stdin.close()
        try:
            async with asyncio.timeout(grace_s):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
        await self._finish()

    async def kill(self) -> None:
        """End the worker now (a hung generation, or a test of the crash path)."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        await self._finish()

    async def _finish(self) -> None:
        await self._process.wait()
        for task in (self._reader, self._stderr_reader):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _write(self, message: dict[str, Any]) -> None:
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing():
            return
        with contextlib.suppress(ConnectionError):
            stdin.write(json.dumps(message).encode("utf-8") + b"\n")

    async def _read(self) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        pending = b""
        try:
            while chunk := await stdout.read(1 << 16):
                *lines, pending = (pending + chunk).split(b"\n")
                self._dispatch([json.loads(line) for line in lines if line])
        except (ValueError, ConnectionError) as exc:
            log.warning("llama.cpp worker %d sent something unreadable: %s", self.pid, exc)
        returncode = await self._process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._stderr_reader  # the crash report, for the log
        self.died = describe_exit(returncode)
        if not self._ready.done():
            self._ready.set_exception(WorkerDied(self.died, self._crash_detail()))
        if self._current is not None:
            self._events.put_nowait(self.died)
            self._current = None
        self._idle.set()

    def _dispatch(self, messages: list[dict[str, Any]]) -> None:
        batch: list[str] = []
        for message in messages:
            ev = message.get("ev")
            if ev in ("ready", "load_failed"):
                if not self._ready.done():
                    self._ready.set_result(message)
                continue
            if message.get("id") != self._current:
                continue  # the tail of a generation that was abandoned earlier
            if ev == "text":
                batch.append(message["t"])
                continue
            if batch:
                self._events.put_nowait(Text("".join(batch)))
                batch = []
            if ev == "done":
                self._events.put_nowait(Done(message.get("finish")))
            else:
                self._events.put_nowait(Failed(message.get("kind", "other"), message["message"]))
            self._current = None
            self._idle.set()
        if batch:
            self._events.put_nowait(Text("".join(batch)))

    async def _read_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while line := await stderr.readline():
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)
                log.debug("llama.cpp worker %d: %s", self.pid, text)

    def _crash_detail(self) -> str:
        assert self.died is not None
        tail = self.stderr_tail
        return f"the llama.cpp worker {self.died.how}" + (f"; it said:\n{tail}" if tail else "")
