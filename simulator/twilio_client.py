"""Point twilio-python's real ``Client`` at the simulated API, so code under test is unchanged.

``twilio_client(target, account_sid, auth_token)`` returns a ``twilio.rest.Client`` whose
requests go to ``target``:

- a base URL (``"http://127.0.0.1:9500"``, e.g. ``ivrkit-sim api``): a ``TwilioHttpClient``
  subclass rewrites ``https://*.twilio.com`` to it before ``requests`` sends it (real HTTP);
- a ``SimulatedApi`` in this process: ``InProcessHttpClient`` hands each request straight to
  ``SimulatedApi.handle``, no sockets.

How the in-process client avoids deadlocks. The twilio ``Client`` is blocking, so code calls
``client.calls.create(...)`` either from a worker thread (``asyncio.to_thread``) or, blocking,
right on the event loop. ``handle`` never waits (it validates, records the call and schedules
its task), so:

- on the API's own loop thread it is called directly and returns at once; the call's task
  runs when the caller next yields to the loop. Blocking the loop is then harmless;
- from any other thread it is submitted to the API's loop (``run_coroutine_threadsafe``) and
  the thread waits for the answer; the loop is free, so it answers.

The same client serves ``create_async`` (``is_async`` is true): ``request`` returns a response
that can also be awaited, so one client works for both twilio APIs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from simulator.api import SimulatedApi

__all__ = ["InProcessHttpClient", "RedirectingHttpClient", "twilio_client"]

log = logging.getLogger("simulator.twilio_client")
_THREAD_WAIT = 60.0


class _Answer(Response):  # type: ignore[misc]  # twilio ships no types
    """A twilio ``Response`` that is also awaitable (for ``create_async`` and friends)."""

    def __await__(self) -> Generator[Any, None, _Answer]:
        return self
        yield  # pragma: no cover - makes this a generator


class InProcessHttpClient(HttpClient):  # type: ignore[misc]
    """twilio-python's ``HttpClient`` answered by a ``SimulatedApi`` in this process."""

    def __init__(self, api: SimulatedApi) -> None:
        super().__init__(log, is_async=True)
        self.api = api

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        form = _pairs(data) + _pairs(params)
        authorization = (headers or {}).get("Authorization")
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            authorization = f"Basic {token}"
        path = urlsplit(uri).path
        api = self.api
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and (api.loop is None or api.loop.is_closed()):
            api.bind(running)
        if api.loop is None or running is api.loop:
            status, body = api.handle(method, path, form, authorization)
        else:
            if api.loop.is_closed() or not api.loop.is_running():
                raise RuntimeError("the SimulatedApi's event loop is not running; the in-process "
                                   "twilio client needs it to run the calls")
            future = asyncio.run_coroutine_threadsafe(
                _handle(api, method, path, form, authorization), api.loop
            )
            status, body = future.result(timeout or _THREAD_WAIT)
        answer = _Answer(status, json.dumps(body), {"Content-Type": "application/json"})
        self._test_only_last_response = answer
        return answer


async def _handle(
    api: SimulatedApi, method: str, path: str, form: list[tuple[str, str]],
    authorization: str | None,
) -> tuple[int, dict[str, Any]]:
    return api.handle(method, path, form, authorization)


def _pairs(data: dict[str, object] | None) -> list[tuple[str, str]]:
    """Form pairs the way ``requests`` encodes them: a list value repeats its key."""
    pairs: list[tuple[str, str]] = []
    for name, value in (data or {}).items():
        if isinstance(value, list | tuple):
            pairs.extend((name, str(item)) for item in value)
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


class RedirectingHttpClient(TwilioHttpClient):  # type: ignore[misc]
    """twilio-python's own HTTP client, sending ``https://*.twilio.com`` requests to
    ``base_url`` instead (real HTTP through ``requests``)."""

    def __init__(self, base_url: str, **options: Any) -> None:
        super().__init__(**options)
        self.base_url = base_url.rstrip("/")

    def request(
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> Response:
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("twilio.com"):
            url = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        return super().request(method, url, *args, **kwargs)


def twilio_client(
    target: str | SimulatedApi,
    account_sid: str | None = None,
    auth_token: str | None = None,
    *,
    api_key: str | None = None,
    api_secret: str | None = None,
) -> Client:
    """A real ``twilio.rest.Client`` talking to the simulated API at ``target``.

    Credentials default to the in-process API's own; give an API key (``api_key``,
    ``api_secret``) to authenticate as one. Edge and region are cleared: they would rewrite
    the host away from the simulator.
    """
    if isinstance(target, SimulatedApi):
        account_sid = account_sid or target.account_sid
        auth_token = auth_token if auth_token is not None else target._token
        http_client: HttpClient = InProcessHttpClient(target)
    else:
        if account_sid is None or (auth_token is None and api_key is None):
            raise ValueError("give account_sid and auth_token (or api_key and api_secret)")
        http_client = RedirectingHttpClient(target)
    if api_key is not None:
        client = Client(api_key, api_secret, account_sid, http_client=http_client)
    else:
        client = Client(account_sid, auth_token, http_client=http_client)
    client.edge = None
    client.region = None
    return client

