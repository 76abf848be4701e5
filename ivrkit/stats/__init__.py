"""Funnel analytics over the event log: how calls moved through a flow, and where they left.

    funnel = await ivrkit.stats.funnel("sqlite+aiosqlite:///ivrkit.db", flow="support_line")
    funnel.calls, funnel.containment_rate, funnel.state("main_menu").dropped

Every figure is computed by the database (see :mod:`ivrkit.stats.queries`); this module
opens the connection, runs the statements and puts their rows into :class:`Funnel`. It
reads only, so it may run beside a serving process (SQLite readers never wait for its
writer in WAL mode).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ivrkit.stats.model import CONTAINED, ENDINGS, Funnel, StateStats, Transition
from ivrkit.stats.queries import FunnelQueries, run, sqlite_times

REPORT_WORK_MEM = "256MB"
SQLITE_PRAGMAS = (
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 4294967296",
    "PRAGMA cache_size = -131072",
)

__all__ = ["CONTAINED", "ENDINGS", "Funnel", "StateStats", "Transition", "engine_for", "funnel"]


def engine_for(database_url: str) -> AsyncEngine:
    """A read engine for a store URL, spelled as ``create_store`` accepts it.

    Not a store: opening a store would take the SQLite file's owner lock (the server's)
    and run migrations; a report only reads.
    """
    for short, full in (
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("sqlite:///", "sqlite+aiosqlite:///"),
    ):
        if database_url.startswith(short):
            database_url = full + database_url[len(short) :]
    return create_async_engine(database_url)


async def funnel(
    store_or_url: Any,
    flow: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Funnel:
    """The funnel of ``flow`` (every flow when None) for calls created in [since, until).

    ``store_or_url``: a store (``app.state.ivr.store``), an ``AsyncEngine``, or a database
    URL. ``since``/``until`` are naive UTC, as the store keeps times (an aware datetime
    is converted).
    """
    since, until = _naive_utc(since), _naive_utc(until)
    owned = isinstance(store_or_url, str)
    if owned:
        engine = engine_for(store_or_url)
    elif isinstance(store_or_url, AsyncEngine):
        engine = store_or_url
    else:
        engine = store_or_url.engine
    queries = FunnelQueries(engine.dialect.name, flow, since, until)

    async def counts() -> list[tuple[Any, ...]]:
        async with engine.connect() as conn:
            await _roomy(conn)
            return await run(conn, queries.counts())

    async def times() -> list[tuple[Any, ...]]:
        async with engine.connect() as conn:
            await _roomy(conn)
            if engine.dialect.name == "sqlite":
                return await sqlite_times(conn, queries)
            return await run(conn, queries.times())

    try:
        # Two connections: the database works on both halves at once (SQLite too: each
        # connection has its own thread, and a read of one does not wait for the other).
        # A task group: when one half fails the other is cancelled, so neither outlives
        # the report with a connection checked out.
        async with asyncio.TaskGroup() as group:
            counting = group.create_task(counts())
            timing = group.create_task(times())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    finally:
        if owned:
            await engine.dispose()
    return assemble(flow, since, until, counting.result(), timing.result())


def assemble(
    flow: str | None,
    since: datetime | None,
    until: datetime | None,
    counts: list[tuple[Any, ...]],
    times: list[tuple[Any, ...]],
) -> Funnel:
    """The report from the rows of the two queries (one row per state, edge or ending)."""
    states: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(flow_name: str, state: str) -> dict[str, Any]:
        return states.setdefault((flow_name, state), {"flow": flow_name, "state": state})

    edges = []
    counted = dict.fromkeys(ENDINGS, 0)
    for what, flow_name, a, b, c, n in counts:
        n = int(n)
        if what == "ending":
            counted[str(a)] = n
        elif what == "dropped":
            entry(flow_name, a)["dropped"] = n
        elif what == "reached":
            entry(flow_name, a)["reached"] = n
        else:
            edges.append(Transition(flow_name, a, b, c, n))
            stats = entry(flow_name, a)
            if not _passing(b):
                stats["answers"] = stats.get("answers", 0) + n
            kind = {"no_input": "no_input", "no_match": "no_match", "give_up": "give_ups"}.get(b)
            if kind is not None:
                stats[kind] = stats.get(kind, 0) + n
    for flow_name, state, median, p90 in times:
        stats = entry(flow_name, state)
        stats["median_seconds"] = _seconds(median)
        stats["p90_seconds"] = _seconds(p90)
    return Funnel(
        flow=flow,
        since=since,
        until=until,
        calls=sum(counted.values()),
        endings=counted,
        states=sorted(
            (StateStats(**values) for values in states.values()),
            key=lambda s: (s.flow, -s.reached, s.state),
        ),
        transitions=sorted(edges, key=lambda t: (t.flow, -t.count, t.source, t.trigger)),
    )


async def _roomy(conn: AsyncConnection) -> None:
    """PostgreSQL, for this report's transaction only: memory for its sorts and hashes
    (with the default 4 MB, ordering a million events by call spills to disk), and no JIT
    (compiling the statements' expressions took longer than running them)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))
        await conn.execute(text("SET LOCAL jit = off"))
    else:
        # SQLite: sorts and temporary tables in memory, the file read through a mapping
        # (a system call per page cost more than the report's own work).
        for pragma in SQLITE_PRAGMAS:
            await conn.exec_driver_sql(pragma)


def _passing(trigger: str) -> bool:
    """A trigger fired on the way through a state, not by an answer to it."""
    return trigger in ("next", "enter", "returned") or trigger.startswith("goto:")


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
