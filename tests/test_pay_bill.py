"""flows/pay_bill.py end to end through the simulator: every <Pay> outcome, on both stores,
and the card never lands in the database or the logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flows.pay_bill import PayBill
from simulator import PayAction, PayCard, PayEvent, run_call
from tests.driver import BASE, TOKEN

CARD = "4111111111111111"
EXPIRY = "0931"
CVC = "837"
ZIP = "60614"


async def pay_call(app: Any, steps: list[Any], **options: Any) -> Any:
    return await run_call(f"{BASE}/voice/pay_bill", steps, app=app, auth_token=TOKEN, **options)


def pay_event(result: Any) -> PayEvent:
    return next(e for e in result.events if isinstance(e, PayEvent))


async def test_success_keeps_only_code_type_and_masked_number(serve):
    async with serve([PayBill]) as (app, _):
        result = await pay_call(app, [PayCard(CARD, EXPIRY, CVC, ZIP)])
        assert pay_event(result).result == "success"
        assert "Your confirmation code ends in" in result.heard
        record = await app.state.ivr.store.load(result.call_sid)
        payment = record.data["payment"]
        assert set(payment) == {"result", "confirmation_code", "card_type", "masked_number"}
        assert payment["result"] == "success"
        assert payment["card_type"] == "visa"
        assert payment["masked_number"] == "xxxx-xxxx-xxxx-1111"
        assert payment["confirmation_code"].startswith("ch_sim_")
        assert record.state == "paid>next"


@pytest.mark.parametrize(
    ("steps", "result", "heard"),
    [
        ([PayAction("star")], "caller-interrupted-with-star", "Your payment was cancelled"),
        (
            [PayCard("4111111111111112"), PayAction("timeout")],
            "too-many-failed-attempts",
            "could not take your payment",
        ),
        ([PayCard("4000000000000119")], "payment-connector-error", "could not take your payment"),
        ([PayAction("validation-error")], "validation-error", "could not take your payment"),
        ([PayAction("internal-error")], "internal-error", "could not take your payment"),
    ],
)
async def test_every_failure_has_its_way_out(serve, steps, result, heard):
    async with serve([PayBill]) as (app, _):
        call = await pay_call(app, steps)
        assert pay_event(call).result == result
        assert heard in call.heard
        record = await app.state.ivr.store.load(call.call_sid)
        assert record.data["payment"]["result"] == result
        assert "confirmation_code" not in record.data["payment"]


async def test_caller_hanging_up_mid_payment_ends_the_flow(serve):
    async with serve([PayBill]) as (app, _):
        call = await pay_call(app, [PayAction("hangup")])
        assert pay_event(call).result == "caller-hung-up"
        assert call.reason == "caller-hangup"
        record = await app.state.ivr.store.load(call.call_sid)
        assert record.state == "payment>hangup"
        assert record.data["payment"] == {"result": "caller-hung-up"}


async def test_second_attempt_hears_the_error_prompt_and_pays(serve):
    async with serve([PayBill]) as (app, _):
        call = await pay_call(app, [PayCard("4111111111111112"), PayCard(CARD)])
        said = call.said
        assert said.index("That card number is not valid. Please enter it again.") > said.index(
            "Please enter your card number."
        )
        assert pay_event(call).attempts == 2
        assert pay_event(call).result == "success"


async def test_status_callbacks_are_recorded_masked(serve):
    async with serve([PayBill]) as (app, _):
        call = await pay_call(app, [PayCard(CARD, EXPIRY, CVC, ZIP)])
        events = await app.state.ivr.store.call_events(call.call_sid)
        steps = [e.params["For"] for e in events if e.kind == "pay-status"]
        assert steps == [
            "payment-card-number",
            "expiration-date",
            "security-code",
            "postal-code",
            "payment-processing",
        ]
        last = [e for e in events if e.kind == "pay-status"][-1].params
        assert last["PaymentCardNumber"] == "xxxx-xxxx-xxxx-1111"
        assert last["ExpirationDate"] == last["SecurityCode"] == "****"
        assert last["PaymentCardPostalCode"] == "****"
        action = next(e for e in events if e.params.get("Result") == "success").params
        assert action["ExpirationDate"] == "****"


def _card_traces(blob: str) -> list[str]:
    """The card number, expiry, CVC or postal code as they were keyed, anywhere in ``blob``.

    The short ones count only standing alone (not inside a longer run of hex or digits, as
    a CallSid or a timestamp may hold them by chance)."""
    found = [CARD] if CARD in blob else []
    for secret in (EXPIRY, CVC, ZIP):
        if re.search(rf"(?<![0-9A-Fa-f]){secret}(?![0-9A-Fa-f])", blob):
            found.append(secret)
    return found


async def test_card_never_reaches_database_or_logs(serve, database_url, caplog):
    caplog.set_level(logging.DEBUG)
    async with serve([PayBill]) as (app, _):
        paid = await pay_call(app, [PayCard(CARD, EXPIRY, CVC, ZIP)])
        failed = await pay_call(app, [PayCard(CARD, "0120", CVC, ZIP), PayAction("star")])
        assert pay_event(paid).result == "success"
        assert pay_event(failed).result == "caller-interrupted-with-star"
        # The simulator did send them to the app, or this test would prove nothing.
        sent = [r for r in paid.requests if r.params.get("Result") == "success"]
        assert sent
        assert sent[0].params["ExpirationDate"] == EXPIRY
        assert sent[0].params["PaymentCardPostalCode"] == ZIP
        store = app.state.ivr.store
        if database_url.startswith("postgresql"):
            dumped = []
            async with store.engine.connect() as conn:
                tables = (
                    await conn.execute(
                        text(
                            "select tablename from pg_tables where schemaname = current_schema()"
                        )
                    )
                ).scalars()
                for table in list(tables):
                    rows = await conn.execute(text(f'select t::text from "{table}" t'))
                    dumped += [row[0] for row in rows]
            blob = "\n".join(dumped)
            assert "pay-status" in blob  # the tables read are the ones the calls wrote
    if database_url.startswith("sqlite"):
        path = Path(database_url.split("///", 1)[1])
        files = [f for f in path.parent.iterdir() if f.name.startswith(path.name)]
        blob = b"".join(f.read_bytes() for f in files).decode("latin-1")
        assert "pay-status" in blob
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert logged  # something was logged, in which nothing of the card may appear
    assert _card_traces(blob) == []
    assert _card_traces(logged) == []


async def test_event_log_export_replays_against_the_flow(serve, tmp_path):
    """`ivrkit events` of a paid call replays: the status callbacks are skipped, the card is
    keyed again as the brand's test card (the log has only its last four)."""
    import json

    from simulator import load_recording, replay

    async with serve([PayBill]) as (app, _):
        paid = await pay_call(app, [PayCard("4111111111111112"), PayCard("4242424242424242")])
        events = await app.state.ivr.store.call_events(paid.call_sid)
        rows = [
            {
                "kind": "webhook" if e.kind in ("start", "action") else e.kind,
                "params": e.params,
                "twiml": e.twiml,
            }
            for e in events
        ]
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(json.dumps(row) for row in rows))
        recording = load_recording(path)
        # The failed attempt comes back from its status callback's ErrorType.
        assert recording.steps == [PayCard("4242424242424243"), PayCard("4242424242424242")]
        report = await replay(recording, f"{BASE}/voice/pay_bill", auth_token=TOKEN, app=app)
        assert report.ok, report.diff


