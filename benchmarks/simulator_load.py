"""The simulator's load mode against a bare Starlette app and ivrkit's support line.

In one run on one machine: ``ivrkit-sim load``'s engine (signed webhooks, TwiML executed
with Twilio's semantics) places the same number of calls, with the same concurrency, against
(a) a bare Starlette app answering fixed TwiML and (b) ``flows/support_line.py`` on SQLite;
it prints requests/s and p50/p99 webhook latency for both and their ratio. The simulator
shares the 2 cores with the server, so absolute figures are lower than wrk's
(webhook_throughput.py); the ratio is the point.

    python benchmarks/simulator_load.py [--calls 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook_throughput import (  # noqa: E402
    BENCH_SECRET_KEY,
    ROOT,
    TOKEN,
    free_port,
    start_server,
    stop_server,
)

from simulator import run_load  # noqa: E402


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    path: str,
    args: argparse.Namespace,
) -> dict:
    log = Path(tempfile.gettempdir()) / f"ivrkit-simload-{port}.log"
    process = start_server(command, env, port, log)
    try:
        url = f"http://127.0.0.1:{port}{path}"
        asyncio.run(run_load(url, calls=50, concurrency=8, auth_token=TOKEN, seed=1))  # warm-up
        report = asyncio.run(
            run_load(url, calls=args.calls, concurrency=args.concurrency, auth_token=TOKEN, seed=1)
        )
    finally:
        stopped = stop_server(process)
        if stopped:
            print(f"{name}: {stopped} (see {log})")
    result = {
        "name": name,
        "rps": report.requests_per_second,
        **report.latency_ms,
        "completed": report.completed,
        "errors": report.errors,
    }
    print(
        f"{name:<32} {report.requests_per_second:>7.0f} req/s   "
        f"p50 {report.latency_ms['p50']:6.1f} ms   p99 {report.latency_ms['p99']:6.1f} ms   "
        f"calls {report.completed}/{args.calls}   errors {report.errors or 'none'}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; simulator load, {args.calls} calls, "
        f"{args.concurrency} at a time"
    )
    workdir = Path(tempfile.mkdtemp(prefix="ivrkit-simload-"))
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    port = free_port()
    bare = measure(
        "bare Starlette, fixed TwiML",
        [*uvicorn, "--port", str(port), "--app-dir", str(ROOT / "benchmarks"), "bare_app:app"],
        dict(os.environ),
        port,
        "/voice/support_line",
        args,
    )
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_LOG_LEVEL": "warning",
        "IVRKIT_SECRET_KEY": os.environ.get("IVRKIT_SECRET_KEY", BENCH_SECRET_KEY),
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'simload.db'}",
    }
    ivr = measure(
        "ivrkit support_line, SQLite",
        [sys.executable, "-m", "ivrkit.cli", "serve", "flows/support_line.py", "--port", str(port)],
        env,
        port,
        "/voice/support_line",
        args,
    )
    print(
        f"\nivrkit / bare requests/s: {ivr['rps'] / bare['rps']:.2f}; "
        f"p99 {ivr['p99']:.1f} ms vs {bare['p99']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
