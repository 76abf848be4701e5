"""CPU cost of one webhook inside the process, without HTTP: the figure to work on.

wrk through uvicorn is the honest end-to-end measure (``webhook_throughput.py``) but it
is noisy on a small machine. This drives the ASGI app directly with the same signed
requests, 64 calls at a time, and prints microseconds of CPU per webhook for the bare
Starlette app and for ivrkit. ``--profile`` adds a cProfile of the ivrkit run.

    python benchmarks/hot_path.py [--calls 4000] [--database sqlite|URL] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_throughput import TOKEN, call_requests  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BASE = "http://127.0.0.1:8000"


def scopes(lines: list[str]) -> list[tuple[dict, bytes]]:
    out = []
    for line in lines:
        target, body, signature = line.split("\t")
        parts = urlsplit(target)
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
            (b"x-twilio-signature", signature.encode()),
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": parts.path,
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        out.append((scope, body.encode()))
    return out


async def drive(app, requests: list[tuple[dict, bytes]], concurrency: int) -> tuple[float, int]:
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))

    async def one(scope: dict, body: bytes) -> None:
        sent = False

        async def receive() -> dict:
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(dict(scope), receive, send)

    async def worker() -> None:
        while queue:
            scope, body = queue.pop()
            await one(scope, body)

    started, started_loop = time.process_time(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    loop_share = time.thread_time() - started_loop
    statuses["loop thread share"] = round(loop_share / (time.process_time() - started), 2)
    return time.process_time() - started, statuses


async def with_lifespan(app, body):
    messages = asyncio.Queue()
    await messages.put({"type": "lifespan.startup"})
    sent = asyncio.Queue()

    async def receive():
        return await messages.get()

    async def send(message):
        await sent.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await sent.get()
    try:
        return await body()
    finally:
        await messages.put({"type": "lifespan.shutdown"})
        await sent.get()
        await task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database", default="sqlite")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    requests = scopes(call_requests(BASE, args.calls, 4 * args.concurrency))

    from bare_app import app as bare

    elapsed, statuses = asyncio.run(drive(bare, requests, args.concurrency))
    print(f"bare Starlette: {elapsed / len(requests) * 1e6:7.1f} us CPU/request {statuses}")

    os.environ["TWILIO_AUTH_TOKEN"] = TOKEN
    workdir = Path(tempfile.mkdtemp(prefix="ivrkit-hot-"))
    url = args.database
    if url == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'hot.db'}"
    elif url.startswith("postgresql"):
        sys.path.insert(0, str(ROOT))
        from webhook_throughput import _reset_postgres

        _reset_postgres(url)
    os.environ["IVRKIT_DATABASE_URL"] = url
    os.environ["IVRKIT_PUBLIC_URL"] = BASE
    from ivrkit import create_app
    from ivrkit.loader import load_flows

    app = create_app(load_flows([ROOT / "flows" / "support_line.py"]))
    profiler = cProfile.Profile() if args.profile else None

    async def run():
        if profiler:
            profiler.enable()
        try:
            return await drive(app, requests, args.concurrency)
        finally:
            if profiler:
                profiler.disable()

    elapsed, statuses = asyncio.run(with_lifespan(app, run))
    print(
        f"ivrkit ({url.split(':')[0]}): {elapsed / len(requests) * 1e6:7.1f} us CPU/request "
        f"{statuses}"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
