"""CPU cost of one webhook inside the process, without HTTP: the figure to work on.

wrk through uvicorn is the honest end-to-end measure (``webhook_throughput.py``) but it
is noisy on a small machine. This drives the ASGI app directly with the same signed
requests, 64 calls at a time, and prints microseconds of CPU per webhook for the bare
Starlette app and for ivrkit. ``--profile`` adds a cProfile of the ivrkit run.

The figure counts only if the answers were the intended ones: every answer is checked
after the timed part (the bare app's are TwiML; ivrkit's are the support line's intended
prompt for each webhook, and a 204 for the status callback), and ivrkit's store is read
back call by call (``store_audit.py``): every call must have completed as intended. The
script exits 1 otherwise. ``--database`` takes a PostgreSQL URL of a database the script
may empty.

    python benchmarks/hot_path.py [--calls 4000] [--database sqlite|URL] [--profile]
        [--metrics [--multiprocess]] [--access-log]

``--metrics`` turns metrics on (in memory, as ``ivrkit serve`` with one worker;
``--multiprocess`` writes them to files as with several workers); ``--access-log`` logs at
INFO as ``ivrkit serve`` does by default, to /dev/null: one access line per webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchmarks.store_audit import audit_postgres, audit_sqlite, empty_postgres  # noqa: E402
from benchmarks.support_walk import (  # noqa: E402
    BENCH_SECRET_KEY,
    STEPS,
    TOKEN,
    CallPlan,
    LineWriter,
    answer_problem,
)

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


async def drive(
    app, requests: list[tuple[dict, bytes]], concurrency: int
) -> tuple[float, dict, list[tuple[int, bytes]]]:
    statuses: dict[int, int] = {}
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    queue = list(reversed(list(enumerate(requests))))

    async def one(index: int, scope: dict, body: bytes) -> None:
        chunks: list[bytes] = []
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
                answers[index] = (message["status"], b"")
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(dict(scope), receive, send)
        answers[index] = (answers[index][0], b"".join(chunks))

    async def worker() -> None:
        while queue:
            index, (scope, body) = queue.pop()
            await one(index, scope, body)

    started, started_loop = time.process_time(), time.thread_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    loop_share = time.thread_time() - started_loop
    statuses["loop thread share"] = round(loop_share / (time.process_time() - started), 2)
    return time.process_time() - started, statuses, answers


def wrong_answers(plan: CallPlan, answers: list[tuple[int, bytes]], bare: bool) -> list[str]:
    """What was not the intended answer, in the order the requests were made."""
    problems = []
    for (call, step), (status, body) in zip(plan.lines_of[0], answers, strict=True):
        problem = answer_problem(step, status, body.decode(), bare)
        if problem:
            problems.append(f"call {plan.sids[call]} webhook {step + 1}: {problem}")
    return problems


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
    parser.add_argument("--metrics", action="store_true", help="metrics on")
    parser.add_argument("--multiprocess", action="store_true", help="metrics in files")
    parser.add_argument("--access-log", action="store_true", help="INFO lines to /dev/null")
    args = parser.parse_args()
    # A call's next webhook comes 4 waves of requests after its previous one.
    plan = CallPlan.make(args.calls, 1, 4 * args.concurrency)
    writer = LineWriter(BASE)
    requests = scopes([writer.line(plan.sids[call], step) for call, step in plan.lines_of[0]])
    failures = 0

    from bare_app import app as bare

    elapsed, statuses, answers = asyncio.run(drive(bare, requests, args.concurrency))
    print(f"bare Starlette: {elapsed / len(requests) * 1e6:7.1f} us CPU/request {statuses}")
    failures += report(wrong_answers(plan, answers, bare=True), len(answers))

    os.environ["TWILIO_AUTH_TOKEN"] = TOKEN
    os.environ.setdefault("IVRKIT_SECRET_KEY", BENCH_SECRET_KEY)  # support_line's assistant
    workdir = Path(tempfile.mkdtemp(prefix="ivrkit-hot-"))
    url = args.database
    if url == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'hot.db'}"
    elif url.startswith("postgresql"):
        empty_postgres(url)
    os.environ["IVRKIT_DATABASE_URL"] = url
    os.environ["IVRKIT_PUBLIC_URL"] = BASE
    if args.metrics:
        os.environ["IVRKIT_METRICS"] = "1"
        if args.multiprocess:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / "metrics")
            (workdir / "metrics").mkdir()
    if args.access_log:
        import logging.config

        from ivrkit.cli import serve_log_config

        config = serve_log_config("info")
        config["handlers"] = {  # type: ignore[index]
            "stderr": {
                "class": "logging.FileHandler",
                "formatter": "ivrkit",
                "filename": os.devnull,
            }
        }
        logging.config.dictConfig(config)
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

    elapsed, statuses, answers = asyncio.run(with_lifespan(app, run))
    options = ", ".join(
        name
        for name, on in [
            ("metrics" + (" in files" if args.multiprocess else ""), args.metrics),
            ("access line", args.access_log),
        ]
        if on
    )
    label = url.split(":")[0] + (f", {options}" if options else "")
    print(f"ivrkit ({label}): {elapsed / len(requests) * 1e6:7.1f} us CPU/request {statuses}")
    failures += report(wrong_answers(plan, answers, bare=False), len(answers))
    sent = dict.fromkeys(plan.sids, len(STEPS))
    apology = load_flows([ROOT / "flows" / "support_line.py"])[0].apology
    if url.startswith("postgresql"):
        audit = audit_postgres(url, sent, set(), apology)
    else:
        audit = audit_sqlite(Path(url.split("///", 1)[1]), sent, set(), apology)
    shutil.rmtree(workdir)
    print(f"  store: {audit.summary()}")
    if audit.counts["completed"] != len(plan.sids):
        print(f"  WRONG: {len(plan.sids) - audit.counts['completed']} calls not completed")
        failures += 1
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(35)
    return 1 if failures else 0


def report(problems: list[str], answers: int) -> int:
    """Print how many answers were the intended ones; 1 if any was not."""
    print(f"  answers: {answers - len(problems)} of {answers} as intended")
    for problem in problems[:3]:
        print(f"  WRONG: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
