"""python-telegram-bot's HTTP calls, each on a connection of its own.

PTB sends every Bot API call through one httpx client. When several calls wait for its
connection pool at the same moment, httpcore hands the same idle connection to each of
them; all but one find it taken and queue again, and an unlucky call can lose that race
over and over while replies keep coming (encode/httpcore#822: the first reply of a busy
start waited 4.7 s on the fake Bot API). Here a call takes a client with one connection
that nobody else uses until it is done, and calls waiting for one are served in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telegram.request import BaseRequest, HTTPXRequest, RequestData


class ConnectionPerCall(BaseRequest):
    """``size`` single-connection HTTPX clients; a call waits for a free one, first come
    first served."""

    def __init__(self, size: int) -> None:
        self._clients = [HTTPXRequest(connection_pool_size=1) for _ in range(size)]
        self._free: asyncio.Queue[HTTPXRequest] = asyncio.Queue()
        for client in self._clients:
            self._free.put_nowait(client)

    @property
    def read_timeout(self) -> float | None:
        """The clients' default read timeout (PTB adds it to long polls)."""
        return self._clients[0].read_timeout

    async def initialize(self) -> None:
        """Open every client."""
        for client in self._clients:
            await client.initialize()

    async def shutdown(self) -> None:
        """Close every client."""
        for client in self._clients:
            await client.shutdown()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """One HTTP call on a client nobody else is using."""
        client = await self._free.get()
        try:
            return await client.do_request(
                url,
                method,
                request_data=request_data,
                read_timeout=read_timeout,
                write_timeout=write_timeout,
                connect_timeout=connect_timeout,
                pool_timeout=pool_timeout,
            )
        finally:
            self._free.put_nowait(client)
