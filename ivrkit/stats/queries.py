"""The funnel's SQL: every count, distinct count and percentile is computed by the database.

The event log is the only source. Each answered webhook (``start``/``action`` event) stores
the transitions it fired as text, ``flow:source -trigger-> dest`` joined by ``; ``; the
queries split that text into one row per transition inside the database (SQLite:
``json_each`` over the text turned into a JSON array; PostgreSQL: ``unnest`` of
``string_to_array``) and parse each row with ``instr``/``strpos`` and ``substr``. Nothing
per event crosses to Python: only one row per transition, state or ending does.

Time spent in a state is the gap between the webhook that moved the call into it and the
next one (a window function over the call's events), or the call's end for the last
state; percentiles are ``percentile_cont`` on PostgreSQL and the same interpolation over
``row_number`` on SQLite, so both backends give the same figures.

Which calls: those created in [since, until) (SQLite reads the event's own copy of its
call's creation time, which is indexed; PostgreSQL asks the calls table), and with a
flow named, the calls that took any transition of that flow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Float,
    Index,
    MetaData,
    Select,
    Table,
    Text,
    case,
    cast,
    extract,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from ivrkit.store.schema import calls, events

FINAL = ("completed", "busy", "failed", "no-answer", "canceled")
ANSWERED = ("start", "action")
"""Event kinds that fired transitions (replays, errors and callbacks fire none)."""
TRANSFER_TRIGGERS = ("dial:completed", "dial:answered")
QUEUED_TRIGGERS = ("queue:bridged", "queue:bridging-in-process")
RECORDED_TRIGGER = "recorded"
ENTER_TRIGGER = "enter"


class Dialect:
    """The few functions whose names or shapes differ between SQLite and PostgreSQL."""

    def __init__(self, name: str) -> None:
        self.sqlite = name == "sqlite"

    def find(self, text: Any, needle: str) -> ColumnElement[int]:
        """1-based position of ``needle`` in ``text`` (0 when absent)."""
        if self.sqlite:
            return func.instr(text, needle)
        return func.strpos(text, needle)

    def before(self, text: Any, needle: str) -> ColumnElement[str]:
        return func.substr(text, 1, self.find(text, needle) - 1)

    def after(self, text: Any, needle: str) -> ColumnElement[str]:
        return func.substr(text, self.find(text, needle) + len(needle))

    def between(self, text: Any, left: str, right: str) -> ColumnElement[str]:
        start = self.find(text, left) + len(left)
        return func.substr(text, start, self.find(text, right) - start)

    def bytewise(self, key: Any) -> Any:
        """``key`` compared byte by byte, for grouping and partitioning only.

        PostgreSQL sorts and hashes text in the database's collation (``strcoll`` for
        ``C.UTF-8`` or ``en_US``), which made the report's sorts by CallSid, path and
        state 40 % of its time; with ``COLLATE "C"`` it compares bytes. The groups are
        the same (equal texts are equal bytes in a deterministic collation) and no row
        order of the report depends on it (``assemble`` sorts). SQLite already compares
        bytes (BINARY)."""
        if self.sqlite:
            return key
        return key.collate("C")

    def seconds(self, later: Any, earlier: Any) -> ColumnElement[float]:
        if self.sqlite:
            return (func.julianday(later) - func.julianday(earlier)) * 86400.0
        return cast(extract("epoch", later - earlier), Float)

    def stamp(self, moment: Any) -> Any:
        """A time as the window compares and subtracts it (SQLite: parsed once, a number)."""
        return func.julianday(moment) if self.sqlite else moment

    def gap(self, later: Any, earlier: Any) -> ColumnElement[float]:
        """Seconds between two :meth:`stamp` values."""
        if self.sqlite:
            days: ColumnElement[float] = later - earlier
            return days * 86400.0
        return cast(extract("epoch", later - earlier), Float)

    def segments(self, fired: Any) -> Any:
        """A table-valued function with one row (column ``s``) per fired transition."""
        if self.sqlite:
            # The text as a JSON array: state names, triggers and words never hold '"' or
            # '\' in practice, but a spoken word might; escaped, they cannot break it.
            escaped = func.replace(func.replace(fired, "\\", "\\\\"), '"', '\\"')
            array = literal('["') + func.replace(escaped, "; ", '","') + literal('"]')
            return func.json_each(array).table_valued("value", name="seg")
        segments = func.unnest(func.string_to_array(fired, "; "))
        return segments.table_valued("value", name="seg").render_derived(with_types=False)


def _window(
    d: Dialect, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """Conditions on events: their call was created in [since, until)."""
    if since is None and until is None:
        return []
    if d.sqlite:
        created = events.c.call_created
        found = []
        if since is not None:
            found.append(created >= since)
        if until is not None:
            found.append(created < until)
        return found
    return [events.c.call_sid.in_(select(calls.c.call_sid).where(*_call_window(since, until)))]


def _call_window(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    found: list[ColumnElement[bool]] = []
    if since is not None:
        found.append(calls.c.created_at >= since)
    if until is not None:
        found.append(calls.c.created_at < until)
    return found


def _in_flow(fired: Any, flow: str) -> ColumnElement[bool]:
    """``fired`` holds a transition of ``flow`` (or enters it as a sub-flow)."""
    return or_(
        fired.startswith(f"{flow}:", autoescape=True),
        fired.contains(f"; {flow}:", autoescape=True),
        fired.contains(f"-> {flow}:", autoescape=True),
    )


class FunnelQueries:
    """The statements behind one funnel report: one for the counts, one for the times."""

    def __init__(
        self, dialect: str, flow: str | None, since: datetime | None, until: datetime | None
    ) -> None:
        self.d = Dialect(dialect)
        self.flow = flow
        self.since = since
        self.until = until

    def _call_key(self) -> tuple[Any, ...]:
        """How a call's events are grouped. SQLite: by creation time, then CallSid, the
        order of its funnel index (r0003_ops), so grouping and windows need no sort."""
        if self.d.sqlite:
            return (events.c.call_created, events.c.call_sid)
        return (self.d.bytewise(events.c.call_sid),)

    def _call_sid(self) -> Any:
        """The CallSid as :meth:`_call_key` groups it (so a grouped query may select it)."""
        return self.d.bytewise(events.c.call_sid).label("call_sid")

    def paths(self) -> Any:
        """Per call, every transition it fired, as one text (NULL when it fired none):
        one row for each call, since a call's row and its first event are saved together."""
        fired = case((events.c.fired != "", events.c.fired))  # NULL: left out of the text
        if self.d.sqlite:
            # In index order: a call's events arrive together, oldest first.
            joined = func.group_concat(fired, "; ")
        else:
            # Unordered: PostgreSQL can then hash the events by call instead of sorting a
            # million rows; the order of a path's transitions changes none of the counts.
            joined = func.string_agg(fired, literal("; "))
        return (
            select(self._call_sid(), joined.label("path"))
            .where(events.c.kind.in_(ANSWERED), *_window(self.d, self.since, self.until))
            .group_by(*self._call_key())
            .subquery("paths")
        )

    def groups(self) -> Any:
        """Calls alike (same path, final flow and state, ending), counted: few rows.

        Grouped first by what each call has (its path, where it is, whether it ended and
        whether our answer ended it); the ending is then worked out once per group, not
        once per call (its tests read the whole path)."""
        paths = self.paths()
        path = self.d.bytewise(func.coalesce(paths.c.path, "")).label("path")
        flow = self.d.bytewise(calls.c.flow).label("flow")
        state = self.d.bytewise(calls.c.state).label("state")
        ended = case((calls.c.status.in_(FINAL), 1), else_=0).label("ended")
        ivr_ended = case(
            (
                or_(
                    calls.c.last_twiml.contains("<Hangup"),
                    calls.c.last_twiml.contains("<Reject"),
                ),
                1,
            ),
            else_=0,
        ).label("ivr_ended")
        alike = (
            select(path, flow, state, ended, ivr_ended, func.count().label("n"))
            # From the paths, each call's row found by its key: cheaper than indexing
            # the paths (long texts) to find them from the calls.
            .select_from(paths.join(calls, calls.c.call_sid == paths.c.call_sid))
            .where(*_call_window(self.since, self.until))
            .group_by(path, flow, state, ended, ivr_ended)
        )
        if self.flow is not None:
            alike = alike.where(or_(_in_flow(path, self.flow), calls.c.flow == self.flow))
        a = alike.subquery("alike")

        def took(triggers: tuple[str, ...]) -> ColumnElement[bool]:
            return or_(*(a.c.path.contains(f" -{t}-> ", autoescape=True) for t in triggers))

        ending = case(
            (a.c.ended == 0, "in_progress"),
            (took(TRANSFER_TRIGGERS), "transferred"),
            (took(QUEUED_TRIGGERS), "queued"),
            (took((RECORDED_TRIGGER,)), "voicemail"),
            (a.c.ivr_ended == 1, "completed"),
            else_="hung_up",
        ).label("ending")
        return select(
            func.row_number().over().label("gid"), a.c.path, a.c.flow, a.c.state, ending, a.c.n
        ).cte("groups")

    def counts(self) -> Select[Any]:
        """Rows (what, flow, a, b, c, n): ``ending`` (name), ``dropped`` (state),
        ``transition`` (source, trigger, dest) and ``reached`` (state)."""
        d = self.d
        g = self.groups()
        seg = d.segments(g.c.path)
        s = seg.c.value
        segs = (
            select(
                g.c.gid,
                g.c.n,
                d.before(s, ":").label("flow"),
                d.between(s, ":", " -").label("source"),
                d.between(s, " -", "-> ").label("trigger"),
                d.after(s, "-> ").label("dest"),
            )
            .select_from(g)
            .join(seg, true())
            .where(g.c.path != "")
            .cte("segs")
        )
        blank = literal("")
        endings = select(
            literal("ending").label("what"), blank, g.c.ending, blank, blank, func.sum(g.c.n)
        ).group_by(g.c.ending)
        dropped = (
            select(literal("dropped"), g.c.flow, g.c.state, blank, blank, func.sum(g.c.n))
            .where(g.c.ending == "hung_up")
            .group_by(g.c.flow, g.c.state)
        )
        edges = select(
            literal("transition"),
            segs.c.flow,
            segs.c.source,
            segs.c.trigger,
            segs.c.dest,
            func.sum(segs.c.n),
        ).group_by(segs.c.flow, segs.c.source, segs.c.trigger, segs.c.dest)
        entering = segs.c.trigger == ENTER_TRIGGER
        # A group's calls were in every state its path leaves or enters, and the one they
        # are in now (a call that hung up at its first prompt fired nothing).
        states = union_all(
            select(segs.c.gid, segs.c.n, segs.c.flow, segs.c.source.label("state")),
            select(
                segs.c.gid,
                segs.c.n,
                case((entering, d.before(segs.c.dest, ":")), else_=segs.c.flow),
                case((entering, d.after(segs.c.dest, ":")), else_=segs.c.dest),
            ),
            select(g.c.gid, g.c.n, g.c.flow, g.c.state),
        ).subquery("states")
        distinct = select(states).distinct().subquery("distinct_states")
        reached = select(
            literal("reached"),
            distinct.c.flow,
            distinct.c.state,
            blank,
            blank,
            func.sum(distinct.c.n),
        ).group_by(distinct.c.flow, distinct.c.state)
        if self.flow is not None:
            dropped = dropped.where(g.c.flow == self.flow)
            edges = edges.where(segs.c.flow == self.flow)
            reached = reached.where(distinct.c.flow == self.flow)
        return union_all(endings, dropped, edges, reached)  # type: ignore[return-value]

    def left_visits(self) -> Select[Any]:
        """(flow, state, spent) per visit a webhook ended: from the webhook that brought
        the call in to the one answered in the state (a window over the call's events)."""
        d = self.d
        key = self._call_key()
        stamp = d.stamp(events.c.at)
        timed = (
            select(
                events.c.kind,
                events.c.state,
                case((events.c.fired == "", ""), else_=d.before(events.c.fired, ":")).label("flow"),
                stamp.label("at"),
                func.lag(stamp).over(partition_by=key, order_by=events.c.at).label("prev"),
            )
            .where(events.c.kind.in_(ANSWERED), *_window(d, self.since, self.until))
            .subquery("timed")
        )
        left = select(
            timed.c.flow, timed.c.state, d.gap(timed.c.at, timed.c.prev).label("spent")
        ).where(timed.c.kind == "action", timed.c.prev.is_not(None))
        if self.flow is not None:
            left = left.where(timed.c.flow == self.flow)
        return left

    def last_visits(self) -> Select[Any]:
        """(flow, state, spent) in the state each ended call ended in: from its last
        webhook to its end."""
        d = self.d
        ends = (
            select(self._call_sid(), func.max(events.c.at).label("last"))
            .where(events.c.kind.in_(ANSWERED), *_window(d, self.since, self.until))
            .group_by(*self._call_key())
            .subquery("ends")
        )
        last = (
            select(calls.c.flow, calls.c.state, d.seconds(calls.c.ended_at, ends.c.last))
            .select_from(ends.join(calls, calls.c.call_sid == ends.c.call_sid))
            .where(calls.c.ended_at.is_not(None))
        )
        if self.flow is not None:
            last = last.where(calls.c.flow == self.flow)
        return last

    def visits(self) -> Select[Any]:
        return union_all(self.left_visits(), self.last_visits())  # type: ignore[return-value]

    def times(self) -> Select[Any]:
        """PostgreSQL: (flow, state, median, p90) of the visits, in one statement."""
        v = self.visits().subquery("visits")
        flow = self.d.bytewise(v.c.flow).label("flow")
        state = self.d.bytewise(v.c.state).label("state")
        return select(
            flow,
            state,
            func.percentile_cont(0.5).within_group(v.c.spent),
            func.percentile_cont(0.9).within_group(v.c.spent),
        ).group_by(flow, state)


