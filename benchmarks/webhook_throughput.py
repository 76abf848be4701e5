"""Webhook throughput of ivrkit beside a bare Starlette app, counted only if answers were right.

What it measures. Each simulated call makes the four webhooks of a real call on
flows/support_line.py: incoming call, press 3, recording done, status callback `completed`.
Every webhook is signed and validated, its call loaded, transitioned, rendered and saved with
an event row. wrk (2 threads, 64 connections) sends each call's webhooks in order, a call's
next webhook 16 waves of requests after its previous one. The same load goes to a bare
Starlette app answering fixed TwiML. Each server is measured once per round, three rounds in
turn, every run on a fresh SQLite file or an emptied PostgreSQL database, after 2 s of
warm-up on calls of its own.

How it proves it. wrk calls its script's request() once before the run and never sends that
request; the script hands it a harmless GET /healthz, so no call loses a webhook. After each
run the server is stopped (it finishes what it received) and its store is read call by call
against what wrk sent. Each call counts as completed as intended (four events in order, ended
`completed` in the intended state), cut off (the run ended before its next webhook was sent)
or in flight (its last webhook was unanswered when wrk stopped), or as an anomaly: never
started (webhooks sent, no row), error event, apology, replay, unexpected (events or final
state not the intended ones) or missing (a webhook sent and never stored). A few calls are
also walked over HTTP and every answer parsed as TwiML, the bare app's included. A run with
any anomaly, non-2xx answer, socket error, traceback in the server log, or a wrk thread that
ran out of calls is INVALID: it is printed with its reasons and left out of the medians, and
the script exits 1 when every run of a server was invalid.

What it prints: the machine, then per run requests/s, p50, p99, valid or INVALID and the call
counts; then the medians of the valid runs, each server's requests/s as a share of the bare
app's with its p99, and PostgreSQL's requests/s as a share of SQLite's.

    python benchmarks/webhook_throughput.py [--duration 10] [--rounds 3] [--connections 64]
        [--postgres postgresql+asyncpg://postgres@127.0.0.1:5432/ivrkit_bench] [--workers 1 2]
        [--calls N] [--fault wrong-token|flow-raises]

--postgres names a database the benchmark may empty before each run (it refuses one that
holds tables other than ivrkit's); --workers lists the process counts to measure on it.
--fault serves ivrkit broken on purpose (another auth token, or a flow that raises on the
recording step) to watch the check at work: every ivrkit run must come out INVALID.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.store_audit import (  # noqa: E402
    ANOMALIES,
    Audit,
    audit_postgres,
    audit_sqlite,
    empty_postgres,
)
from benchmarks.support_walk import (  # noqa: E402
    BENCH_SECRET_KEY,
    STEPS,
    TOKEN,
    CallPlan,
    LineWriter,
    answer_problem,
    check_signer,
)
from benchmarks.wrk_load import THREADS, WrkResult, run_wrk, write_script  # noqa: E402

SUPPORT_LINE = ROOT / "flows" / "support_line.py"
WARM_UP_SECONDS = 2
SAMPLE_CALLS = 4
BLOCK_WAVES = 16
"""A call's next webhook is sent this many waves of requests (one per connection) later."""


@dataclass(frozen=True)
class Target:
    name: str
    database: str | None  # None: the bare app
    workers: int = 1
    metrics: bool = False  # ivrkit serve --metrics (values in files: the multiprocess mode)
    log_level: str = "warning"  # "info" writes one access line per webhook


@dataclass
class Run:
    target: Target
    wrk: WrkResult
    problems: list[str]
    audit: Audit | None

    @property
    def valid(self) -> bool:
        return not self.problems


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    command: list[str], env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    """Start a server and wait until its /healthz answers 200 (not just any listener)."""
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    raise SystemExit(f"server did not start: {' '.join(command)} (see {log})")


