"""Serve a ``SimulatedApi`` over real HTTP with uvicorn, in a background thread.

For code that is not async (a plain pytest test, a script): the thread's event loop runs the
API and its calls, the caller gets a base URL for ``twilio_client`` (or for anything speaking
HTTP), and ``twilio_client(api)`` in-process works from the caller's thread too, since its
requests are handed to that loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from simulator.api import SimulatedApi

__all__ = ["ApiServer"]


class ApiServer:
    """``with ApiServer(api) as server: server.url`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, api: SimulatedApi, *, host: str = "127.0.0.1", port: int = 0,
                 start_timeout: float = 10.0) -> None:
        import uvicorn

        self.api = api
        self.host = host
        self.port = port or _free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.start_timeout = start_timeout
        config = uvicorn.Config(api.asgi, host=host, port=self.port, log_level="error",
                                lifespan="on", access_log=False, interface="asgi3")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="simulated-twilio-api",
                                       daemon=True)
        self.error: BaseException | None = None

    def _serve(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # reported to the starting thread
            self.error = exc

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while not self.server.started:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"the simulated API did not start: {self.error}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulated API did not start within "
                                   f"{self.start_timeout} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving; the lifespan shutdown cancels calls still running."""
        self.server.should_exit = True
        self.thread.join(self.start_timeout)

    def wait_idle(self, timeout: float = 60) -> None:
        """Block until every call placed so far has ended (from a thread other than the API's)."""
        loop = self.api.loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.api.wait_idle(timeout), loop).result(timeout + 1)

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
