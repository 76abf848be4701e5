"""pytest plugin (entry point ``ivrkit_sim``): the ``phone`` fixture.

    async def test_menu(phone):
        call = await phone.call("/voice", app=app).start()
        await call.press("1")
        call.assert_heard("Sales")

    def test_menu_sync(phone):
        call = phone.sync("/voice", app=app)
        call.press("1")
        assert call.ended

An in-process app's lifespan (an ivrkit app opens its database there) starts before the first
call to it and shuts down after the test, on the event loop its calls ran on. Configure
defaults with ``phone.url``, ``phone.app``, ``phone.auth_token`` (or the ``TWILIO_AUTH_TOKEN``
environment variable), ``phone.from_``, ``phone.to``, ``phone.start``.

The ``twilio_api`` fixture is a ``SimulatedApi`` (Twilio's Calls API) for the test account
``TEST_ACCOUNT_SID`` / ``TEST_AUTH_TOKEN``; set ``twilio_api.app``, ``.callees``, ``.cps`` before
the first call. In an async test it runs on the test's loop (``twilio_client(twilio_api)``);
a sync test calls ``twilio_api_server()`` for a uvicorn-served copy. Calls still running at the
end of the test are cancelled and the app's lifespan is shut down.

    async def test_reminder(twilio_api):
        twilio_api.app = app
        client = twilio_client(twilio_api)
        call = await asyncio.to_thread(client.calls.create, to=..., from_=..., url=...)
        assert (await twilio_api.wait(call.sid)).status == "completed"
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from simulator.api import SimulatedApi
from simulator.phone import Phone

TEST_ACCOUNT_SID = "AC" + "5ca1ab1e" * 4
TEST_AUTH_TOKEN = "simulated-auth-token-0123456789"

pytest_asyncio: Any
try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a dev dependency
    pytest_asyncio = None


@pytest.fixture
def _ivrkit_phone() -> Iterator[Phone]:
    placed = Phone(auth_token=os.environ.get("TWILIO_AUTH_TOKEN") or None)
    yield placed
    close_phone(placed)


@pytest.fixture
def phone(_ivrkit_phone: Phone, request: pytest.FixtureRequest) -> Phone:
    """A Phone placing simulated calls; open calls are closed and the apps it started are shut
    down after the test."""
    if pytest_asyncio is not None and inspect.iscoroutinefunction(request.function):
        # pytest-asyncio closes a test's own event loop before sync fixtures are torn down;
        # this async fixture shuts the apps down on that loop while it still runs.
        request.getfixturevalue("_ivrkit_phone_on_test_loop")
    return _ivrkit_phone


async def close_on_running_loop(placed: Phone) -> None:
    """Close the calls still waiting on the running loop and stop the apps started there."""
    loop = asyncio.get_running_loop()
    try:
        for call in placed._live:
            task = call._task
            if task is not None and not task.done() and task.get_loop() is loop:
                await call.aclose()
    finally:
        await placed.stop_apps(loop)


if pytest_asyncio is not None:

    @pytest_asyncio.fixture(loop_scope="function")  # type: ignore[untyped-decorator]
    async def _ivrkit_phone_on_test_loop(_ivrkit_phone: Phone) -> AsyncIterator[None]:
        yield
        await close_on_running_loop(_ivrkit_phone)


def close_phone(placed: Phone) -> None:
    """Tear down what a test left: its synchronous calls, calls still waiting, and the apps'
    lifespans, each on the event loop it runs on if that loop still exists."""
    try:
        placed.close_sync()
    finally:
        for loop in {task.get_loop() for task in _waiting(placed)}:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(close_on_running_loop(placed))
        for loop in placed.event_loops():
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(placed.stop_apps(loop))
            # A closed loop cancelled the lifespan task when it shut down; nothing is left
            # to run it on.


def _waiting(placed: Phone) -> list[asyncio.Task[Any]]:
    return [call._task for call in placed._live if call._task and not call._task.done()]


@pytest.fixture
def _ivrkit_twilio_api() -> Iterator[SimulatedApi]:
    api = SimulatedApi(account_sid=TEST_ACCOUNT_SID, auth_token=TEST_AUTH_TOKEN)
    yield api
    loop = api.loop
    if loop is not None and not loop.is_closed() and not loop.is_running():
        loop.run_until_complete(api.aclose())


@pytest.fixture
def twilio_api(_ivrkit_twilio_api: SimulatedApi, request: pytest.FixtureRequest) -> SimulatedApi:
    """Twilio's Calls API, simulated, for the test account (see the module docstring)."""
    if pytest_asyncio is not None and inspect.iscoroutinefunction(request.function):
        request.getfixturevalue("_ivrkit_twilio_api_on_test_loop")
    return _ivrkit_twilio_api


@pytest.fixture
def twilio_api_server(_ivrkit_twilio_api: SimulatedApi) -> Iterator[Any]:
    """Start ``twilio_api`` behind a real uvicorn server in a thread; gives its ``ApiServer``
    (``.url`` for ``twilio_client(url, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)``)."""
    from simulator.api_server import ApiServer

    server = ApiServer(_ivrkit_twilio_api).start()
    yield server
    server.stop()


if pytest_asyncio is not None:

    @pytest_asyncio.fixture(loop_scope="function")  # type: ignore[untyped-decorator]
    async def _ivrkit_twilio_api_on_test_loop(
        _ivrkit_twilio_api: SimulatedApi,
    ) -> AsyncIterator[None]:
        _ivrkit_twilio_api.bind()
        yield
        await _ivrkit_twilio_api.aclose()
