"""The README's outbound scenario file, run by the simulator against appointment_reminder."""

from __future__ import annotations

import io

from flows.appointment_reminder import AppointmentReminder
from ivrkit import Settings, create_app
from simulator import load_scenarios, run_scenarios
from tests.conftest import OPEN_HOURS
from tests.test_readme import readme_block


async def test_readme_outbound_scenarios_pass_against_the_reminder(tmp_path):
    scenarios = tmp_path / "reminder.yaml"
    scenarios.write_text(readme_block("readme-outbound-scenario", "yaml"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", insecure_dev=True)
    app = create_app([AppointmentReminder], settings=settings, clock=lambda: OPEN_HOURS)
    out = io.StringIO()
    report = await run_scenarios(
        load_scenarios(scenarios), url="/voice/appointment_reminder", app=app, out=out
    )
    assert report.ok, out.getvalue()
    assert report.passed == [
        "a person confirms",
        "a machine gets the message after the beep",
        "nobody answers",
    ]
