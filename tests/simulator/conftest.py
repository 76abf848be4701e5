"""Fixtures for the simulator tests; the apps themselves live in ``sim_apps``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sim_apps import Handler, LiveServer, TwimlApp


@pytest.fixture
def make_app() -> Iterator[Callable[..., TwimlApp]]:
    apps: list[TwimlApp] = []

    def make(routes: dict[str, Handler], **options: Any) -> TwimlApp:
        app = TwimlApp(routes, **options)
        apps.append(app)
        return app

    yield make
    for app in apps:
        assert not app.bad_signatures, f"requests with a bad signature: {app.bad_signatures}"


@pytest.fixture
def serve() -> Iterator[Callable[[Any], LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Any) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()
