"""A lean pool of asyncpg connections for the webhook path.

asyncpg's own pool wraps every connection in a proxy, shields each release, arms
inactivity timers and resets the session on the way back: about a tenth of a webhook's CPU
here. The webhook path needs only FIFO hand-over of at most ``size`` connections, each
returned outside a transaction, so that is all this does; broken connections are dropped
and replaced on demand. Connecting has a time limit, and the queue of webhooks waiting for
a connection a length limit: past it, a webhook is refused at once (``StoreBusy``) rather
than left waiting for a database that cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any

import asyncpg

from ivrkit.store.keeper import StoreBusy


class ConnectionPool:
    """At most ``size`` connections to ``dsn``, handed out first come, first served."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int,
        server_settings: dict[str, str],
        connect_timeout: float = 2.0,
        max_waiting: int = 2000,
    ) -> None:
        self._dsn = dsn
        self._size = size
        self._server_settings = server_settings
        self._connect_timeout = connect_timeout
        self._max_waiting = max_waiting
        self._idle: list[asyncpg.Connection] = []
        self._waiters: deque[asyncio.Future[asyncpg.Connection | None]] = deque()
        self._open = 0  # connections made and not dropped, idle or in use
        self._closed = False

    async def start(self, warm: int = 2) -> None:
        """Connect ``warm`` connections now, so a bad DSN fails at start-up."""
        for _ in range(min(warm, self._size)):
            self._idle.append(await self._connect())

    async def acquire(self) -> asyncpg.Connection:
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        if self._idle:
            return self._idle.pop()
        if self._open < self._size:
            return await self._connect()
        if len(self._waiters) >= self._max_waiting:
            raise StoreBusy(
                f"PostgreSQL pool: all {self._size} connections in use and "
                f"{len(self._waiters)} webhooks waiting; refusing more (IVRKIT_DB_POOL_SIZE)"
            )
        turn: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            connection = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result() is not None:
                self.release(turn.result())  # handed one while being cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            raise
        if connection is None:  # a connection was dropped: make its replacement
            return await self._connect()
        return connection

    def release(self, connection: asyncpg.Connection) -> None:
        """Give a connection back; one closed, broken or mid-transaction is dropped."""
        if connection.is_closed() or connection.is_in_transaction() or self._closed:
            self._drop(connection)
            return
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(connection)
                return
        self._idle.append(connection)

    def discard_idle(self) -> None:
        """Drop the idle connections (after an outage they are most likely broken)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            self._drop(connection)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.close(timeout=5)
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_exception(RuntimeError("the connection pool is closed"))

    async def _connect(self) -> asyncpg.Connection:
        self._open += 1
        try:
            connection: Any = await asyncpg.connect(
                self._dsn, server_settings=self._server_settings, timeout=self._connect_timeout
            )
        except BaseException:
            self._open -= 1
            self._wake_one_for_replacement()
            raise
        return connection

    def _drop(self, connection: asyncpg.Connection) -> None:
        self._open -= 1
        connection.terminate()
        self._wake_one_for_replacement()

    def _wake_one_for_replacement(self) -> None:
        while self._waiters and not self._closed:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