def test_done_means_ivrkit_sim_pays_and_fails_over_http(tmp_path):
    """The issue's done-means, as a user runs it: `ivrkit serve flows/pay_bill.py`, then
    `ivrkit-sim run` with the README's scenario file and `ivrkit-sim call --pay`."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    from tests.test_readme import readme_block
    from tests.test_serve_cli import IVRKIT, ROOT, free_port

    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    server = subprocess.Popen(
        [*IVRKIT, "serve", "flows/pay_bill.py", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # bounded wait for start-up, not a timing assertion
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        scenarios = tmp_path / "pay.yaml"
        scenarios.write_text(readme_block("readme-pay-scenario", "yaml"))
        sim = [sys.executable, "-m", "simulator"]
        ran = subprocess.run(
            [*sim, "run", str(scenarios), "--url", f"{base}/voice/pay_bill"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert "3 passed, 0 failed of 3 scenarios" in ran.stdout
        paid = subprocess.run(
            [*sim, "call", f"{base}/voice/pay_bill", "--pay", "4242424242424242:1230:123:94105"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert paid.returncode == 0, paid.stderr
        assert "Pay: success (visa xxxx-xxxx-xxxx-4242) after 1 attempt(s)" in paid.stdout
        declined = subprocess.run(
            [*sim, "call", f"{base}/voice/pay_bill", "--pay", "4242424242424242",
             "--pay-connector-error"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Pay: payment-connector-error" in declined.stdout
        assert "could not take your payment" in declined.stdout
    finally:
        server.terminate()
        server.wait(timeout=10)
