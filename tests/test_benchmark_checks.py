"""The benchmark's own checks: they must catch the wrong answers a load test cannot see.

wrk counts an apology as a 200 and never sends its script's first request (it only checks
it), so the benchmark reads the store back call by call. These tests drive the real app
(and, once, a real ``ivrkit serve`` under real wrk) and assert that the audit sorts each
call into the category it belongs to.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.store_audit import ANOMALIES, Audit, audit_postgres_async, audit_sqlite
from benchmarks.support_walk import TOKEN as BENCH_TOKEN
from benchmarks.support_walk import CallPlan, LineWriter, answer_problem
from benchmarks.webhook_throughput import ROOT, faulty_flow, free_port, start_server, stop_server
from benchmarks.wrk_load import THREADS, run_wrk, write_script
from flows.support_line import SupportLine
from ivrkit.loader import load_flows
from tests.driver import BASE, TOKEN

CallWalk = Callable[[str, int], Any]


async def read_store(database_url: str, sent: dict[str, int], tail: set[tuple[str, int]]) -> Audit:
    if database_url.startswith("postgresql"):
        return await audit_postgres_async(database_url, sent, tail, SupportLine.apology)
    path = Path(database_url.split("///", 1)[1])
    return audit_sqlite(path, sent, tail, SupportLine.apology)


def poster(client: Any) -> CallWalk:
    """Post webhook number ``step`` (from 0) of a call, signed as Twilio would."""
    writer = LineWriter(BASE, TOKEN)

    async def post(call_sid: str, step: int) -> Any:
        path, body, signature = writer.line(call_sid, step).split("\t")
        return await client.post(
            path,
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": signature,
            },
        )

    return post


async def test_audit_sorts_each_call_by_what_the_store_holds(
    serve: Callable[..., Any], database_url: str
) -> None:
    plan = CallPlan.make(7, 1, 7)
    done, half, lost_first, retried, in_flight, missing, _ = plan.sids
    async with serve([SupportLine]) as (_, client):
        post = poster(client)
        for step in range(4):
            answer = await post(done, step)
            assert answer_problem(step, answer.status_code, answer.text, bare=False) is None
        for step in range(2):
            await post(half, step)
        for step in range(1, 4):  # the incoming webhook never arrives, as under old wrk
            await post(lost_first, step)
        for step in (0, 1, 1, 2, 3):  # a Twilio retry of the menu's action
            await post(retried, step)
        for step in range(3):
            await post(in_flight, step)
            await post(missing, step)
    sent = {done: 4, half: 2, lost_first: 4, retried: 4, in_flight: 4, missing: 4}
    audit = await read_store(database_url, sent, tail={(in_flight, 4)})
    assert dict(audit.counts) == {
        "completed": 1,
        "cut off": 1,
        "never started": 1,
        "replay": 1,
        "in flight": 1,
        "missing": 1,
    }
    assert audit.examples["never started"] == lost_first
    assert audit.anomalies == 3


async def test_audit_counts_a_flow_error_that_wrk_sees_as_200(
    serve: Callable[..., Any], database_url: str, tmp_path: Path
) -> None:
    """The flow ``--fault flow-raises`` serves: the apology is a 200, the audit says error."""
    (flow,) = load_flows([faulty_flow(tmp_path)])
    (sid,) = CallPlan.make(1, 1, 1).sids
    async with serve([flow]) as (_, client):
        post = poster(client)
        answers = [await post(sid, step) for step in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 204]
    assert "not the intended answer" in (
        answer_problem(2, answers[2].status_code, answers[2].text, bare=False) or ""
    )
    audit = await read_store(database_url, {sid: 4}, set())
    assert dict(audit.counts) == {"error": 1}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_sends_every_call_from_its_first_webhook(tmp_path: Path) -> None:
    """wrk discards the first request its script makes; no call may lose a webhook to it."""
    port = free_port()
    plan = CallPlan.make(100, THREADS, 8)
    stem = tmp_path / "calls"
    plan.write(f"http://127.0.0.1:{port}", stem)
    database = tmp_path / "bench.db"
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": BENCH_TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "IVRKIT_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "ivrkit.cli", "serve", str(ROOT / "flows" / "support_line.py")]
    process = start_server([*command, "--port", str(port)], env, port, tmp_path / "server.log")
    try:
        result = run_wrk(port, stem, write_script(tmp_path), 1, 4)
    finally:
        assert stop_server(process) is None
    first_calls = {plan.sids[lines[0][0]] for lines in plan.lines_of}
    sent = plan.sent_steps(result.sent)
    assert all(sent[sid] > 0 for sid in first_calls)
    audit = audit_sqlite(database, sent, plan.last_lines(result.sent, 8), SupportLine.apology)
    assert {name: audit.counts[name] for name in ANOMALIES} == dict.fromkeys(ANOMALIES, 0)
    assert result.non_2xx == 0