def stop_server(process: subprocess.Popen[bytes]) -> str | None:
    """SIGTERM: uvicorn finishes the requests it has, and the store flushes, before exit."""
    process.terminate()
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return "server did not stop within 60 s of SIGTERM"
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly
    return None if code in (0, -signal.SIGTERM) else f"server exited with {code}"


def walk_samples(base: str, plan: CallPlan, bare: bool) -> list[str]:
    """Walk the plan's calls one webhook at a time over HTTP; what was wrong with answers."""
    writer = LineWriter(base)
    problems = []
    for sid in plan.sids:
        for step in range(len(STEPS)):
            path, body, signature = writer.line(sid, step).split("\t")
            request = urllib.request.Request(
                base + path,
                data=body.encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": signature,
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    status, text = answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                status, text = error.code, ""
            except OSError as error:
                return [*problems, f"sample call {sid} webhook {step + 1}: no answer ({error})"]
            problem = answer_problem(step, status, text, bare)
            if problem:
                problems.append(f"sample call {sid} webhook {step + 1}: {problem}")
    return problems


def tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback (most recent call last)")


def faulty_flow(directory: Path) -> Path:
    """The support line with the recording step's next state raising: an apology (200)."""
    source = SUPPORT_LINE.read_text()
    if source.count('then="thanks",') != 1:
        raise SystemExit(
            f"{SUPPORT_LINE}: expected one 'then=\"thanks\",' to redirect for --fault "
            "flow-raises; update faulty_flow() in benchmarks/webhook_throughput.py"
        )
    source = source.replace('then="thanks",', 'then="after_message",')
    source += (
        '\n    @decision("after_message", targets=["thanks"])\n'
        "    def fail_after_message(self, call: Call) -> str:\n"
        '        raise RuntimeError("injected by webhook_throughput.py --fault flow-raises")\n'
    )
    path = directory / "support_line.py"
    path.write_text(source)
    return path


def measure(
    target: Target, args: argparse.Namespace, workdir: Path, script: Path, number: int
) -> Run:
    """One run: a fresh store, the server, warm-up, the measured load, samples, the audit."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    check_signer(base)
    block = BLOCK_WAVES * args.connections // THREADS
    calls = args.calls or args.duration * 6000
    plans = {
        "warm-up": CallPlan.make(calls * WARM_UP_SECONDS // args.duration + block, THREADS, block),
        "run": CallPlan.make(calls, THREADS, block),
    }
    samples = CallPlan.make(SAMPLE_CALLS, 1, SAMPLE_CALLS)
    stems = {name: workdir / f"run{number}-{name}" for name in plans}
    for name, plan in plans.items():
        plan.write(base, stems[name])
    log = workdir / f"run{number}.log"
    database = run_database(target, workdir, number)
    command, env = server_command(target, database, args, workdir, port)
    process = start_server(command, env, port, log)
    try:
        warm = run_wrk(port, stems["warm-up"], script, WARM_UP_SECONDS, args.connections)
        result = run_wrk(port, stems["run"], script, args.duration, args.connections)
        wrong = walk_samples(base, samples, bare=not database)
        total = SAMPLE_CALLS * len(STEPS)
        problems = [f"{len(wrong)} of {total} sample answers wrong: {wrong[0]}"] if wrong else []
    finally:
        stopped = stop_server(process)
        for stem in stems.values():
            for thread in range(THREADS):
                Path(f"{stem}.{thread}").unlink()
    problems += [stopped] if stopped else []
    for name, wrk in (("warm-up", warm), ("run", result)):
        problems += transport_problems(name, wrk)
    if tracebacks(log):
        problems.append(f"{tracebacks(log)} tracebacks in the server log ({log})")
    if not database:
        return Run(target, result, problems, None)
    sent: dict[str, int] = dict.fromkeys(samples.sids, len(STEPS))
    tail: set[tuple[str, int]] = set()
    for plan, wrk in ((plans["warm-up"], warm), (plans["run"], result)):
        sent.update(plan.sent_steps(wrk.sent))
        tail |= plan.last_lines(wrk.sent, block)
    audit = read_store(database, sent, tail)
    problems += store_problems(audit, args.connections)
    return Run(target, result, problems, audit)


def transport_problems(name: str, wrk: WrkResult) -> list[str]:
    problems = []
    if wrk.non_2xx:
        problems.append(f"{wrk.non_2xx} non-2xx answers in the {name}")
    if wrk.lost_by_transport:
        problems.append(f"socket errors in the {name}: {wrk.socket_errors}")
    if wrk.ran_out:
        problems.append(f"wrk ran out of calls in the {name}: raise --calls")
    return problems


def store_problems(audit: Audit, connections: int) -> list[str]:
    problems = []
    if audit.anomalies:
        examples = ", ".join(
            f"{name}: {sid}" for name, sid in audit.examples.items() if name in ANOMALIES
        )
        problems.append(f"{audit.anomalies} calls not handled as intended (e.g. {examples})")
    # At most one request per connection is unanswered when wrk stops, in each of the
    # warm-up and the run.
    if audit.counts["in flight"] > 2 * connections:
        problems.append(f"{audit.counts['in flight']} calls in flight at the end")
    return problems


def run_database(target: Target, workdir: Path, number: int) -> str:
    """The run's empty store: a new SQLite file, or the PostgreSQL database emptied."""
    if target.database is None:
        return ""
    if target.database.startswith("postgresql"):
        empty_postgres(target.database)
        return target.database
    return f"sqlite+aiosqlite:///{workdir / f'run{number}.db'}"


def server_command(
    target: Target, database: str, args: argparse.Namespace, workdir: Path, port: int
) -> tuple[list[str], dict[str, str]]:
    python = sys.executable
    if not database:
        command = [python, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
        command += ["--port", str(port), "--app-dir", str(ROOT / "benchmarks"), "bare_app:app"]
        return command, dict(os.environ)
    flow = faulty_flow(workdir) if args.fault == "flow-raises" else SUPPORT_LINE
    command = [python, "-m", "ivrkit.cli", "serve", str(flow), "--port", str(port)]
    command += ["--workers", str(target.workers)]
    token = TOKEN if args.fault != "wrong-token" else "not-the-" + TOKEN
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": token,
        "IVRKIT_DATABASE_URL": database,
        "IVRKIT_LOG_LEVEL": target.log_level,
        # support_line's assistant keeps the account number encrypted: a key of its own.
        "IVRKIT_SECRET_KEY": os.environ.get("IVRKIT_SECRET_KEY", BENCH_SECRET_KEY),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if target.metrics:
        command.append("--metrics")
        env["PROMETHEUS_MULTIPROC_DIR"] = str(workdir / f"metrics-{port}")
    return command, env


def read_store(database: str, sent: dict[str, int], tail: set[tuple[str, int]]) -> Audit:
    """Audit the run's store; a SQLite file is deleted afterwards (they grow large)."""
    from ivrkit.loader import load_flows

    apology = load_flows([SUPPORT_LINE])[0].apology
    if database.startswith("postgresql"):
        return audit_postgres(database, sent, tail, apology)
    path = Path(database.split("///", 1)[1])
    try:
        return audit_sqlite(path, sent, tail, apology)
    finally:
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()


def report(run: Run) -> None:
    wrk = run.wrk
    verdict = "valid" if run.valid else "INVALID"
    line = (
        f"  {run.target.name:<34} {wrk.rps:>9.0f} req/s   p50 {wrk.p50:6.2f} ms   "
        f"p99 {wrk.p99:6.2f} ms   {verdict}"
    )
    print(line)
    if run.audit is not None:
        print(f"      warm-up, run and samples: {run.audit.summary()}")
    if wrk.socket_errors["timeout"]:
        print(f"      {wrk.socket_errors['timeout']} answers took over 2 s")
    for problem in run.problems[:6]:
        print(f"      INVALID: {problem}")
    if len(run.problems) > 6:
        print(f"      INVALID: and {len(run.problems) - 6} more")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--calls", type=int, default=0, help="calls prepared per run (default: 6000 a second)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="each server is measured once per round"
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("IVRKIT_BENCH_POSTGRES"),
        help="a database the benchmark may empty before each run",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="uvicorn processes to measure on PostgreSQL (SQLite is one process by design)",
    )
    parser.add_argument(
        "--fault",
        choices=["wrong-token", "flow-raises"],
        help="serve ivrkit broken on purpose: every ivrkit run must be reported INVALID",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also measure each ivrkit server with --metrics (the cost of metrics)",
    )
    parser.add_argument(
        "--info-logs",
        action="store_true",
        help="also measure SQLite at log level info (one access line per webhook)",
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
        f"load: wrk {THREADS} threads, {args.connections} connections, {args.duration}s per "
        f"server after {WARM_UP_SECONDS}s of warm-up, {args.rounds} round(s)"
        + (f"; FAULT INJECTED: {args.fault}" if args.fault else "")
    )
    targets = [
        Target("bare Starlette, fixed TwiML", None),
        Target("ivrkit, SQLite", "sqlite"),
    ]
    for workers in args.workers if args.postgres else []:
        suffix = f", {workers} workers" if workers > 1 else ""
        targets.append(Target(f"ivrkit, PostgreSQL{suffix}", args.postgres, workers))
    if args.metrics:
        targets += [
            Target(f"{t.name}, metrics", t.database, t.workers, metrics=True)
            for t in targets
            if t.database
        ]
    if args.info_logs:
        targets.append(Target("ivrkit, SQLite, info logs", "sqlite", log_level="info"))
    workdir = Path(tempfile.mkdtemp(prefix="ivrkit-bench-"))
    script = write_script(workdir)
    print(f"server logs: {workdir}")
    runs: dict[str, list[Run]] = {target.name: [] for target in targets}
    number = 0
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}:")
        for target in targets:
            number += 1
            run = measure(target, args, workdir, script, number)
            report(run)
            runs[target.name].append(run)
    return summarize(runs, args.rounds)


