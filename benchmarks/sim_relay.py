"""The simulator's ConversationRelay side under load: many agent sessions at once.

Load mode places calls against the small agent app of the simulator's tests
(``tests/simulator/relay_app.py``: Starlette, a keyword agent streaming ``text`` tokens), either
in-process (ASGI WebSocket scope) or through a real uvicorn server (``--uvicorn``). Each caller
says two lines; the second ends the session with a hand-off to a billing menu. Printed:
sessions per second and the agent's reply latency (caller's turn to the reply's last token).
``--settle`` is the quiet time that ends an agent turn; it bounds sessions/s from above, so it
is reported beside the figures.

    python benchmarks/sim_relay.py [--calls 500] [--concurrency 50] [--settle 0.02] [--uvicorn]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "simulator"))

from relay_app import RelayApp  # noqa: E402
from sim_apps import TOKEN, LiveServer  # noqa: E402

from simulator import RelayOptions, run_load  # noqa: E402


async def measure(url: str, app: RelayApp | None, args: argparse.Namespace) -> dict:
    options = RelayOptions(settle=args.settle, agent_silence=5.0)
    lines = ("Hello there", "I have a question about my bill")
    await run_load(url, calls=20, concurrency=10, app=app, auth_token=TOKEN, relay=options,
                   agent_lines=lines, seed=1)  # warm-up
    started = time.perf_counter()
    report = await run_load(url, calls=args.calls, concurrency=args.concurrency, app=app,
                            auth_token=TOKEN, relay=options, agent_lines=lines, seed=1)
    elapsed = time.perf_counter() - started
    return {
        "sessions": report.agent_sessions,
        "completed": report.completed,
        "errors": report.errors,
        "sessions_per_s": round(report.agent_sessions / elapsed, 1),
        "replies": report.agent_replies,
        **{f"reply_{k}_ms": v for k, v in report.agent_latency_ms.items()},
        "webhook_p50_ms": report.latency_ms.get("p50"),
        "webhook_p99_ms": report.latency_ms.get("p99"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--settle", type=float, default=0.02)
    parser.add_argument("--uvicorn", action="store_true", help="over a real server")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {args.calls} calls, concurrency "
          f"{args.concurrency}, settle {args.settle} s, "
          f"{'uvicorn (1 worker, same machine)' if args.uvicorn else 'in-process'}")
    if args.uvicorn:
        with LiveServer(RelayApp()) as server:
            result = asyncio.run(measure(f"{server.url}/voice", None, args))
    else:
        result = asyncio.run(measure("/voice", RelayApp(), args))
    for name, value in result.items():
        print(f"{name:16} {value}")


if __name__ == "__main__":
    main()
