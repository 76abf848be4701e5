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
    ColumnElement,
    Float,
    Integer,
    Select,
    case,
    cast,
    extract,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.selectable import Subquery

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

    def seconds(self, later: Any, earlier: Any) -> ColumnElement[float]:
        if self.sqlite:
            return (func.julianday(later) - func.julianday(earlier)) * 86400.0
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
    """The statements behind one funnel report."""

    def __init__(
        self, dialect: str, flow: str | None, since: datetime | None, until: datetime | None
    ) -> None:
        self.d = Dialect(dialect)
        self.flow = flow
        self.since = since
        self.until = until

    def answered(self) -> Subquery:
        """Events that fired transitions, of the calls in the report's period."""
        return (
            select(
                events.c.id,
                events.c.call_sid,
                events.c.kind,
                events.c.state,
                events.c.fired,
                events.c.at,
            )
            .where(events.c.kind.in_(ANSWERED), *_window(self.d, self.since, self.until))
            .subquery("answered")
        )

    def parsed(self) -> Subquery:
        """One row per fired transition: call_sid, flow, source, trigger, dest."""
        d = self.d
        ev = self.answered()
        seg = d.segments(ev.c.fired)
        s = seg.c.value
        return (
            select(
                ev.c.call_sid,
                d.before(s, ":").label("flow"),
                d.between(s, ":", " -").label("source"),
                d.between(s, " -", "-> ").label("trigger"),
                d.after(s, "-> ").label("dest"),
            )
            .select_from(ev)
            .join(seg, true())
            .where(ev.c.fired != "")  # a first answer may fire nothing (it waits at once)
            .subquery("parsed")
        )

    def transitions(self) -> Select[Any]:
        p = self.parsed()
        query = select(p.c.flow, p.c.source, p.c.trigger, p.c.dest, func.count()).group_by(
            p.c.flow, p.c.source, p.c.trigger, p.c.dest
        )
        if self.flow is not None:
            query = query.where(p.c.flow == self.flow)
        return query

    def reached(self) -> Select[Any]:
        """Distinct calls per (flow, state) they were in: every transition's source and
        destination (a sub-flow's first state for a hand-off), and where each call is now
        (a call that hung up at its first prompt fired nothing)."""
        d = self.d
        p = self.parsed()
        entering = p.c.trigger == ENTER_TRIGGER
        left = select(p.c.call_sid, p.c.flow, p.c.source.label("state"))
        entered = select(
            p.c.call_sid,
            case((entering, d.before(p.c.dest, ":")), else_=p.c.flow).label("flow"),
            case((entering, d.after(p.c.dest, ":")), else_=p.c.dest).label("state"),
        )
        now = select(calls.c.call_sid, calls.c.flow, calls.c.state).where(
            *_call_window(self.since, self.until)
        )
        every = union_all(left, entered, now).subquery("entered")
        query = select(
            every.c.flow, every.c.state, func.count(func.distinct(every.c.call_sid))
        ).group_by(every.c.flow, every.c.state)
        if self.flow is not None:
            query = query.where(every.c.flow == self.flow)
        return query

    def per_call(self) -> Subquery:
        """One row per call of the report: where it is and how it ended."""
        ev = self.answered()
        fired = ev.c.fired

        def took(triggers: tuple[str, ...]) -> Any:
            hit = or_(*(fired.contains(f" -{t}-> ", autoescape=True) for t in triggers))
            return func.max(case((hit, 1), else_=0))

        flags = [
            took(TRANSFER_TRIGGERS).label("transferred"),
            took(QUEUED_TRIGGERS).label("queued"),
            took((RECORDED_TRIGGER,)).label("recorded"),
        ]
        if self.flow is not None:
            flags.append(func.max(case((_in_flow(fired, self.flow), 1), else_=0)).label("in_flow"))
        f = select(ev.c.call_sid, *flags).group_by(ev.c.call_sid).subquery("flags")
        ivr_ended = or_(
            calls.c.last_twiml.contains("<Hangup"), calls.c.last_twiml.contains("<Reject")
        )
        ending = case(
            (calls.c.status.not_in(FINAL), "in_progress"),
            (f.c.transferred == 1, "transferred"),
            (f.c.queued == 1, "queued"),
            (f.c.recorded == 1, "voicemail"),
            (ivr_ended, "completed"),
            else_="hung_up",
        )
        query = (
            select(calls.c.flow, calls.c.state, ending.label("ending"))
            .select_from(calls.outerjoin(f, f.c.call_sid == calls.c.call_sid))
            .where(*_call_window(self.since, self.until))
        )
        if self.flow is not None:
            query = query.where(or_(f.c.in_flow == 1, calls.c.flow == self.flow))
        return query.subquery("per_call")

    def endings(self) -> Select[Any]:
        c = self.per_call()
        return select(c.c.ending, func.count()).group_by(c.c.ending)

    def dropped(self) -> Select[Any]:
        c = self.per_call()
        return (
            select(c.c.flow, c.c.state, func.count())
            .where(c.c.ending == "hung_up")
            .group_by(c.c.flow, c.c.state)
        )

    def visits(self) -> Subquery:
        """(flow, state, seconds) per timed visit of a state."""
        d = self.d
        ev = self.answered()
        order = (ev.c.call_sid,)
        timed = select(
            ev.c.call_sid,
            ev.c.kind,
            ev.c.state,
            case((ev.c.fired == "", ""), else_=d.before(ev.c.fired, ":")).label("flow"),
            ev.c.at,
            func.lag(ev.c.at).over(partition_by=order, order_by=ev.c.id).label("prev"),
            func.lead(ev.c.id).over(partition_by=order, order_by=ev.c.id).label("next"),
        ).cte("timed")  # read twice: computed once
        # Left by a webhook: the gap since the webhook that brought the call in.
        left = select(
            timed.c.flow, timed.c.state, d.seconds(timed.c.at, timed.c.prev).label("spent")
        ).where(timed.c.kind == "action", timed.c.prev.is_not(None))
        # Where the call ended: from its last webhook to its end.
        last = (
            select(
                calls.c.flow,
                calls.c.state,
                d.seconds(calls.c.ended_at, timed.c.at).label("spent"),
            )
            .select_from(timed.join(calls, calls.c.call_sid == timed.c.call_sid))
            .where(timed.c.next.is_(None), calls.c.ended_at.is_not(None))
        )
        visits = union_all(left, last).subquery("visits")
        if self.flow is None:
            return visits
        return select(visits).where(visits.c.flow == self.flow).subquery("flow_visits")

    def times(self) -> Select[Any]:
        """(flow, state, median, p90) of the time spent per visit."""
        v = self.visits()
        if not self.d.sqlite:
            return select(
                v.c.flow,
                v.c.state,
                func.percentile_cont(0.5).within_group(v.c.spent),
                func.percentile_cont(0.9).within_group(v.c.spent),
            ).group_by(v.c.flow, v.c.state)
        group = (v.c.flow, v.c.state)
        ranked = select(
            v.c.flow,
            v.c.state,
            v.c.spent,
            func.row_number().over(partition_by=group, order_by=v.c.spent).label("rn"),
            func.count().over(partition_by=group).label("n"),
        ).subquery("ranked")
        return select(
            ranked.c.flow,
            ranked.c.state,
            _interpolated(ranked, 0.5),
            _interpolated(ranked, 0.9),
        ).group_by(ranked.c.flow, ranked.c.state)


def _interpolated(ranked: Subquery, fraction: float) -> ColumnElement[float]:
    """percentile_cont over ``row_number``: the value at position 1 + (n - 1) * fraction,
    interpolated between the rows either side of it."""
    position: ColumnElement[float] = literal_column("1.0") + (ranked.c.n - 1) * fraction
    low = cast(position, Integer)  # positions are >= 1: the cast is the floor
    at_low = func.max(case((ranked.c.rn == low, ranked.c.spent)))
    at_high = func.max(case((ranked.c.rn == low + 1, ranked.c.spent)))
    weight = func.max(position - low)
    return at_low + weight * (func.coalesce(at_high, at_low) - at_low)


async def run(conn: AsyncConnection, query: Select[Any]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await conn.execute(query)).all()]