def summarize(runs: dict[str, list[Run]], rounds: int) -> int:
    print("\nmedians over the valid runs:")
    medians: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        valid = [run for run in results if run.valid]
        if not valid:
            print(f"  {name:<34} no valid run of {rounds}: no figure")
            continue
        medians[name] = {
            "rps": statistics.median(run.wrk.rps for run in valid),
            "p99": statistics.median(run.wrk.p99 for run in valid),
            "p50": statistics.median(run.wrk.p50 for run in valid),
        }
        m = medians[name]
        print(
            f"  {name:<34} {m['rps']:>9.0f} req/s   p50 {m['p50']:6.2f} ms   "
            f"p99 {m['p99']:6.2f} ms   ({len(valid)} of {len(results)} runs valid)"
        )
    print()
    names = list(runs)
    bare, sqlite = medians.get(names[0]), medians.get(names[1])
    for name in names[1:]:
        if name in medians and bare:
            share = medians[name]["rps"] / bare["rps"]
            print(
                f"{name}: {share:.2f} x the bare app's requests/s, "
                f"p99 {medians[name]['p99']:.1f} ms"
            )
    for name in names[2:]:
        if name in medians and sqlite and "PostgreSQL" in name:
            print(f"{name} / SQLite requests/s: {medians[name]['rps'] / sqlite['rps']:.2f}")
    for name in names:
        plain = name.removesuffix(", metrics").removesuffix(", info logs")
        if name != plain and name in medians and plain in medians:
            cost = 1 - medians[name]["rps"] / medians[plain]["rps"]
            print(f"{name}: {cost:+.1%} requests/s cost against {plain} (goal: metrics <= 10 %)")
    print(
        "goals: SQLite >= 0.5 x bare with p99 < 25 ms; PostgreSQL >= 0.67 x SQLite "
        "with p99 < 40 ms on 2 workers"
    )
    return 1 if len(medians) < len(runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
