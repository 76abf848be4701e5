"""SQLite on a full filesystem: calls get the apology, nothing runs ahead, calls go on after.

The filesystem is a real tmpfs of 1 MB, mounted by the test (it needs root; otherwise the
test skips and says why), filled with a file until the kernel refuses more.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from tests.conftest import OPEN_HOURS, phone
from tests.driver import BASE, TOKEN


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has not one byte more; its path, to free it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (65536, 4096, 1):
            with pytest.raises(OSError, match="No space left") as refused:
                write_forever(out, chunk)
            assert refused.value.errno == errno.ENOSPC
    return filler


def write_forever(out: Any, size: int) -> None:
    while True:
        out.write(b"\0" * size)


async def test_a_full_disk_gets_apologies_503s_and_calls_continue_once_freed(small_disk):
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{small_disk / 'calls.db'}", auth_token=TOKEN
    )
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    async with app.router.lifespan_context(app):
        store = app.state.ivr.store
        # A completed checkpoint lets the log start over and reuse its space, so writes
        # could succeed on the full disk (rightly): stopped, so this test sees the failure.
        store._checkpointer.cancel()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            call = phone(client, "support_line")
            menu = await call.start()
            assert menu.find("Gather") is not None
            stored = await store.load(call.sid)

            filler = fill(small_disk)
            answer = await call.press("1")
            assert answer.status == 200
            assert answer.said() == [SupportLine.apology]
            assert answer.find("Dial").text == SupportLine.fallback_number
            async with store.session(call.sid) as session:  # the cache: as the file has it
                assert (session.record.step, session.record.state) == (stored.step, stored.state)
            assert (await call.status("completed", 12)).status == 503
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert "database or disk is full" in health.json()["reason"]

            filler.unlink()
            call.last = menu  # Twilio retries the menu's action
            answer = await call.press("1")
            assert answer.find("Number").text == "+15005550111"  # sales: the call goes on
            assert (await call.status("completed", 12)).status == 204
            assert (await client.get("/healthz")).status_code == 200
            record = await store.load(call.sid)
            assert (record.state, record.status, record.duration) == ("sales", "completed", 12)
