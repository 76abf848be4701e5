"""`ivrkit campaign` for real: a uvicorn `ivrkit serve` on an SQLite file, the simulated
Calls API over HTTP, and the campaign in a process of its own, killed with SIGKILL
mid-campaign and then resumed."""

from __future__ import annotations

import csv
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

from simulator.callees import CalleeModel
from simulator.caller import Press
from tests.test_outbound_cli import CLINIC, reminder_server  # noqa: F401 (a fixture)
from tests.test_serve_cli import IVRKIT, ROOT


def write_contacts(path: Path, count: int) -> list[str]:
    numbers = [f"+1415558{n:04d}" for n in range(count)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "time_zone", "appointment", "patient"])
        for i, number in enumerate(numbers):
            writer.writerow([number, "America/New_York", f"your visit {i}", f"p-{i}"])
    return numbers


def campaign_command(contacts: Path, *extra: str) -> list[str]:
    return [
        *IVRKIT,
        "campaign",
        "flows/appointment_reminder.py",
        str(contacts),
        "--from",
        CLINIC,
        "--hours",
        "00:00-00:00",
        "--retry-delay",
        "0",
        *extra,
    ]


def database(env: dict[str, str]) -> str:
    return env["IVRKIT_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")


def placed_count(path: str) -> int:
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return int(
                db.execute(
                    "SELECT count(*) FROM ivrkit_campaign_attempts WHERE call_sid IS NOT NULL"
                ).fetchone()[0]
            )
    except sqlite3.OperationalError:  # the tables are not there yet
        return 0


def test_a_runner_killed_mid_campaign_is_resumed_without_calling_anyone_twice(
    reminder_server,  # noqa: F811
    twilio_api_server,
    tmp_path,
):
    _, env = reminder_server
    api = twilio_api_server.api
    # Paced calls (about a second each): some are in progress when the runner dies.
    api.speed = 40.0
    api.callees = CalleeModel(ring=(10.0, 20.0), steps=(Press("1"),))
    contacts = tmp_path / "contacts.csv"
    numbers = write_contacts(contacts, 30)
    command = campaign_command(contacts, "--rate", "10", "--max-in-progress", "6")
    runner = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while placed_count(database(env)) < 8 and time.monotonic() < deadline:
        assert runner.poll() is None, runner.communicate()
        time.sleep(0.05)
    runner.kill()  # SIGKILL: no clean-up at all
    runner.communicate(timeout=10)
    assert runner.returncode == -9
    assert len(api.calls) < 30
    with sqlite3.connect(database(env), timeout=5) as db:
        in_flight = dict(
            db.execute(
                "SELECT number, call_sid FROM ivrkit_campaign_contacts WHERE state = 'placed'"
            ).fetchall()
        )
    assert in_flight, "the runner was killed while no call was in progress"

    resumed = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert "Traceback" not in resumed.stderr

    # Nobody was called twice, and every contact has one final outcome.
    calls = Counter(c.to for c in api.calls.values())
    assert max(calls.values()) == 1
    with (tmp_path / "contacts.results.csv").open(newline="") as handle:
        results = list(csv.DictReader(handle))
    assert len(results) == 30
    outcomes = Counter(r["outcome"] for r in results)
    # A runner killed inside a Calls API request leaves that contact "unknown" (never
    # called again); every other contact was called once and confirmed.
    assert set(outcomes) <= {"completed", "unknown"}
    assert outcomes["completed"] + outcomes["unknown"] == 30
    assert all(r["result"] == "confirmed" for r in results if r["outcome"] == "completed")
    # The calls in progress when the runner died were adopted, not placed again.
    by_sid = {r["call_sid"]: r for r in results}
    for number, sid in in_flight.items():
        assert by_sid[sid]["outcome"] == "completed"
        assert calls[number] == 1
    # Numbers are masked in the results unless --clear-numbers.
    assert all("*" in r["number"] for r in results)
    assert not set(numbers) & {r["number"] for r in results}
