"""pytest plugin (entry point ``ivrkit_sim``): the ``phone`` fixture.

    async def test_menu(phone):
        call = await phone.call("/voice", app=app).start()
        await call.press("1")
        call.assert_heard("Sales")

    def test_menu_sync(phone):
        call = phone.sync("/voice", app=app)
        call.press("1")
        assert call.ended

Configure defaults with ``phone.url``, ``phone.app``, ``phone.auth_token`` (or the
``TWILIO_AUTH_TOKEN`` environment variable), ``phone.from_``, ``phone.to``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from simulator.phone import Phone


@pytest.fixture
def phone() -> Iterator[Phone]:
    """A Phone placing simulated calls; open calls are closed after the test."""
    placed = Phone(auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None)
    yield placed
    placed.close_sync()
    for call in placed._live:
        task = call._task
        if task is None or task.done():
            continue
        loop = task.get_loop()
        if not loop.is_closed() and not loop.is_running():
            loop.run_until_complete(call.aclose())
        elif not loop.is_closed():
            task.cancel()
