"""Prometheus metrics (``[metrics] listen``): what the bot receives, answers and waits for.

Each Bot has its own registry (two bots in one process never collide) and serves it
from a small aiohttp server on the bot's own event loop. When ``listen`` is empty the
instruments are never made and every method returns at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from llamabot.errors import StartupError

if TYPE_CHECKING:
    from aiohttp import web

    from llamabot.tools import Tool, ToolResult

log = logging.getLogger(__name__)

# Seconds: first token and whole replies, from instant models to slow CPUs.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 250, 500)


class Metrics:
    """The bot's instruments. ``Metrics("")`` is off: nothing is counted or served."""

    def __init__(self, listen: str) -> None:
        self.listen = listen
        self.enabled = bool(listen)
        self._runner: web.AppRunner | None = None
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self._received = Counter(
            "llamabot_messages_received", "Messages from people", ["platform"], registry=r
        )
        self._skipped = Counter(
            "llamabot_messages_skipped",
            "Messages refused by [access] or skipped by [limits]",
            ["platform", "reason"],
            registry=r,
        )
        self._sent = Counter(
            "llamabot_platform_requests",
            "Messages sent and edited for replies",
            ["platform", "kind"],
            registry=r,
        )
        self._replies = Counter(
            "llamabot_replies", "Replies by stored status", ["platform", "status"], registry=r
        )
        self._first_token = Histogram(
            "llamabot_model_first_token_seconds",
            "From asking the model to its first text",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._total = Histogram(
            "llamabot_model_reply_seconds",
            "From asking the model to its last text",
            ["backend"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._rate = Histogram(
            "llamabot_model_tokens_per_second",
            "Tokens per second of each reply, after the first token",
            ["backend"],
            buckets=_RATE_BUCKETS,
            registry=r,
        )
        self._waits = Histogram(
            "llamabot_rate_limit_wait_seconds",
            "Time a send or edit waited for the platform's rate limits",
            ["platform"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self._reconnects = Counter(
            "llamabot_reconnects",
            "Platform connections lost and made again",
            ["platform"],
            registry=r,
        )
        self._jobs = Counter(
            "llamabot_scheduled_runs", "Scheduled jobs and tasks run", ["outcome"], registry=r
        )
        self._tool_calls = Counter(
            "llamabot_tool_calls",
            "The model's tool calls, by where the tool is from (a plugin or mcp:SERVER)",
            ["source", "tool", "outcome"],
            registry=r,
        )
        self._tool_seconds = Histogram(
            "llamabot_tool_seconds",
            "How long the model's tool calls took",
            ["source"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._queued = Gauge(
            "llamabot_queued_messages", "Messages waiting in every conversation", registry=r
        )
        self._deepest = Gauge(
            "llamabot_deepest_queue", "Messages waiting in the busiest conversation", registry=r
        )

    # -- what the parts report -------------------------------------------------------

    def received(self, platform: str) -> None:
        if self.enabled:
            self._received.labels(platform).inc()

    def skipped(self, platform: str, reason: str) -> None:
        if self.enabled:
            self._skipped.labels(platform, reason).inc()

    def replied(
        self,
        platform: str,
        backend: str,
        status: str,
        *,
        sends: int,
        edits: int,
        first_token_s: float | None,
        total_s: float,
        tokens: int,
    ) -> None:
        """One reply: its status, the requests it took, and the model's timings."""
        if not self.enabled:
            return
        self._replies.labels(platform, status).inc()
        self._sent.labels(platform, "send").inc(sends)
        self._sent.labels(platform, "edit").inc(edits)
        if first_token_s is None:
            return
        self._first_token.labels(backend).observe(first_token_s)
        self._total.labels(backend).observe(total_s)
        generating = total_s - first_token_s
        if tokens > 1 and generating > 0:
            self._rate.labels(backend).observe((tokens - 1) / generating)

    def waited(self, platform: str, seconds: float) -> None:
        """A request held back by the platform's rate limits (waits over 1 ms)."""
        if self.enabled and seconds > 0.001:
            self._waits.labels(platform).observe(seconds)

    def reconnected(self, platform: str) -> None:
        if self.enabled:
            self._reconnects.labels(platform).inc()

    def tool_called(self, tool: Tool, result: ToolResult) -> None:
        """One tool call of the model's: where the tool is from, how it went, how long."""
        if self.enabled:
            self._tool_calls.labels(tool.plugin, tool.name, result.outcome).inc()
            self._tool_seconds.labels(tool.plugin).observe(result.seconds)

    def job_ran(self, ok: bool) -> None:
        if self.enabled:
            self._jobs.labels("ok" if ok else "failed").inc()

    def watch_queues(self, queued: Callable[[], int], deepest: Callable[[], int]) -> None:
        """Queue depths are read when scraped: nothing to do per message."""
        if self.enabled:
            self._queued.set_function(lambda: float(queued()))
            self._deepest.set_function(lambda: float(deepest()))

    def sample(self, name: str, **labels: str) -> float:
        """One sample's value now (0 when never counted): for tests and ``doctor``."""
        if not self.enabled:
            return 0.0
        return self.registry.get_sample_value(name, labels) or 0.0

    # -- serving ---------------------------------------------------------------------

    async def start(self) -> None:
        """Serve ``/metrics`` on ``listen`` (``host:port``); a taken port stops the start."""
        if not self.enabled:
            return
        host, _, port_text = self.listen.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise StartupError(
                f"[metrics] listen = {self.listen!r} is not host:port, e.g. 127.0.0.1:9464"
            ) from None
        # Imported here: a bot without metrics (the console chat) never loads aiohttp.
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host or "127.0.0.1", port).start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(
                f"[metrics] cannot listen on {self.listen} ({exc.strerror or exc}); another "
                "program uses the port: choose another in [metrics] listen, or stop it"
            ) from None
        self._runner = runner
        log.info("metrics at http://%s/metrics", self.listen)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _serve(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
