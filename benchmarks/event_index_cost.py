"""What the funnel index (r0003_ops) costs SQLite's webhook writes.

The store commits the events of concurrent webhooks together; this writes event rows
like the support line's (real params and TwiML sizes) in batches of --batch, one commit
each (WAL, synchronous=NORMAL, as the store does), into a table with the events index
before r0003_ops (call_created) and after it (call_created, call_sid, at, kind, state,
fired), and prints the CPU time per event for each, over --rounds alternating runs.

    python benchmarks/event_index_cost.py [--events 60000] [--batch 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

TABLE = """CREATE TABLE ivrkit_events (id INTEGER PRIMARY KEY, call_sid VARCHAR(64) NOT NULL,
step INTEGER NOT NULL, at DATETIME NOT NULL, kind VARCHAR(20) NOT NULL,
state VARCHAR(200) NOT NULL, fired TEXT NOT NULL, params TEXT NOT NULL, twiml TEXT NOT NULL,
call_created DATETIME)"""
INDEXES = {
    "before (call_created)": "CREATE INDEX ix ON ivrkit_events (call_created)",
    "r0003_ops (call_created, call_sid, at, kind, state, fired)": (
        "CREATE INDEX ix ON ivrkit_events (call_created, call_sid, at, kind, state, fired)"
    ),
}
PARAMS = '{"AccountSid": "AC00000000000000000000000000000000", "From": "+1415*****00"}' * 6
TWIML = "<Response><Say>For sales press 1. For support press 2.</Say><Gather/></Response>" * 4
FIRED = "support_line:main_menu -press:3-> voicemail"


def run(index: str, events: int, batch: int) -> float:
    """CPU seconds per event for writing ``events`` rows, ``batch`` per commit."""
    with tempfile.TemporaryDirectory() as folder:
        db = sqlite3.connect(Path(folder) / "events.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(TABLE)
        db.execute(index)
        start = datetime(2026, 12, 1)
        live = [("CA" + secrets.token_hex(16), start + timedelta(seconds=i)) for i in range(60)]
        rows = []
        for i in range(events):  # 60 calls in progress; each ends and a new one starts
            slot = i % 60
            sid, created = live[slot]
            if i % 240 == slot:
                live[slot] = ("CA" + secrets.token_hex(16), start + timedelta(seconds=i))
            at = (created + timedelta(seconds=i)).isoformat(sep=" ")
            rows.append((sid, i, at, "action", "main_menu", FIRED, PARAMS, TWIML, created))
        began = time.process_time()
        for first in range(0, events, batch):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO ivrkit_events (call_sid, step, at, kind, state, fired, params, "
                "twiml, call_created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*r[:8], r[8].isoformat(sep=" ")) for r in rows[first : first + batch]],
            )
            db.execute("COMMIT")
        spent = time.process_time() - began
        db.close()
    return spent / events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} (other work slows figures)")
    results: dict[str, list[float]] = {name: [] for name in INDEXES}
    for _ in range(args.rounds):
        for name, index in INDEXES.items():
            results[name].append(run(index, args.events, args.batch))
    for name, values in results.items():
        print(f"  {name}: {statistics.median(values) * 1e6:.1f} us CPU per event (median)")
    before, after = (statistics.median(v) for v in results.values())
    extra = (after - before) * 1e6
    print(f"  r0003_ops costs {extra:+.1f} us per event ({after / before - 1:+.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