VISITS = Table(
    "ivrkit_funnel_visits",
    MetaData(),
    Column("flow", Text),
    Column("state", Text),
    Column("spent", Float),
    prefixes=["TEMPORARY"],
)
"""SQLite: the report's visits, on the reading connection only (dropped after)."""
VISITS_ORDER = Index("ix_ivrkit_funnel_visits", VISITS.c.flow, VISITS.c.state, VISITS.c.spent)


async def sqlite_times(conn: AsyncConnection, queries: FunnelQueries) -> list[tuple[Any, ...]]:
    """(flow, state, median, p90) on SQLite, which has no percentile_cont: the visits go
    into a temporary table, are ordered once by an index, and each percentile reads the
    one or two visits either side of its position (``ORDER BY ... LIMIT 2 OFFSET k``),
    interpolated as percentile_cont does. A window ranking every visit cost 4x more."""
    await conn.execute(DropTable(VISITS, if_exists=True))
    await conn.execute(CreateTable(VISITS))  # its index comes after the rows: cheaper
    try:
        for visits in (queries.left_visits(), queries.last_visits()):
            await conn.execute(insert(VISITS).from_select(["flow", "state", "spent"], visits))
        await conn.execute(CreateIndex(VISITS_ORDER))
        v = VISITS.c
        sizes = await run(conn, select(v.flow, v.state, func.count()).group_by(v.flow, v.state))
        found = []
        for flow, state, n in sizes:
            found.append(
                (flow, state, *[await _percentile(conn, flow, state, n, f) for f in (0.5, 0.9)])
            )
        return found
    finally:
        await conn.execute(DropTable(VISITS, if_exists=True))


async def _percentile(
    conn: AsyncConnection, flow: str, state: str, n: int, fraction: float
) -> float | None:
    position = (n - 1) * fraction
    low = int(position)
    v = VISITS.c
    pair = (
        select(v.spent)
        .where(v.flow == flow, v.state == state)
        .order_by(v.spent)
        .limit(2)
        .offset(low)
        .subquery("pair")
    )
    weight = position - low
    value = (
        await conn.execute(
            select(
                func.min(pair.c.spent) + weight * (func.max(pair.c.spent) - func.min(pair.c.spent))
            )
        )
    ).scalar()
    return None if value is None else float(value)


async def run(conn: AsyncConnection, query: Select[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await conn.execute(query)).all()]
