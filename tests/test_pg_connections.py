"""The webhook path's PostgreSQL connection pool, against a real server."""

from __future__ import annotations

import asyncio
import os

import pytest
from sqlalchemy.engine import make_url

from ivrkit.store.keeper import StoreBusy
from ivrkit.store.pool import ConnectionPool
from tests.conftest import PG_ENV

pytestmark = pytest.mark.skipif(
    not os.environ.get(PG_ENV),
    reason=f"PostgreSQL run skipped: set {PG_ENV} (CI sets it when 127.0.0.1:5432 answers)",
)


def dsn() -> str:
    url = make_url(os.environ[PG_ENV]).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def backend_pid(connection) -> int:
    return await connection.fetchval("SELECT pg_backend_pid()")


async def until_waiting(pool: ConnectionPool, count: int) -> None:
    """Until ``count`` acquires wait in the pool's queue (no guessing with sleeps)."""
    async with asyncio.timeout(5):
        while len(pool._waiters) < count:
            await asyncio.sleep(0)


async def test_hands_out_at_most_size_connections_first_come_first_served():
    pool = ConnectionPool(dsn(), size=2, server_settings={"application_name": "ivrkit-test"})
    await pool.start()
    try:
        first, second = await pool.acquire(), await pool.acquire()
        assert await backend_pid(first) != await backend_pid(second)
        waiting = [asyncio.create_task(pool.acquire()) for _ in range(2)]
        await until_waiting(pool, 2)
        assert not any(task.done() for task in waiting)  # nobody gets a third connection
        pool.release(first)
        handed = await asyncio.wait_for(waiting[0], 1)
        assert handed is first
        assert not waiting[1].done()
        pool.release(second)
        assert await asyncio.wait_for(waiting[1], 1) is second
        assert await first.fetchval("SHOW application_name") == "ivrkit-test"
        pool.release(first)
        pool.release(second)
    finally:
        await pool.close()


async def test_broken_or_mid_transaction_connections_are_replaced():
    pool = ConnectionPool(dsn(), size=1, server_settings={})
    await pool.start()
    try:
        connection = await pool.acquire()
        old_pid = await backend_pid(connection)
        waiter = asyncio.create_task(pool.acquire())
        await until_waiting(pool, 1)
        await connection.execute("BEGIN")
        pool.release(connection)  # still in a transaction: dropped, never reused
        replacement = await asyncio.wait_for(waiter, 2)
        assert replacement is not connection
        assert connection.is_closed()
        new_pid = await backend_pid(replacement)
        assert new_pid != old_pid
        assert not replacement.is_in_transaction()
        replacement.terminate()  # the server or network dropped it
        pool.release(replacement)
        again = await asyncio.wait_for(pool.acquire(), 2)
        assert await again.fetchval("SELECT 1") == 1
        pool.release(again)
    finally:
        await pool.close()


async def test_a_cancelled_waiter_does_not_swallow_a_connection():
    pool = ConnectionPool(dsn(), size=1, server_settings={})
    await pool.start()
    try:
        held = await pool.acquire()
        impatient = asyncio.create_task(pool.acquire())
        patient = asyncio.create_task(pool.acquire())
        await until_waiting(pool, 2)
        impatient.cancel()
        pool.release(held)
        assert await asyncio.wait_for(patient, 1) is held
        with pytest.raises(asyncio.CancelledError):
            await impatient
        pool.release(held)
    finally:
        await pool.close()


async def test_close_fails_waiters_and_refuses_new_acquires():
    pool = ConnectionPool(dsn(), size=1, server_settings={})
    await pool.start()
    held = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    await until_waiting(pool, 1)
    await pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        await waiter
    with pytest.raises(RuntimeError, match="closed"):
        await pool.acquire()
    pool.release(held)
    assert held.is_closed()


async def test_a_full_queue_refuses_at_once_and_the_pool_recovers():
    """Back-pressure: past ``max_waiting`` waiters an acquire fails fast, naming the limit."""
    pool = ConnectionPool(dsn(), size=1, server_settings={}, max_waiting=1)
    await pool.start()
    try:
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await until_waiting(pool, 1)
        with pytest.raises(StoreBusy, match="IVRKIT_DB_POOL_SIZE"):
            await pool.acquire()
        pool.release(held)
        assert await asyncio.wait_for(waiter, 2) is held
        pool.release(held)
    finally:
        await pool.close()


async def test_discarding_idle_connections_replaces_them_on_demand():
    pool = ConnectionPool(dsn(), size=2, server_settings={})
    await pool.start(warm=2)
    try:
        first = await pool.acquire()
        old = await backend_pid(first)
        pool.release(first)
        pool.discard_idle()
        assert first.is_closed()
        again = await pool.acquire()
        assert await backend_pid(again) != old
        pool.release(again)
    finally:
        await pool.close()


async def test_connecting_gives_up_after_the_connect_timeout():
    """asyncpg's default is 60 s; a server that accepts and never answers must not stall us."""
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    pool = ConnectionPool(
        f"postgresql://postgres@127.0.0.1:{port}/x",
        size=1,
        server_settings={},
        connect_timeout=0.2,
    )
    try:
        with pytest.raises(TimeoutError):
            await pool.acquire()
        with pytest.raises(TimeoutError):  # the failed slot was given back: it tries again
            await pool.acquire()
    finally:
        await pool.close()
        silent.close()
        for writer in accepted:
            writer.close()
            await writer.wait_closed()
        await silent.wait_closed()
