"""Starting several app processes at once on one fresh database must not race on the schema."""

from __future__ import annotations

import asyncio

from ivrkit.store import create_store
from tests.conftest import reset_database


async def test_stores_opening_together_on_a_fresh_database_all_start(database_url):
    await reset_database(database_url)
    stores = [create_store(database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        await stores[0].ping()
    finally:
        for store in stores:
            await store.close()
