"""Funnel analytics over the event log: how calls moved through a flow, and where they left.

    funnel = await ivrkit.stats.funnel("sqlite+aiosqlite:///ivrkit.db", flow="support_line")
    funnel.calls, funnel.containment_rate, funnel.state("main_menu").dropped

Every figure is computed by the database (see :mod:`ivrkit.stats.queries`); this module
opens the connection, runs the statements and puts their rows into :class:`Funnel`. It
reads only, so it may run beside a serving process (SQLite readers never wait for its
writer in WAL mode).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ivrkit.stats.model import CONTAINED, ENDINGS, Funnel, StateStats, Transition
from ivrkit.stats.queries import FunnelQueries, run

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
    try:
        async with engine.connect() as conn:
            transitions = await run(conn, queries.transitions())
            reached = await run(conn, queries.reached())
            endings = await run(conn, queries.endings())
            dropped = await run(conn, queries.dropped())
            times = await run(conn, queries.times())
    finally:
        if owned:
            await engine.dispose()
    return assemble(flow, since, until, transitions, reached, endings, dropped, times)


def assemble(
    flow: str | None,
    since: datetime | None,
    until: datetime | None,
    transitions: list[tuple[Any, ...]],
    reached: list[tuple[Any, ...]],
    endings: list[tuple[Any, ...]],
    dropped: list[tuple[Any, ...]],
    times: list[tuple[Any, ...]],
) -> Funnel:
    """The report from the rows of each query (one row per state, edge or ending)."""
    states: dict[tuple[str, str], dict[str, Any]] = {}

    def entry(flow_name: str, state: str) -> dict[str, Any]:
        return states.setdefault((flow_name, state), {"flow": flow_name, "state": state})

    edges = []
    for flow_name, source, trigger, dest, count in transitions:
        edges.append(Transition(flow_name, source, trigger, dest, int(count)))
        stats = entry(flow_name, source)
        if not _passing(trigger):
            stats["answers"] = stats.get("answers", 0) + int(count)
        kind = {"no_input": "no_input", "no_match": "no_match", "give_up": "give_ups"}.get(trigger)
        if kind is not None:
            stats[kind] = stats.get(kind, 0) + int(count)
    for flow_name, state, count in reached:
        entry(flow_name, state)["reached"] = int(count)
    for flow_name, state, count in dropped:
        if flow is None or flow_name == flow:
            entry(flow_name, state)["dropped"] = int(count)
    for flow_name, state, median, p90 in times:
        stats = entry(flow_name, state)
        stats["median_seconds"] = _seconds(median)
        stats["p90_seconds"] = _seconds(p90)
    counted = {name: 0 for name in ENDINGS}
    for ending, count in endings:
        counted[str(ending)] = int(count)
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


def _passing(trigger: str) -> bool:
    """A trigger fired on the way through a state, not by an answer to it."""
    return trigger in ("next", "enter", "returned") or trigger.startswith("goto:")


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _naive_utc(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
