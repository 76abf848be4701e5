"""A 10,000-contact campaign against the simulated Calls API, in-process, rate limit lifted.

Everything real except the phone network: ``Campaign`` claims contacts from the store, the
real ``place_call`` creates each call through twilio-python's ``Client`` on the simulated
API, which plays it against the real ivrkit app (appointment_reminder: a person presses 1,
or a machine gets the message; some numbers are busy or do not answer, and are retried
once), and the runner reads each outcome from the app's store. Before anything is
reported, every contact must have exactly one final outcome and every call the API
created must be one recorded attempt; a run that fails that check reports nothing.

    python benchmarks/campaign_throughput.py [--contacts 10000] [--in-progress 50]
                                             [--postgres URL]

Figures: contacts per second placed (first attempts) and completed (final outcome), and the
campaign store's cost per contact: SQL statements, milliseconds inside the driver, and rows
written (inserts and updates) on the campaign's own engine. The app's own store work (the
calls' webhooks) is not in those figures; it is in the wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from collections import Counter
from datetime import time as clock_time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event  # noqa: E402

from flows.appointment_reminder import AppointmentReminder  # noqa: E402
from ivrkit import Settings, create_app  # noqa: E402
from ivrkit.outbound.calling_hours import CallingHours  # noqa: E402
from ivrkit.outbound.campaign import Campaign, CampaignSettings  # noqa: E402
from ivrkit.outbound.campaign_store import CampaignStore  # noqa: E402
from ivrkit.outbound.contacts import Contact  # noqa: E402
from ivrkit.outbound.twilio_dialer import TwilioDialer  # noqa: E402
from ivrkit.store import create_store, metadata  # noqa: E402
from simulator.api import SimulatedApi  # noqa: E402
from simulator.callees import CalleeModel  # noqa: E402
from simulator.caller import Press  # noqa: E402
from simulator.twilio_client import twilio_client  # noqa: E402

ACCOUNT = "AC" + "b3" * 16
TOKEN = "benchmark-token-0123456789abcdef"


class StoreMeter:
    """Statements, driver time and rows written on one engine."""

    def __init__(self, engine: Any) -> None:
        self.statements = 0
        self.seconds = 0.0
        self.rows = 0
        self._started: dict[int, float] = {}
        event.listen(engine.sync_engine, "before_cursor_execute", self._before)
        event.listen(engine.sync_engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._started[id(cursor)] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements += 1
        self.seconds += time.perf_counter() - self._started.pop(id(cursor), time.perf_counter())
        head = statement.lstrip()[:6].upper()
        if head in ("INSERT", "UPDATE") and cursor.rowcount and cursor.rowcount > 0:
            self.rows += cursor.rowcount


async def reset(url: str) -> None:
    store = create_store(url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await store.close()


async def run(url: str, contacts: int, in_progress: int) -> dict[str, Any]:
    await reset(url)
    api = SimulatedApi(
        account_sid=ACCOUNT,
        auth_token=TOKEN,
        callees=CalleeModel(
            ratios={"human": 70, "machine": 15, "busy": 10, "no-answer": 5},
            seed=11,
            steps=(Press("1"),),
        ),
        cps=None,
        # Calls ring for 2-8 simulated seconds, i.e. 2-8 ms: at speed 0 a busy line ends
        # before place_call has stored the call's row, and the server drops status
        # callbacks of calls it has no row for (the runner then asks the API after 20 s).
        speed=1000.0,
        max_requests=10**9,
    )
    api.bind()
    app = create_app([AppointmentReminder], settings=Settings(database_url=url, auth_token=TOKEN))
    api.app = app
    api.lifespan = False
    people = [
        Contact(
            row=i + 2,
            number=f"+1415{i:07d}",
            time_zone="America/New_York",
            data={"appointment": f"visit {i}", "patient": f"p-{i}"},
        )
        for i in range(contacts)
    ]
    async with app.router.lifespan_context(app):
        store = CampaignStore.from_url(url)
        await store.open()
        meter = StoreMeter(store.engine)
        dialer = TwilioDialer(
            AppointmentReminder,
            store=app.state.ivr.store,
            client=twilio_client(api),
            public_url="http://testserver",
        )
        campaign = Campaign(
            store,
            dialer,
            name="benchmark",
            flow=AppointmentReminder.name,
            from_="+14155550100",
            settings=CampaignSettings(
                calls_per_second=None,
                max_in_progress=in_progress,
                max_retries=1,
                retry_delay=0.0,
                calling_hours=CallingHours(clock_time(0), clock_time(0)),
                poll_interval=0.02,
                claim_batch=in_progress,
            ),
        )
        loaded = time.perf_counter()
        await campaign.load(people)
        load_seconds = time.perf_counter() - loaded
        started = time.perf_counter()
        report = await campaign.run()
        seconds = time.perf_counter() - started
        results = await store.results(report.campaign_id)
        attempts = await store.attempts(report.campaign_id)
        await store.close()
    await api.aclose()
    # The check before any figure: one final outcome per contact, one attempt per call.
    assert len(results) == contacts, len(results)
    unfinished = [r for r in results if r["state"] != "done"]
    assert not unfinished, f"{len(unfinished)} contacts not done"
    assert len({r["row"] for r in results}) == contacts
    sids = [a["call_sid"] for a in attempts if a["call_sid"]]
    assert len(sids) == len(set(sids)) == len(api.calls), (len(sids), len(api.calls))
    calls_per_number = Counter(c.to for c in api.calls.values())
    assert max(calls_per_number.values()) <= 2
    first = sorted(a["placed_at"] for a in attempts if a["placed_at"])
    return {
        "contacts": contacts,
        "calls": len(api.calls),
        "outcomes": dict(Counter(r["outcome"] for r in results)),
        "seconds": seconds,
        "load_seconds": load_seconds,
        "placed_per_s": len(first) / (first[-1] - first[0]) if len(first) > 1 else 0.0,
        "completed_per_s": contacts / seconds,
        "statements": meter.statements / contacts,
        "store_ms": meter.seconds * 1000 / contacts,
        "rows": meter.rows / contacts,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--in-progress", type=int, default=50)
    parser.add_argument("--postgres", default=None, help="a database the benchmark may empty")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        url = args.postgres or f"sqlite+aiosqlite:///{folder}/campaign.db"
        figures = asyncio.run(run(url, args.contacts, args.in_progress))
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"campaign of {figures['contacts']} contacts on {backend}, in-process, no rate limit, "
        f"{args.in_progress} in progress; checked: one final outcome per contact"
    )
    print(f"  outcomes: {figures['outcomes']}; calls placed: {figures['calls']}")
    print(f"  contacts loaded in {figures['load_seconds']:.2f} s")
    print(
        f"  calls placed: {figures['placed_per_s']:.0f}/s; contacts completed: "
        f"{figures['completed_per_s']:.0f}/s ({figures['seconds']:.1f} s)"
    )
    print(
        f"  campaign store per contact: {figures['statements']:.1f} statements, "
        f"{figures['store_ms']:.2f} ms in the driver, {figures['rows']:.1f} rows written"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
