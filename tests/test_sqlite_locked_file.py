"""SQLite: the webhook path runs on the loop's thread, so it must never wait for a lock there.

Another connection holding the file's write lock (a tool, a second process by mistake)
sends the batch to a worker thread, which waits its turn while the loop serves others.
(Reads need no such path: in WAL mode a writer never blocks them.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from tests.conftest import OPEN_HOURS, phone
from tests.driver import BASE, TOKEN

HOLD_SECONDS = 0.5


async def hold_lock_while_ticking(other: sqlite3.Connection) -> tuple[float, int]:
    """Keep ``other``'s lock for HOLD_SECONDS, counting the loop's turns meanwhile."""
    ticks = 0
    released_at = 0.0

    async def release_later() -> None:
        nonlocal released_at
        await asyncio.sleep(HOLD_SECONDS)
        released_at = time.monotonic()
        other.execute("COMMIT")

    async def tick() -> None:
        nonlocal ticks
        while not released_at:
            ticks += 1
            await asyncio.sleep(0.01)

    await asyncio.gather(release_later(), tick())
    return released_at, ticks


@pytest.fixture
async def support_line(tmp_path):
    path = tmp_path / "calls.db"
    settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", auth_token=TOKEN)
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield app, client, path


async def test_a_write_waits_for_a_locked_file_without_stalling_the_loop(support_line):
    app, client, path = support_line
    call = phone(client, "support_line")
    await call.start()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # the write lock, held by someone else

    pressing = asyncio.create_task(call.press("3"))
    released_at, ticks = await hold_lock_while_ticking(other)
    answer = await pressing
    answered_at = time.monotonic()
    other.close()

    assert answer.status == 200
    assert answer.find("Record") is not None  # voicemail, not the apology
    assert answered_at >= released_at  # it waited for the lock...
    assert ticks >= HOLD_SECONDS / 0.01 / 2  # ...while the loop kept running
    record = await app.state.ivr.store.load(call.sid)
    assert (record.state, record.step) == ("voicemail", 2)
