"""After a run: read the store and sort every call by what happened to it.

A benchmark is only worth its figure if the answers were the intended ones. An apology is
a 200 like any other to wrk, and an action webhook for a call whose first webhook was lost
is answered with the apology and leaves no row at all, so the store is read call by call
and compared with what wrk says it sent (``CallPlan.sent_steps``):

- completed: all four webhooks sent, the four expected events stored in order, the call
  ended ``completed`` in the intended state;
- cut off: the run ended before the call's next webhook was sent; what was sent is stored
  as intended;
- in flight: the call's last webhook was among the last ones wrk sent and got no answer
  before wrk stopped (at most one per connection; more is an anomaly);
- anomalies: never started (webhooks sent, no row), error (an ``error`` event: the flow
  raised), apology (an answer stored that is the flow's apology), replay (a ``replay``
  event: a webhook arrived twice or out of order), unexpected (events or final state not
  the intended ones, or a row for a call never sent), missing (a webhook sent and not
  stored, not explained by the end of the run).

Each call is counted once, under the first of these that applies, anomalies first.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from benchmarks.support_walk import (
    EXPECTED_EVENTS,
    FINAL_DURATION,
    FINAL_STATE_PREFIX,
    FINAL_STATUS,
)

ANOMALIES = ("never started", "error", "apology", "replay", "unexpected", "missing")
FINE = ("completed", "cut off", "in flight")

CALLS_QUERY = "SELECT call_sid, state, status, ended_at IS NOT NULL, duration FROM ivrkit_calls"
EVENTS_QUERY = "SELECT call_sid, kind, state, {contains} FROM ivrkit_events ORDER BY id"


@dataclass
class Audit:
    """How many calls ended up in each category (see the module docstring)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # category -> one CallSid

    @property
    def anomalies(self) -> int:
        return sum(self.counts[name] for name in ANOMALIES)

    def summary(self) -> str:
        fine = ", ".join(f"{self.counts[name]} {name}" for name in FINE)
        bad = ", ".join(f"{name} {self.counts[name]}" for name in ANOMALIES)
        return f"calls: {fine}; anomalies: {bad}"

    def add(self, category: str, call_sid: str) -> None:
        self.counts[category] += 1
        self.examples.setdefault(category, call_sid)


@dataclass(frozen=True)
class StoredCall:
    state: str
    status: str
    ended: bool
    duration: int | None


def classify(
    sent: dict[str, int],
    tail: set[tuple[str, int]],
    rows: Iterable[tuple[Any, ...]],
    event_rows: Iterable[tuple[Any, ...]],
) -> Audit:
    """Sort the calls of a run; ``tail`` holds (call, webhook number) of the last lines
    each wrk thread sent, the only webhooks allowed to be still unanswered at the end."""
    stored = {
        sid: StoredCall(state, status, bool(ended), duration)
        for sid, state, status, ended, duration in rows
    }
    events: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
    for sid, kind, state, apology in event_rows:
        events[sid].append((kind, state, bool(apology)))
    audit = Audit()
    for sid in stored.keys() | events.keys():
        if not sent.get(sid):
            audit.add("unexpected", sid)  # a row or event for a call this run never sent
    for sid, count in sent.items():
        if count:
            audit.add(_category(count, stored.get(sid), events.get(sid, []), sid, tail), sid)
    return audit


def _category(
    sent: int,
    row: StoredCall | None,
    events: list[tuple[str, str, bool]],
    sid: str,
    tail: set[tuple[str, int]],
) -> str:
    if row is None:
        return "never started" if not events else "unexpected"
    kinds = [kind for kind, _, _ in events]
    if "error" in kinds:
        return "error"
    if any(apology for _, _, apology in events):
        return "apology"
    if "replay" in kinds:
        return "replay"
    expected = EXPECTED_EVENTS[: len(events)]
    if len(events) > sent or any(
        kind != want_kind or (want_state and state != want_state)
        for (kind, state, _), (want_kind, want_state) in zip(events, expected, strict=True)
    ):
        return "unexpected"
    if len(events) == len(EXPECTED_EVENTS) and not (
        row.state.startswith(FINAL_STATE_PREFIX)
        and row.status == FINAL_STATUS
        and row.ended
        and row.duration == FINAL_DURATION
    ):
        return "unexpected"
    if len(events) == sent:
        return "completed" if sent == len(EXPECTED_EVENTS) else "cut off"
    if len(events) == sent - 1 and (sid, sent) in tail:
        return "in flight"
    return "missing"


def apology_markers(apology: str) -> tuple[str, str]:
    """The apology as it may appear in stored TwiML: escaped for XML, or not."""
    return escape(apology, {"'": "&apos;", '"': "&quot;"}), apology


def audit_sqlite(
    path: Path, sent: dict[str, int], tail: set[tuple[str, int]], apology: str
) -> Audit:
    escaped, raw = apology_markers(apology)
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(CALLS_QUERY).fetchall()
        contains = "(instr(twiml, ?) > 0 OR instr(twiml, ?) > 0)"
        event_rows = db.execute(EVENTS_QUERY.format(contains=contains), (escaped, raw)).fetchall()
    return classify(sent, tail, rows, event_rows)


def audit_postgres(
    url: str, sent: dict[str, int], tail: set[tuple[str, int]], apology: str
) -> Audit:
    return asyncio.run(audit_postgres_async(url, sent, tail, apology))


async def audit_postgres_async(
    url: str, sent: dict[str, int], tail: set[tuple[str, int]], apology: str
) -> Audit:
    import asyncpg

    db = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await db.fetch(CALLS_QUERY)
        contains = "(strpos(twiml, $1) > 0 OR strpos(twiml, $2) > 0)"
        event_rows = await db.fetch(
            EVENTS_QUERY.format(contains=contains), *apology_markers(apology)
        )
    finally:
        await db.close()
    return classify(sent, tail, [tuple(r) for r in rows], [tuple(r) for r in event_rows])


def plain_dsn(url: str) -> str:
    """asyncpg's DSN for a SQLAlchemy URL (``postgresql+asyncpg://`` -> ``postgresql://``)."""
    scheme, rest = url.split("://", 1)
    return f"postgresql://{rest}" if scheme.startswith("postgres") else url


def empty_postgres(url: str) -> None:
    """Start a run on an empty database: drop and recreate its schema ``public``.

    Refuses a database that holds tables other than ivrkit's, so that pointing
    ``--postgres`` at the wrong database costs nothing.
    """
    import asyncpg

    async def empty() -> None:
        db = await asyncpg.connect(plain_dsn(url))
        try:
            foreign = await db.fetch(
                "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                " AND table_name NOT LIKE 'ivrkit\\_%' AND table_name <> 'alembic_version'"
            )
            if foreign:
                names = ", ".join(row["name"] for row in foreign[:5])
                raise SystemExit(
                    f"--postgres {url}: the database holds tables that are not ivrkit's "
                    f"({names}); the benchmark empties its database before every run, so "
                    "give it one of its own (createdb ivrkit_bench)"
                )
            await db.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        finally:
            await db.close()

    asyncio.run(empty())
