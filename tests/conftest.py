"""Shared fixtures: a real SQLite file per test, and PostgreSQL when one is configured."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from ivrkit import Settings, create_app
from ivrkit.store import create_store, metadata
from tests.driver import BASE, TOKEN, PhoneCall

PG_ENV = "IVRKIT_TEST_DATABASE_URL"
# flows/account_pin.py keeps the account number encrypted; its key, for every test and the
# servers they start (tests of a missing key remove it with monkeypatch).
os.environ.setdefault("IVRKIT_SECRET_KEY", "tests-only-key-never-used-in-production")
# A Wednesday, 11:00 in New York: the support line is open.
OPEN_HOURS = datetime(2026, 11, 18, 16, 0, tzinfo=UTC)
CLOSED_HOURS = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(
            f"PostgreSQL run skipped: set {PG_ENV} (CI sets it when 127.0.0.1:5432 answers)"
        )
    return url


@pytest.fixture
def postgres_url() -> str:
    """The PostgreSQL test database, for tests that only PostgreSQL can run (several
    processes sharing one store); skipped, like the PostgreSQL half of ``database_url``,
    only where no server is configured."""
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL run skipped: set {PG_ENV}")
    return url


@asynccontextmanager
async def opened_store(url: str, **kwargs: Any) -> AsyncIterator[Any]:
    """A store opened on ``url`` (tables created), closed on the way out."""
    store = create_store(url, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def reset_database(url: str) -> None:
    store = create_store(url)
    async with store.engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await store.close()


@pytest.fixture
def serve(database_url: str) -> Callable[..., Any]:
    """``async with serve(flows) as (app, client)``: the real app over the test database."""

    @asynccontextmanager
    async def running(
        flows: list[Any],
        *,
        clock: Callable[[], datetime] | None = None,
        fresh: bool = True,
        twilio_client: Any = None,
        **settings: Any,
    ) -> AsyncIterator[tuple[Any, Any]]:
        if fresh:
            await reset_database(database_url)
        config = Settings(database_url=database_url, auth_token=TOKEN, **settings)
        app = create_app(
            flows,
            settings=config,
            clock=clock or (lambda: OPEN_HOURS),
            twilio_client=twilio_client,
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
                yield app, client

    return running


def phone(client: httpx.AsyncClient, flow: str, **kwargs: Any) -> PhoneCall:
    return PhoneCall(client=client, flow=flow, **kwargs)
