"""SQLite's write-ahead log under steady load: does it stay bounded?

Drives the real SQLite store (sessions, batched commits, the store's own checkpointer) at
a steady rate of webhooks for some seconds: every tick starts new calls and moves calls in
progress on by one step, each call ending after five webhooks, as a busy line's traffic
would. Prints the WAL's size once a second, then the database's.
``--passive-only`` runs the store as earlier versions did (PASSIVE checkpoints only) for
comparison.

    python benchmarks/sqlite_wal.py [--seconds 30] [--rate 400] [--passive-only]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from ivrkit.records import CallEvent, CallRecord, utcnow
from ivrkit.store.sqlite import WAL_LIMIT_BYTES, EmbeddedStore

TWIML = "<Response><Gather action='/voice/x/action?state=menu&amp;step=3'><Say>" + "x" * 300


async def webhook(store: EmbeddedStore, sid: str) -> None:
    async with store.session(sid) as session:
        record = session.record or CallRecord(
            call_sid=sid, flow="bench", flow_version="v1", state="menu"
        )
        record.step += 1
        record.last_twiml = TWIML
        record.data["choice"] = str(record.step)
        if record.step >= 5:
            record.status, record.ended_at = "completed", utcnow()
        session.save(
            record,
            CallEvent(call_sid=sid, step=record.step, kind="action", state="menu", twiml=TWIML),
        )


async def run(seconds: float, rate: int, passive_only: bool) -> None:
    folder = tempfile.mkdtemp(prefix="ivrkit-wal-")
    path = Path(folder) / "calls.db"
    store = EmbeddedStore.from_url(f"sqlite+aiosqlite:///{path}")
    if passive_only:
        store.wal_limit_bytes = None
    await store.open()
    live: dict[str, int] = {}
    made = sent = 0
    tick = 0.01
    per_tick = rate * tick
    owed = 0.0
    started = time.perf_counter()
    next_report = 1.0
    limit = "none (PASSIVE only)" if passive_only else f"{WAL_LIMIT_BYTES / 2**20:.0f} MB"
    print(f"{rate} webhooks/s for {seconds:.0f} s, WAL limit {limit}, file {path}")
    print(" second  webhooks  WAL MB  db MB")
    try:
        while (elapsed := time.perf_counter() - started) < seconds:
            owed += per_tick
            batch = []
            while owed >= 1:
                owed -= 1
                if len(live) < rate // 5 or not live:  # a few seconds of calls in progress
                    made += 1
                    sid = f"CA{made:032x}"
                    live[sid] = 1
                else:  # the call waiting longest takes its next step
                    sid = next(iter(live))
                    steps = live.pop(sid) + 1
                    if steps < 5:
                        live[sid] = steps
                batch.append(webhook(store, sid))
            await asyncio.gather(*batch)
            sent += len(batch)
            if elapsed >= next_report:
                print(f"{next_report:7.0f}  {sent:8d}  {_mb(f'{path}-wal'):6.1f}  {_mb(path):5.1f}")
                next_report += 1.0
            await asyncio.sleep(max(0.0, started + (sent / rate) - time.perf_counter()))
    finally:
        await store.close()
    print(f"done: {sent} webhooks, {made} calls; WAL {_mb(f'{path}-wal'):.1f} MB after close")
    shutil.rmtree(folder)


def _mb(path: str | os.PathLike[str]) -> float:
    try:
        return os.path.getsize(path) / 2**20
    except FileNotFoundError:
        return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--rate", type=int, default=400, help="webhooks per second")
    parser.add_argument("--passive-only", action="store_true", help="as earlier versions did")
    options = parser.parse_args()
    asyncio.run(run(options.seconds, options.rate, options.passive_only))


if __name__ == "__main__":
    main()
