"""One PostgreSQL connection per process that holds the locks of the calls it is handling.

A call's advisory lock belongs to the connection that took it, so whoever saves the call
must use that connection. With one connection per webhook (from a pool), every webhook
paid two round trips of its own, and PostgreSQL's per-statement work took as much CPU as
the app. Here one connection takes the locks of many calls in one statement and saves
many calls in another: a round trip serves every webhook waiting at that moment.

A claim does not wait for a lock held elsewhere (another process handling the same call):
it reports it, and the webhook asks again a little later. Inside this process the caller
serialises a call's webhooks first (``CallTurns``), because this connection's locks are
re-entrant: it would be granted a lock it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ivrkit.store.turns import gather

log = logging.getLogger("ivrkit.store")



class KeeperLost(Exception):
    """The connection holding the call's lock broke: the lock is gone, nothing was saved."""


@dataclass(eq=False)
class Claim:
    """A webhook asking for its call's lock and row."""

    call_sid: str
    release_turn: Callable[[], None]
    future: asyncio.Future[tuple[int, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class Finish:
    """A webhook done with its call: what to write (if anything), then the lock back."""

    call_sid: str
    generation: int
    release_turn: Callable[[], None]
    new_row: tuple[Any, ...] | None = None  # a call stored for the first time
    changed_row: tuple[Any, ...] | None = None  # a call stored before
    events: list[tuple[Any, ...]] = field(default_factory=list)
    future: asyncio.Future[bool] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def give_back(call_sid: str, generation: int, release_turn: Callable[[], None]) -> Finish:
    """A Finish that writes nothing and that nobody waits for: the lock goes back."""
    finish = Finish(call_sid, generation, release_turn)
    finish.future.cancel()  # no one will read its outcome
    return finish


class LockKeeper:
    """Claims and saves calls in batches on one connection; see the module's docstring."""

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        claim_statement: str,
        save_statement: str,
        save_arguments: Callable[..., list[Any]],
        unlock_statement: str,
    ) -> None:
        self._connect = connect
        self._claim_statement = claim_statement
        self._save_statement = save_statement
        self._save_arguments = save_arguments
        self._unlock_statement = unlock_statement
        self._connection: asyncpg.Connection | None = None
        self.generation = 0  # bumped whenever the connection (and so every lock) is lost
        self._claims: list[Claim] = []
        self._finishes: list[Finish] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Connect now, so a bad DSN fails at start-up."""
        self._connection = await self._connect()
        self._task = asyncio.create_task(self._run(), name="ivrkit-pg-lock-keeper")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail(self._claims, self._finishes, RuntimeError("the PostgreSQL store is closed"))
        self._claims, self._finishes = [], []
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=5)
            self._connection = None

    def claim(self, request: Claim) -> None:
        self._queue(self._claims, request)

    def finish(self, request: Finish) -> None:
        self._queue(self._finishes, request)

    def _queue(self, queue: list[Any], request: Claim | Finish) -> None:
        if self._closed or self._task is None or self._task.done():
            raise RuntimeError("the PostgreSQL store is not open (was the app started?)")
        queue.append(request)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await gather(lambda: len(self._claims) + len(self._finishes))
            self._wake.clear()
            # Saves first: they give locks back, which claims of other processes wait for.
            finishes, self._finishes = self._finishes, []
            claims, self._claims = self._claims, []
            try:
                if finishes:
                    await self._save(finishes)
                if claims:
                    await self._claim(claims)
            except Exception as error:  # a bug of ours: fail these webhooks, keep serving
                log.exception("PostgreSQL lock keeper failed; resetting its connection")
                self._lose_connection(error)
                self._fail(claims, finishes, error)

    async def _connected(self) -> asyncpg.Connection:
        if self._connection is not None and self._connection.is_closed():
            # Closed under us (the server restarted, a DBA ended it): its locks are gone.
            self._lose_connection(ConnectionError("the server closed it"))
        if self._connection is None:
            self._connection = await self._connect()
        return self._connection

    def _lose_connection(self, error: BaseException) -> None:
        log.error(
            "PostgreSQL lock connection lost (%s): calls in progress answer with their fallback",
            type(error).__name__,
        )
        if self._connection is not None:
            self._connection.terminate()  # frees every lock it held, on the server
        self._connection = None
        self.generation += 1

    async def _claim(self, claims: list[Claim]) -> None:
        wanted = [c for c in claims if not c.future.cancelled()]
        for gone in (c for c in claims if c.future.cancelled()):
            gone.release_turn()
        if not wanted:
            return
        try:
            connection = await self._connected()
            rows = await connection.fetch(self._claim_statement, [c.call_sid for c in wanted])
        except Exception as error:
            # Some locks may have been taken before the failure and a rollback keeps them
            # (session locks): only closing the connection surely frees them.
            self._lose_connection(error)
            self._fail(wanted, [], error)
            return
        generation = self.generation
        for request, row in zip(wanted, rows, strict=True):
            got = row["got"]
            if request.future.cancelled():  # the webhook went away while we asked
                if got:
                    lock = give_back(request.call_sid, generation, request.release_turn)
                    self._finishes.append(lock)
                    self._wake.set()
                else:
                    request.release_turn()
                continue
            request.future.set_result((generation, row) if got else None)

    async def _save(self, finishes: list[Finish]) -> None:
        try:
            connection = await self._connected()
        except Exception as error:
            self._fail([], finishes, error)
            return
        # A webhook whose claim was made on a connection lost since holds no lock now:
        # saving it could overwrite another process's change.
        current = [f for f in finishes if f.generation == self.generation]
        stale = [f for f in finishes if f.generation != self.generation]
        self._fail([], stale, KeeperLost("the connection holding the call's lock was lost"))
        if not current:
            return
        try:
            taken = await self._save_batch(connection, current)
        except asyncpg.PostgresError as error:
            if connection.is_closed():
                self._lose_connection(error)
                self._fail([], current, error)
                return
            # The server refused the batch: nothing of it was written and every lock is
            # still held. Save the webhooks one by one, so only the one at fault fails.
            await self._save_each(connection, current)
            return
        except BaseException as error:  # the connection, the driver, or a cancellation
            self._lose_connection(error)
            self._fail([], current, error)
            if not isinstance(error, Exception):
                raise
            return
        self._done(current, taken)

    async def _save_batch(self, connection: asyncpg.Connection, batch: list[Finish]) -> set[str]:
        call_rows = [(True, f.new_row) for f in batch if f.new_row is not None]
        call_rows += [(False, f.changed_row) for f in batch if f.changed_row is not None]
        events = [e for f in batch for e in f.events]
        arguments = self._save_arguments(call_rows, events, [f.call_sid for f in batch])
        rows = await connection.fetch(self._save_statement, *arguments)
        return {row[0] for row in rows}

    async def _save_each(self, connection: asyncpg.Connection, batch: list[Finish]) -> None:
        for finish in batch:
            try:
                taken = await self._save_batch(connection, [finish])
            except Exception as error:
                log.exception("call %s: saving failed", finish.call_sid)
                try:
                    await connection.fetchval(self._unlock_statement, finish.call_sid)
                except Exception as unlock_error:
                    self._lose_connection(unlock_error)
                self._fail([], [finish], error)
            else:
                self._done([finish], taken)

    @staticmethod
    def _done(finishes: list[Finish], taken: set[str]) -> None:
        for finish in finishes:
            if not finish.future.done():
                finish.future.set_result(finish.call_sid in taken)
            finish.release_turn()

    @staticmethod
    def _fail(claims: list[Claim], finishes: list[Finish], error: BaseException) -> None:
        for request in claims:
            if not request.future.done():
                request.future.set_exception(error)
            else:
                request.release_turn()  # cancelled: nobody else will hand the turn on
        for finish in finishes:
            if not finish.future.done():
                finish.future.set_exception(error)
            finish.release_turn()
