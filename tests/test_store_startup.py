"""Starting several app processes at once on one fresh database must not race on the schema."""

from __future__ import annotations

import asyncio
import os

import pytest

from ivrkit.errors import StoreInUseError
from ivrkit.store import create_store
from ivrkit.store.postgres import CALL_LOCK_SPACE
from tests.conftest import PG_ENV, reset_database


async def test_postgres_stores_opening_together_on_a_fresh_database_all_start():
    database_url = os.environ.get(PG_ENV)
    if not database_url:
        pytest.skip(f"PostgreSQL run skipped: set {PG_ENV}")
    await reset_database(database_url)
    stores = [create_store(database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        await stores[0].ping()
    finally:
        for store in stores:
            await store.close()


async def test_one_sqlite_file_is_served_by_one_store_at_a_time(tmp_path):
    """A second store would trust its own memory of live calls and overwrite the first's."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    stores = [create_store(url) for _ in range(4)]
    try:
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 3
        assert all(isinstance(r, StoreInUseError) for r in refused)
        assert "calls.db is already served by another ivrkit process" in str(refused[0])
        assert "PostgreSQL" in str(refused[0])
        (opened,) = [s for s, r in zip(stores, results, strict=True) if r is None]
        await opened.ping()
        await opened.close()
        later = create_store(url)
        await later.open()  # the file is free again once its store closed
        await later.ping()
        await later.close()
    finally:
        for store in stores:
            await store.close()


def test_pool_size_setting_is_read_and_checked():
    from ivrkit import Settings
    from ivrkit.errors import ConfigError

    assert Settings.from_env({"IVRKIT_DB_POOL_SIZE": "3"}).db_pool_size == 3
    assert Settings.from_env({}).db_pool_size == 20
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match="IVRKIT_DB_POOL_SIZE"):
            Settings.from_env({"IVRKIT_DB_POOL_SIZE": bad})


async def test_postgres_webhooks_of_one_process_hold_their_locks_on_one_connection():
    """Claims and saves of many calls share one connection's round trips."""
    database_url = os.environ.get(PG_ENV)
    if not database_url:
        pytest.skip(
            f"PostgreSQL run skipped: set {PG_ENV} (CI sets it when 127.0.0.1:5432 answers)"
        )
    await reset_database(database_url)
    store = create_store(database_url, pool_size=2)
    await store.open()
    seen: list[tuple[int, int]] = []
    inside = asyncio.Barrier(6)

    async def webhook(n: int) -> None:
        async with store.session(f"CA{n:032d}") as session:
            assert session.record is None
            await inside.wait()  # all six calls are claimed now
            async with store.engine.connect() as conn:
                held = await conn.exec_driver_sql(
                    "SELECT count(DISTINCT a.pid), count(*) FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    f"WHERE l.locktype = 'advisory' AND l.classid = {CALL_LOCK_SPACE} "
                    "AND l.granted AND a.datname = current_database()"
                )
                seen.append(tuple(held.one()))

    try:
        await asyncio.gather(*(webhook(n) for n in range(6)))
    finally:
        await store.close()
    assert seen[0] == (1, 6)  # six calls' locks, all on one connection
