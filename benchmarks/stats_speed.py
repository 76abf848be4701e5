"""How long `ivrkit stats` takes over a large event log, on SQLite and on PostgreSQL.

What it builds. A few hundred calls are walked through the real app (the example flows
support_line and appointment_reminder, in-process, on a scratch SQLite file) by a random
caller: keys right and wrong, silence, dial, record and queue outcomes, hang-ups anywhere.
Their call rows and events (real fired text, masked params, stored TwiML) are then copied,
with fresh CallSids and times spread over 30 days (a few seconds to a minute between a
call's webhooks), until the event log holds --events rows; they are bulk inserted
(executemany in one transaction on SQLite, COPY on PostgreSQL) into a store created by
ivrkit itself (so with its indexes).

What it times. The `ivrkit stats` command as a user runs it (a subprocess, text format),
wall clock, --rounds times per backend, plus one run with a flow and a period.

    python benchmarks/stats_speed.py [--events 1000000] [--rounds 3]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/ivrkit_bench]
        [--keep DIR] [--reuse]

--postgres names a database the script may empty (it drops ivrkit's tables there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("IVRKIT_SECRET_KEY", "benchmark-only-key-never-used-in-production")

import httpx  # noqa: E402

from flows.appointment_reminder import AppointmentReminder  # noqa: E402
from flows.support_line import SupportLine  # noqa: E402
from ivrkit import Settings, create_app  # noqa: E402
from ivrkit.store import create_store, metadata  # noqa: E402

BASE = "http://bench.example"
START = datetime(2026, 11, 1)
DIAL = ["completed", "busy", "no-answer", "failed", "completed", "completed"]
QUEUE = ["bridged", "bridged", "hangup", "leave", "queue-full"]


class Walker:
    """A random caller over httpx: reads each TwiML answer and does what a caller might."""

    def __init__(self, client: httpx.AsyncClient, flow: str, rng: random.Random) -> None:
        self.client, self.flow, self.rng = client, flow, rng
        self.sid = "CA" + secrets.token_hex(16)
        self.status = "ringing"

    async def post(self, url: str, **extra: str) -> ET.Element | None:
        params = {
            "CallSid": self.sid,
            "AccountSid": "AC" + "0" * 32,
            "From": "+1415555" + f"{self.rng.randrange(10000):04d}",
            "To": "+15005550006",
            "CallStatus": self.status,
            "Direction": "inbound",
            **extra,
        }
        self.status = "in-progress"
        response = await self.client.post(url, data=params)
        return ET.fromstring(response.text) if response.text.strip() else None

    async def walk(self) -> None:
        root = await self.post(f"{BASE}/voice/{self.flow}")
        for _ in range(30):
            if root is None or self.rng.random() < 0.06:  # the caller hangs up here
                break
            root = await self.answer(root)
            if root is None:
                break
        await self.post(
            f"{BASE}/voice/{self.flow}/status",
            CallStatus="completed",
            CallDuration=str(self.rng.randrange(5, 400)),
        )

    async def answer(self, root: ET.Element) -> ET.Element | None:
        rng = self.rng
        gather, dial = root.find("Gather"), root.find("Dial")
        record, queue = root.find("Record"), root.find("Enqueue")
        if gather is not None:
            roll = rng.random()
            if roll < 0.12:
                redirect = root.find("Redirect")
                return await self.post(redirect.text or "") if redirect is not None else None
            size = int(gather.attrib.get("numDigits", "0") or 0)
            if roll < 0.22 or size == 0:
                digits = "9" if size <= 1 else "1" * (size + 1)
            elif size == 1:
                digits = rng.choice("1112233301*")
            else:
                digits = "".join(rng.choice("0123456789") for _ in range(size))
                if rng.random() < 0.5:
                    digits = "20261218"[:size] if size == 8 else digits
            return await self.post(gather.attrib["action"], Digits=digits)
        if dial is not None:
            status = rng.choice(DIAL)
            return await self.post(
                dial.attrib["action"],
                DialCallStatus=status,
                DialCallSid="CA" + "1" * 32,
                DialCallDuration=str(rng.randrange(0, 300)),
            )
        if record is not None:
            seconds = rng.choice([0, 5, 12, 30])
            extra = {
                "RecordingUrl": f"https://api.twilio.com/rec/RE{seconds}",
                "RecordingSid": "RE" + "2" * 32,
                "RecordingDuration": str(seconds),
            }
            return await self.post(record.attrib["action"], **(extra if seconds else {}))
        if queue is not None:
            return await self.post(
                queue.attrib["action"], QueueResult=rng.choice(QUEUE), QueueTime="30"
            )
        return None  # Hangup, Reject: the call is over


async def templates(count: int, seed: int) -> tuple[list[tuple[Any, ...]], list[list[Any]]]:
    """``count`` walked calls: their rows and their events (as stored)."""
    import sqlite3

    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "walks.db"
        settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", insecure_dev=True)
        app = create_app(
            [SupportLine, AppointmentReminder],
            settings=settings,
            clock=lambda: datetime(2026, 11, 18, 16, 0).astimezone(),
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                for i in range(count):
                    flow = "support_line" if i % 4 else "appointment_reminder"
                    await Walker(client, flow, rng).walk()
        db = sqlite3.connect(path)
        rows = db.execute("SELECT * FROM ivrkit_calls").fetchall()
        columns = [d[0] for d in db.execute("SELECT * FROM ivrkit_events LIMIT 1").description]
        by_call: dict[str, list[Any]] = {}
        for event in db.execute("SELECT * FROM ivrkit_events ORDER BY id"):
            by_call.setdefault(event[1], []).append(dict(zip(columns, event, strict=True)))
        db.close()
    return rows, [by_call.get(row[0], []) for row in rows]


def copies(
    rows: list[tuple[Any, ...]], walks: list[list[Any]], total: int, seed: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Call rows and event rows until ``total`` events, spread over 30 days."""
    rng = random.Random(seed)
    out_calls: list[tuple[Any, ...]] = []
    out_events: list[tuple[Any, ...]] = []
    span = 30 * 86400
    while len(out_events) < total:
        i = rng.randrange(len(rows))
        row, walk = rows[i], walks[i]
        sid = "CA" + secrets.token_hex(16)
        start = START + timedelta(seconds=rng.random() * span)
        at = start
        for event in walk:
            if event["kind"] != "start":
                at += timedelta(seconds=rng.uniform(2, 60))
            out_events.append(
                (
                    sid,
                    event["step"],
                    at,
                    event["kind"],
                    event["state"],
                    event["fired"],
                    event["params"],
                    event["twiml"],
                    start,
                )
            )
        call = list(row)
        call[0] = sid
        names = CALL_COLUMNS
        call[names.index("created_at")] = start
        call[names.index("updated_at")] = at
        if call[names.index("ended_at")] is not None:
            call[names.index("ended_at")] = at
        out_calls.append(tuple(call))
    return out_calls, out_events[:total]


