"""Requests/s and latency of the whole webhook path against a bare Starlette baseline.

Each simulated call makes the four webhooks of a real one on flows/support_line.py
(incoming call -> press 3 -> recording done -> status callback), every one signed and
validated, its state loaded, transitioned, rendered and saved with an event row. The same
wrk load (2 threads, 64 connections) is pointed at a bare Starlette app that answers a fixed
TwiML menu, in the same run on the same machine. Every server is measured once per round
(three by default, in turn, so a slow spell of a shared machine hits all of them); the
script prints each run, the medians and the ratios.

    python benchmarks/webhook_throughput.py [--duration 10] [--connections 64] [--rounds 3]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token-" + "0" * 20
LUA = r"""
local lines = {}
local index = 0
function init(args)
  -- each thread takes its own share of the lines (so of the calls), keeping their order
  local n = 0
  for line in io.lines(args[1]) do
    if n % 2 == id then table.insert(lines, line) end
    n = n + 1
  end
end
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
request = function()
  index = index + 1
  if index > #lines then index = 1 end
  local path, body, sig = lines[index]:match("([^\t]+)\t([^\t]*)\t([^\t]+)")
  return wrk.format("POST", path, {["Content-Type"]="application/x-www-form-urlencoded",
                                   ["X-Twilio-Signature"]=sig}, body)
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call_requests(base: str, calls: int, block: int) -> list[str]:
    """Signed requests, each call's steps a block apart so they arrive in order."""
    validator = RequestValidator(TOKEN)
    lines: list[str] = []
    for first in range(0, calls, block):
        sids = ["CA" + secrets.token_hex(16) for _ in range(min(block, calls - first))]
        steps = [
            ("/voice/support_line", {}),
            ("/voice/support_line/action?state=main_menu&step=1", {"Digits": "3"}),
            (
                "/voice/support_line/action?state=voicemail&step=2",
                {
                    "RecordingUrl": "https://api.twilio.com/rec/RE1",
                    "RecordingDuration": "12",
                    "RecordingSid": "RE" + "1" * 32,
                    "Digits": "#",
                },
            ),
            ("/voice/support_line/status", {"CallStatus": "completed", "CallDuration": "40"}),
        ]
        for path, extra in steps:
            for sid in sids:
                params = {
                    "CallSid": sid,
                    "AccountSid": "AC" + "0" * 32,
                    "From": "+14155550100",
                    "To": "+15005550006",
                    "Caller": "+14155550100",
                    "Called": "+15005550006",
                    "CallStatus": "in-progress",
                    "Direction": "inbound",
                    "ApiVersion": "2010-04-01",
                    "FromCity": "SAN FRANCISCO",
                    "FromState": "CA",
                    "FromCountry": "US",
                    **extra,
                }
                signature = validator.compute_signature(base + path, params)
                lines.append(f"{path}\t{urlencode(params)}\t{signature}")
    return lines


def start_server(command: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    log = open(Path(tempfile.gettempdir()) / "ivrkit-bench-server.log", "w")  # noqa: SIM115
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"server did not start: {' '.join(command)} (see {log.name})")


