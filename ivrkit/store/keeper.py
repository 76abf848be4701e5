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

Because every call shares this connection, nothing may stall it or break it for the
others: a save never waits for a row another session has locked (that call is set aside
and tried again, see ``BUSY_RETRY``), a batch the server refuses is redone one webhook
at a time, a data error is not taken for a lost connection, the queue of claims is
bounded, reconnecting backs off, and a task that dies is restarted with every waiter
answered.
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

MAX_WAITING_CLAIMS = 2000
"""Claims queued at once before new ones are refused (``StoreBusy``) instead of waiting."""
BUSY_RETRY = 0.02
"""Seconds before a save set aside for an outside row lock is tried again."""
RECONNECT_FIRST = 0.05
RECONNECT_MAX = 2.0
"""Seconds to wait before the next connection attempt after one failed (doubling)."""


class KeeperLost(Exception):
    """The connection holding the call's lock broke: the lock is gone, nothing was saved."""


class StoreBusy(Exception):
    """The store refused to queue more work: the webhook answers its apology at once."""


class RowLocked(Exception):
    """Another session kept the call's row locked past the limit: nothing was saved."""


@dataclass(eq=False)
class Claim:
    """A webhook asking for its call's lock and row."""

    call_sid: str
    release_turn: Callable[[], None]
    future: asyncio.Future[tuple[int, Any] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    turn_handed_on: bool = False

    def hand_on_turn(self) -> None:
        """Let the call's next webhook in this process go, once whatever path gets here."""
        if not self.turn_handed_on:
            self.turn_handed_on = True
            self.release_turn()


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
    busy_since: float | None = None  # when an outside row lock first set it aside
    turn_handed_on: bool = False

    def hand_on_turn(self) -> None:
        """Let the call's next webhook in this process go, once whatever path gets here."""
        if not self.turn_handed_on:
            self.turn_handed_on = True
            self.release_turn()

    def write_nothing(self) -> None:
        """Only give the lock back (the webhook went away, or waited too long)."""
        self.new_row = self.changed_row = None
        self.events = []


def give_back(call_sid: str, generation: int, release_turn: Callable[[], None]) -> Finish:
    """A Finish that writes nothing and that nobody waits for: the lock goes back."""
    finish = Finish(call_sid, generation, release_turn)
    finish.future.cancel()  # no one will read its outcome
    return finish


CONNECTION_ENDED = (
    asyncpg.PostgresConnectionError,  # class 08: the connection does not exist, failed
    asyncpg.AdminShutdownError,  # the server ended it (pg_terminate_backend, shutdown)
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
)
"""Server errors that end the connection even before the driver marks it closed."""


def connection_broken(connection: asyncpg.Connection, error: BaseException) -> bool:
    """Whether ``error`` means the connection (and so every lock it held) is gone.

    A statement the server refused (bad data, a timeout) leaves the connection and its
    locks intact: treating it as a loss would fail every other call in progress.
    """
    return (
        connection.is_closed()
        or not isinstance(error, asyncpg.PostgresError)
        or isinstance(error, CONNECTION_ENDED)
    )


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
        row_wait: float = 2.0,
        max_waiting: int = MAX_WAITING_CLAIMS,
        command_timeout: float | None = None,
    ) -> None:
        self._connect = connect
        self._claim_statement = claim_statement
        self._save_statement = save_statement
        self._save_arguments = save_arguments
        self._unlock_statement = unlock_statement
        self._row_wait = row_wait
        # A statement whose answer never comes (the network dropped its packets): the
        # server's statement_timeout cannot help, so the driver gives up after this.
        self._timeout = command_timeout
        self._max_waiting = max_waiting
        self._connection: asyncpg.Connection | None = None
        self.generation = 0  # bumped whenever the connection (and so every lock) is lost
        self._claims: list[Claim] = []
        self._finishes: list[Finish] = []
        self._in_hand: tuple[list[Claim], list[Finish]] = ([], [])
        self._set_aside: set[Finish] = set()  # saves waiting for an outside row lock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._reconnect_delay = 0.0
        self._reconnect_at = 0.0
        self.restarts = 0

    async def start(self) -> None:
        """Connect now, so a bad DSN fails at start-up."""
        self._connection = await self._connect()
        self._start_task()

    def _start_task(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ivrkit-pg-lock-keeper")
        self._task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """Supervision: a keeper task that dies is replaced, and nobody is left waiting."""
        if self._closed or task is not self._task:
            return
        error = None if task.cancelled() else task.exception()
        log.error(
            "PostgreSQL lock keeper stopped (%s); restarting it",
            "cancelled" if error is None else f"{type(error).__name__}: {error}",
        )
        lost = KeeperLost("the PostgreSQL lock keeper stopped; its locks were given back")
        self._lose_connection(lost)
        claims, finishes = self._in_hand
        self._in_hand = ([], [])
        self._fail(claims + self._claims, finishes + self._finishes, lost)
        self._claims, self._finishes = [], []
        self.restarts += 1
        self._start_task()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        closed = RuntimeError("the PostgreSQL store is closed")
        claims, finishes = self._in_hand
        self._fail(claims + self._claims, finishes + self._finishes, closed)
        self._fail([], list(self._set_aside), closed)
        self._claims, self._finishes, self._set_aside = [], [], set()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close(timeout=5)
            self._connection = None

    def claim(self, request: Claim) -> None:
        if len(self._claims) >= self._max_waiting:
            raise StoreBusy(
                f"PostgreSQL lock keeper: {len(self._claims)} calls already wait for their "
                "lock; refusing more until the database catches up"
            )
        self._queue(self._claims, request)

    def finish(self, request: Finish) -> None:
        """Never refused while open: a finish gives a lock back."""
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
            self._in_hand = (claims, finishes)
            try:
                if finishes:
                    await self._save(finishes)
                if claims:
                    await self._claim(claims)
            except Exception as error:  # a bug of ours: fail these webhooks, keep serving
                log.exception("PostgreSQL lock keeper failed; resetting its connection")
                self._lose_connection(error)
                self._fail(claims, finishes, error)
            self._in_hand = ([], [])

    async def _connected(self) -> asyncpg.Connection:
        if self._connection is not None and self._connection.is_closed():
            # Closed under us (the server restarted, a DBA ended it): its locks are gone.
            self._lose_connection(ConnectionError("the server closed it"))
        if self._connection is None:
            loop = asyncio.get_running_loop()
            if loop.time() < self._reconnect_at:
                raise ConnectionError(
                    "PostgreSQL lock connection: the last attempt to connect failed; "
                    f"next attempt in {self._reconnect_at - loop.time():.2f} s"
                )
            try:
                self._connection = await self._connect()
            except BaseException:
                self._reconnect_delay = min(
                    max(self._reconnect_delay * 2, RECONNECT_FIRST), RECONNECT_MAX
                )
                self._reconnect_at = loop.time() + self._reconnect_delay
                raise
            self._reconnect_delay = 0.0
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

    async def _claim(self, claims: list[Claim], *, again: bool = True) -> None:
        wanted = [c for c in claims if not c.future.cancelled()]
        for gone in (c for c in claims if c.future.cancelled()):
            gone.hand_on_turn()
        if not wanted:
            return
        try:
            connection = await self._connected()
        except Exception as error:
            self._fail(wanted, [], error)
            return
        try:
            rows = await connection.fetch(
                self._claim_statement, [c.call_sid for c in wanted], timeout=self._timeout
            )
        except Exception as error:
            if connection_broken(connection, error):
                # Some locks may have been taken before the failure and a rollback keeps
                # them (session locks): only closing the connection surely frees them.
                self._lose_connection(error)
                if again:  # these webhooks held nothing yet: ask once more, afresh
                    await self._claim(wanted, again=False)
                else:
                    self._fail(wanted, [], error)
                return
            await self._refused_claims(connection, wanted, error)
            return
        self._claimed(wanted, rows)

    async def _unlock(self, connection: asyncpg.Connection, call_sid: str) -> bool:
        """Give back one call's lock on this connection. False when that failed: the
        connection is then dropped, which frees every lock it held anyway."""
        try:
            await connection.fetchval(self._unlock_statement, call_sid, timeout=self._timeout)
        except asyncpg.DataError:
            pass  # a CallSid the server cannot read was never locked
        except Exception as error:
            self._lose_connection(error)
            return False
        return True

    async def _refused_claims(
        self, connection: asyncpg.Connection, wanted: list[Claim], error: Exception
    ) -> None:
        """The server refused a claim statement: find the webhook at fault, fail only it."""
        if not isinstance(error, asyncpg.DataError):
            # Refused mid-way (a timeout): locks taken before stay held; give them back.
            for request in wanted:
                if not await self._unlock(connection, request.call_sid):
                    self._fail(wanted, [], error)
                    return
        if len(wanted) == 1:
            log.warning("call %r: claim refused by PostgreSQL (%s)", wanted[0].call_sid, error)
            self._fail(wanted, [], error)
            return
        for request in wanted:
            await self._claim([request])

    def _claimed(self, wanted: list[Claim], rows: list[Any]) -> None:
        generation = self.generation
        for request, row in zip(wanted, rows, strict=True):
            got = row["got"]
            if request.future.cancelled():  # the webhook went away while we asked
                if got:
                    lock = give_back(request.call_sid, generation, request.release_turn)
                    self._finishes.append(lock)
                    self._wake.set()
                else:
                    request.hand_on_turn()
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
        for gone in (f for f in current if f.future.cancelled()):
            # The webhook went away (its deadline) and answered without this change:
            # write nothing, so the call's row agrees with what the caller heard.
            gone.write_nothing()
        self._fail([], stale, KeeperLost("the connection holding the call's lock was lost"))
        if not current:
            return
        try:
            taken, busy = await self._save_batch(connection, current)
        except asyncpg.PostgresError as error:
            if connection_broken(connection, error):
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
        self._done(current, taken, busy)

    async def _save_batch(
        self, connection: asyncpg.Connection, batch: list[Finish]
    ) -> tuple[set[str], set[str]]:
        """Save a batch: the calls stored meanwhile without a lock, and those set aside."""
        call_rows = [(True, f.new_row) for f in batch if f.new_row is not None]
        call_rows += [(False, f.changed_row) for f in batch if f.changed_row is not None]
        events = [e for f in batch for e in f.events]
        arguments = self._save_arguments(call_rows, events, [f.call_sid for f in batch])
        rows = await connection.fetch(self._save_statement, *arguments, timeout=self._timeout)
        taken = {row[0] for row in rows if row[1] == "taken"}
        return taken, {row[0] for row in rows if row[1] == "busy"}

    async def _save_each(self, connection: asyncpg.Connection, batch: list[Finish]) -> None:
        generation = self.generation
        for finish in batch:
            if self.generation != generation:  # lost on the way: these locks went with it
                self._fail([], [finish], KeeperLost("the connection was lost while saving"))
                continue
            try:
                taken, busy = await self._save_batch(connection, [finish])
            except Exception as error:
                # One line: the webhook's own failure is logged by the app, throttled.
                log.error(
                    "call %r: saving failed: %s: %s", finish.call_sid, type(error).__name__, error
                )
                if connection_broken(connection, error):
                    self._lose_connection(error)
                else:
                    await self._unlock(connection, finish.call_sid)
                self._fail([], [finish], error)
            else:
                self._done([finish], taken, busy)

    def _done(self, finishes: list[Finish], taken: set[str], busy: set[str]) -> None:
        for finish in finishes:
            if finish.call_sid in busy:
                self._set_aside_for_row_lock(finish)
                continue
            if not finish.future.done():
                finish.future.set_result(finish.call_sid in taken)
            finish.hand_on_turn()

    def _set_aside_for_row_lock(self, finish: Finish) -> None:
        """Another session holds the call's row: try again shortly, within ``row_wait``.

        The call's lock stays held meanwhile. A webhook that went away (its deadline) or
        waited too long writes nothing: the lock is simply given back.
        """
        loop = asyncio.get_running_loop()
        if finish.busy_since is None:
            finish.busy_since = loop.time()
        if finish.future.cancelled():
            finish.write_nothing()
        elif loop.time() - finish.busy_since >= self._row_wait:
            finish.future.set_exception(
                RowLocked(
                    f"call {finish.call_sid!r}: its row stayed locked by another session for "
                    f"{self._row_wait:g} s (an open transaction of a tool or a DBA?)"
                )
            )
            finish.write_nothing()
        self._set_aside.add(finish)
        loop.call_later(BUSY_RETRY, self._retry_set_aside, finish)

    def _retry_set_aside(self, finish: Finish) -> None:
        self._set_aside.discard(finish)
        if self._closed:
            return
        self._finishes.append(finish)
        self._wake.set()

    @staticmethod
    def _fail(claims: list[Claim], finishes: list[Finish], error: BaseException) -> None:
        for request in claims:
            if not request.future.done():
                request.future.set_exception(error)
            elif request.future.cancelled():
                request.hand_on_turn()  # nobody else will hand the turn on
            # else: answered already; its webhook holds the turn and finishes as usual
        for finish in finishes:
            if not finish.future.done():
                finish.future.set_exception(error)
            finish.hand_on_turn()
