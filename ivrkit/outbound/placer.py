"""Placing calls from another process while ``ivrkit serve`` owns the SQLite file.

An SQLite file is served by one process (``EmbeddedStore`` keeps live calls in memory and
locks ``<file>.lock``), so ``ivrkit call`` cannot open a second store on it. It does not
need one: a placed call's row is *new*, and a row the server has never seen is not in its
memory, so inserting it from outside is safe. :class:`SqlitePlacer` does only that: it
inserts the placed call's row and its ``placed`` event (``INSERT ... ON CONFLICT DO
NOTHING``, waiting its turn for SQLite's write lock like any other connection), and reads
calls back. It never changes a row that exists: when the call's first webhook came first,
the server owns that row, so the data is not added (``prepare_call`` says False, and the
placer logs it) and the flow runs without it, as it started.

On PostgreSQL every process opens the real store; this is for SQLite only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3

from sqlalchemy.engine import make_url

from ivrkit.errors import ConfigError
from ivrkit.records import CallEvent, CallRecord
from ivrkit.store.codec import record_from_values
from ivrkit.store.contract import encode_record
from ivrkit.store.schema import CALL_COLUMNS, EVENT_COLUMNS, calls, events
from ivrkit.store.sqlite import _sqlite_call_row, _sqlite_event_row, _sqlite_time

log = logging.getLogger("ivrkit.outbound")

BUSY_TIMEOUT_MS = 5000
_INSERT_CALL = (
    f"INSERT INTO {calls.name} ({', '.join(CALL_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(CALL_COLUMNS))}) ON CONFLICT (call_sid) DO NOTHING"
)
_INSERT_EVENT = (
    f"INSERT INTO {events.name} ({', '.join(EVENT_COLUMNS)}, call_created) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)
_READ = f"SELECT {', '.join(CALL_COLUMNS)} FROM {calls.name} WHERE call_sid = ?"


class SqlitePlacer:
    """The part of the store ``place_call`` and ``call_outcome`` need, from outside the
    process that serves the SQLite file: insert a placed call, read a call."""

    dialect = "sqlite"

    def __init__(self, database_url: str) -> None:
        self.path = make_url(database_url).database or ""
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if not os.path.exists(self.path):
            raise ConfigError(
                f"{self.path} does not exist: start ivrkit serve on it first (it creates "
                "the tables), or point --database-url at the server's database"
            )
        self._db = await asyncio.to_thread(_connect, self.path)

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the placer is not open")
        return self._db

    async def prepare_call(self, record: CallRecord) -> bool:
        if record.step != 0:
            raise ValueError("prepare_call stores a call not started yet: step must be 0")
        encoded = encode_record(record)  # refuses what the codec cannot keep, first
        row = _sqlite_call_row(record, encoded)
        placed = CallEvent(
            call_sid=record.call_sid,
            step=0,
            kind="placed",
            state=record.state,
            params={"To": record.caller} if record.caller else {},
            at=record.created_at,
        )
        event = _sqlite_event_row(placed, _sqlite_time(record.created_at))
        inserted = await asyncio.to_thread(_insert, self._conn(), row, event)
        if not inserted:
            log.warning(
                "call %s: its first webhook came first and the server owns the call; "
                "its data was not added",
                record.call_sid,
            )
        return inserted

    async def load(self, call_sid: str) -> CallRecord | None:
        row = await asyncio.to_thread(lambda: self._conn().execute(_READ, (call_sid,)).fetchone())
        return record_from_values(row) if row is not None else None


def _connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    found = db.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (calls.name,)
    ).fetchone()[0]
    if not found:
        db.close()
        raise ConfigError(
            f"{path} has no ivrkit tables: start ivrkit serve on it first (it creates them)"
        )
    return db


def _insert(db: sqlite3.Connection, row: tuple[object, ...], event: tuple[object, ...]) -> bool:
    db.execute("BEGIN IMMEDIATE")
    try:
        inserted = db.execute(_INSERT_CALL, row).rowcount == 1
        if inserted:
            db.execute(_INSERT_EVENT, event)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return inserted