def run_wrk(port: int, data: Path, script: Path, duration: int, connections: int) -> dict:
    threads = 2
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(data),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(label: str) -> float:
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    data: Path,
    warm_up: Path,
    script: Path,
    args: argparse.Namespace,
) -> dict:
    process = start_server(command, env, port)
    try:
        # Calls of their own: wrk starts each run at the top of its file, so warming up on
        # the measured calls would turn the first seconds of the run into replays.
        run_wrk(port, warm_up, script, 2, args.connections)
        result = run_wrk(port, data, script, args.duration, args.connections)
    finally:
        process.terminate()
        process.wait(timeout=10)
    result["name"] = name
    print(
        f"  {name:<34} {result['rps']:>9.0f} req/s   p50 {result['p50']:6.2f} ms   "
        f"p99 {result['p99']:6.2f} ms   non-2xx {result['non_2xx']}   "
        f"socket errors {result['socket_errors']}",
        flush=True,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--calls", type=int, default=40_000)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="each server is measured once per round; medians are reported",
    )
    parser.add_argument("--postgres", default=os.environ.get("IVRKIT_BENCH_POSTGRES"))
    parser.add_argument(
        "--postgres-workers",
        type=int,
        default=2,
        help="uvicorn processes on PostgreSQL (SQLite is one process by design)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk (or brew install wrk)", file=sys.stderr)
        return 2
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    print(
        f"load: wrk 2 threads, {args.connections} connections, {args.duration}s per server, "
        f"{args.rounds} round(s)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="ivrkit-bench-"))
    script = workdir / "calls.lua"
    script.write_text(LUA)
    python = sys.executable
    uvicorn = [python, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]

    targets = [
        ("bare Starlette, fixed TwiML", None, 1),
        ("ivrkit, SQLite", f"sqlite+aiosqlite:///{workdir / 'bench.db'}", 1),
    ]
    if args.postgres:
        targets.append(("ivrkit, PostgreSQL", args.postgres, 1))
        if args.postgres_workers > 1:
            targets.append(
                (
                    f"ivrkit, PostgreSQL, {args.postgres_workers} workers",
                    args.postgres,
                    args.postgres_workers,
                )
            )
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
    for number in range(1, args.rounds + 1):
        print(f"round {number}:")
        for name, url, workers in targets:
            port = free_port()
            # A call's next step comes 16 waves of requests after the last, so it is not
            # sent before the step it answers has been handled.
            base = f"http://127.0.0.1:{port}"
            data = workdir / f"{port}.tsv"
            data.write_text("\n".join(call_requests(base, args.calls, 16 * args.connections)))
            warm_up = workdir / f"{port}-warm-up.tsv"
            warm_up.write_text(
                "\n".join(call_requests(base, args.calls // 4, 16 * args.connections))
            )
            if url is None:
                command = [
                    *uvicorn,
                    "--port",
                    str(port),
                    "--app-dir",
                    str(ROOT / "benchmarks"),
                    "bare_app:app",
                ]
                env = dict(os.environ)
            else:
                if url.startswith("postgresql"):
                    _reset_postgres(url)
                else:
                    Path(url.split("///", 1)[1]).unlink(missing_ok=True)
                command = [
                    python,
                    "-m",
                    "ivrkit.cli",
                    "serve",
                    "flows/support_line.py",
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ]
                env = {
                    **os.environ,
                    "TWILIO_AUTH_TOKEN": TOKEN,
                    "IVRKIT_DATABASE_URL": url,
                    "IVRKIT_LOG_LEVEL": "warning",
                }
            runs[name].append(measure(name, command, env, port, data, warm_up, script, args))

    medians = {
        name: {key: statistics.median(r[key] for r in results) for key in ("rps", "p50", "p99")}
        for name, results in runs.items()
    }
    bare = medians[targets[0][0]]["rps"]
    sqlite = medians[targets[1][0]]["rps"]
    print("\nmedians over the rounds:")
    for name, median in medians.items():
        print(
            f"  {name:<34} {median['rps']:>9.0f} req/s   p50 {median['p50']:6.2f} ms   "
            f"p99 {median['p99']:6.2f} ms"
        )
    print()
    for name, median in list(medians.items())[1:]:
        print(
            f"{name}: {median['rps'] / bare:.2f} x the bare app's requests/s "
            f"(goal >= 0.5), p99 {median['p99']:.1f} ms (goal < 25 ms)"
        )
    for name, median in list(medians.items())[2:]:
        print(
            f"{name} / SQLite requests/s: {median['rps'] / sqlite:.2f} "
            f"(goal: within 1.5x, i.e. >= 0.67)"
        )
    return 0


def _reset_postgres(url: str) -> None:
    import asyncio

    from ivrkit.store import create_store, metadata

    async def reset() -> None:
        store = create_store(url)
        async with store.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await store.close()

    asyncio.run(reset())


if __name__ == "__main__":
    raise SystemExit(main())