CALL_COLUMNS: list[str] = []
EVENT_INSERT = (
    "call_sid",
    "step",
    "at",
    "kind",
    "state",
    "fired",
    "params",
    "twiml",
    "call_created",
)


async def create_schema(url: str) -> None:
    store = create_store(url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await store.close()
    store = create_store(url)
    await store.open()
    await store.close()


def load_sqlite(
    path: Path, call_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]
) -> None:
    import sqlite3

    db = sqlite3.connect(path)
    marks = ",".join("?" * len(CALL_COLUMNS))
    with db:
        db.executemany(f"INSERT INTO ivrkit_calls VALUES ({marks})", call_rows)
        db.executemany(
            f"INSERT INTO ivrkit_events ({','.join(EVENT_INSERT)}) VALUES "
            f"({','.join('?' * len(EVENT_INSERT))})",
            (
                (*e[:2], e[2].isoformat(sep=" "), *e[3:8], e[8].isoformat(sep=" "))
                for e in event_rows
            ),
        )
    db.execute("ANALYZE")
    db.close()


async def load_postgres(
    url: str, call_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]]
) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        created = CALL_COLUMNS.index("created_at")
        rows = [
            tuple(
                _pg_time(v) if j >= created and isinstance(v, str) else v for j, v in enumerate(r)
            )
            for r in call_rows
        ]
        await conn.copy_records_to_table("ivrkit_calls", records=rows, columns=CALL_COLUMNS)
        await conn.copy_records_to_table(
            "ivrkit_events",
            records=[(*e[:8], None) for e in event_rows],
            columns=list(EVENT_INSERT),
        )
        await conn.execute("ANALYZE ivrkit_calls; ANALYZE ivrkit_events")
    finally:
        await conn.close()


