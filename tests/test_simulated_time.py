"""``call.now`` follows the simulator's virtual clock, but only on a test or dev server."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit import Call, Flow, Hangup, Menu, Retries, Settings, create_app, decision
from tests.conftest import OPEN_HOURS

TOKEN = "sim-time-token-0123456789abcdef"
SUNDAY_3AM = "2026-11-22T03:00:00-05:00"  # New York; support is closed
CLOSED = "Support is open Monday to Friday 9 to 5, and Saturday 10 to 2."
HOLD = "All our agents are busy. Please hold."


def support_app(tmp_path, **settings):
    """The support line with a wall clock stuck in business hours: only simulated time can
    make it closed."""
    config = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}", auth_token=TOKEN, **settings
    )
    return create_app([SupportLine], settings=config, clock=lambda: OPEN_HOURS)


async def ask_for_support(phone, app, **options):
    call = await phone.call("/voice/support_line", app=app, auth_token=TOKEN, **options).start()
    await call.press("2")
    return call


async def test_a_test_server_uses_the_calls_simulated_time(phone, tmp_path):
    app = support_app(tmp_path, trust_simulated_time=True)
    call = await ask_for_support(phone, app, start=SUNDAY_3AM)
    call.assert_heard(CLOSED)
    call.assert_not_heard(HOLD)
    other = await ask_for_support(phone, app)  # no start time: the app's own clock
    other.assert_heard(HOLD)


async def test_insecure_dev_trusts_simulated_time(phone, tmp_path):
    app = support_app(tmp_path, insecure_dev=True)
    call = await ask_for_support(phone, app, start=datetime(2026, 11, 22, 8, 0, tzinfo=UTC))
    call.assert_heard(CLOSED)


async def test_a_production_app_ignores_simulated_time(phone, tmp_path):
    call = await ask_for_support(phone, support_app(tmp_path), start=SUNDAY_3AM)
    call.assert_heard(HOLD)
    call.assert_not_heard(CLOSED)


class Clocked(Flow):
    """Notes the time its decision runs at."""

    seen: list[datetime] = []

    menu = Menu(
        "Press 1.", choices={"1": "check"}, retries=Retries(no_input=2, no_match=1, give_up="bye")
    )
    bye = Hangup("Bye.")

    @decision("check")
    def check(self, call: Call) -> str:
        Clocked.seen.append(call.now)
        return "bye"


async def test_simulated_time_advances_with_the_call(phone, tmp_path):
    """Prompts and a Gather's timeout pass in virtual time; the flow sees them pass."""
    config = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", insecure_dev=True)
    app = create_app([Clocked], settings=config)
    start = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    Clocked.seen.clear()
    call = await phone.call("/voice/clocked", app=app, start=start).start()
    await call.timeout()  # 5 s of silence, then the menu again
    await call.press("1")
    (seen,) = Clocked.seen
    assert seen.tzinfo is not None
    assert start + timedelta(seconds=6) < seen < start + timedelta(seconds=20)


async def test_a_bad_simulated_time_is_a_400_and_one_log_line(tmp_path, caplog):
    app = support_app(tmp_path, trust_simulated_time=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            with caplog.at_level(logging.WARNING, logger="ivrkit"):
                answer = await client.post(
                    "/voice/support_line",
                    data={"CallSid": "CA" + "1" * 32},
                    headers={"X-Ivrkit-Sim-Time": "yesterday at noon"},
                )
    assert answer.status_code == 400
    assert "X-Ivrkit-Sim-Time 'yesterday at noon' is not an ISO 8601 time" in answer.text
    (record,) = caplog.records
    assert record.exc_info is None
    assert "400" in record.getMessage()


def test_a_start_time_without_offset_is_refused_with_the_fix(phone):
    with pytest.raises(ValueError, match=r"has no UTC offset; add one, e.g. 2026-11-22T03:00"):
        phone.call("/voice", app=object(), start="2026-11-22T03:00:00")