async def event_count(url: str) -> int:
    """Events already in the database at ``url`` (0 when it has no ivrkit tables yet)."""
    from sqlalchemy import func, inspect, select
    from sqlalchemy.ext.asyncio import create_async_engine

    from ivrkit.store.schema import events

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            present = await conn.run_sync(lambda sync: inspect(sync).has_table(events.name))
            if not present:
                return 0
            return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())
    finally:
        await engine.dispose()


def _pg_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def timed_stats(url: str, *extra: str) -> tuple[float, str]:
    """Wall-clock seconds of one `ivrkit stats` run (and its CPU seconds, printed: on a
    machine shared with other work the CPU time says what the command itself cost)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ivrkit.cli", "stats", *extra, "--database-url", url],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"ivrkit stats failed: {done.stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"  ivrkit stats {' '.join(extra)}: {elapsed:.2f} s wall, {cpu:.2f} s CPU of the command")
    return elapsed, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--walks", type=int, default=400)
    parser.add_argument("--postgres", default=None)
    parser.add_argument("--keep", default=None, help="folder for the SQLite file (kept)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time the data already loaded (the --keep folder's file, the --postgres "
        "tables) instead of generating it again, when it holds --events events",
    )
    args = parser.parse_args()
    from ivrkit.store.schema import CALL_COLUMNS as names

    CALL_COLUMNS[:] = names
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} "
        "(1 min average: other work on the machine slows every figure below), "
        f"Python {platform.python_version()}"
    )
    folder = Path(args.keep or tempfile.mkdtemp(prefix="ivrkit-stats-"))
    targets = [("sqlite", f"sqlite+aiosqlite:///{folder / 'stats.db'}")]
    if args.postgres:
        targets.append(("postgresql", args.postgres))
    generated: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None = None
    summary: dict[str, Any] = {}
    for name, url in targets:
        loaded = asyncio.run(event_count(url)) if args.reuse else 0
        if loaded == args.events:  # another count: a test run emptied it, or other data
            print(f"{name}: reusing the {loaded:,} events already loaded")
        else:
            if generated is None:
                started = time.perf_counter()
                rows, walks = asyncio.run(templates(args.walks, seed=7))
                generated = copies(rows, walks, args.events, seed=11)
                print(
                    f"walked {len(rows)} calls, copied to {len(generated[0]):,} calls and "
                    f"{len(generated[1]):,} events in {time.perf_counter() - started:.1f} s"
                )
            call_rows, event_rows = generated
            if name == "sqlite" and (folder / "stats.db").exists():
                (folder / "stats.db").unlink()
            asyncio.run(create_schema(url))
            started = time.perf_counter()
            if name == "sqlite":
                load_sqlite(folder / "stats.db", call_rows, event_rows)
            else:
                asyncio.run(load_postgres(url, call_rows, event_rows))
            print(f"{name}: loaded in {time.perf_counter() - started:.1f} s")
        runs = []
        for _ in range(args.rounds):
            elapsed, out = timed_stats(url)
            runs.append(elapsed)
        first = out.splitlines()[0]
        period, _ = timed_stats(
            url, "support_line", "--since", "2026-11-10", "--until", "2026-11-20"
        )
        print(
            f"{name}: ivrkit stats (all flows) {', '.join(f'{r:.2f}' for r in runs)} s; "
            f"support_line over 10 days {period:.2f} s  [{first}]"
        )
        summary[name] = {"all_flows_s": runs, "flow_and_period_s": period}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
