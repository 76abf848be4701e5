"""Prometheus metrics: exact values after known calls, in one process and across two
uvicorn workers, and never a phone number or CallSid in a label."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from flows.support_line import SupportLine
from ivrkit import Call, Flow, Hangup, Say, decision
from tests.conftest import PG_ENV, phone
from tests.driver import BASE, TOKEN, signed_headers
from tests.test_serve_cli import IVRKIT, ROOT, free_port
from tests.test_serve_http import Output

CALL_SID = re.compile(r"CA[0-9a-f]{32}")
NUMBER = re.compile(r"\+?\d{7,}")


class Buggy(Flow):
    """A flow whose decision raises: its callers get the fallback."""

    fallback_number = "+15005550199"
    hello = Say("Hello.", then="route")
    bye = Hangup()

    @decision("route", targets=["bye"])
    def route(self, call: Call) -> str:
        raise RuntimeError("a bug in the flow")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def assert_no_personal_data(text: str, sids: list[str]) -> None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label in sample.labels.values():
                assert not CALL_SID.search(label), (sample.name, label)
                assert not NUMBER.search(label), (sample.name, label)
    for sid in sids:
        assert sid not in text
    assert "4155550100" not in text


async def test_metrics_count_known_calls(serve: Any) -> None:
    async with serve([SupportLine, Buggy], metrics=True) as (_, client):
        # 1: silence, a wrong key, sales busy, a message, then the status callback
        first = phone(client, "support_line")
        await first.start()
        await first.silence()
        await first.press("9")
        await first.press("1")
        await first.dial_result("busy")
        await first.recorded(5)
        await first.status("completed")
        # 2: silent three times: give-up to the operator, who does not answer; a retried
        # webhook is replayed; the call is still going
        second = phone(client, "support_line")
        await second.start()
        for _ in range(3):
            await second.silence()
        assert second.last is not None
        dial_action = second.last.find("Dial").attrib["action"]
        await second.dial_result("no-answer")
        params = second.params(DialCallStatus="no-answer", DialCallSid="CA" + "1" * 32)
        retried = await client.post(
            dial_action, data=params, headers=signed_headers(dial_action, params)
        )
        assert retried.status_code == 200
        # 3: an unsigned request: refused
        refused = await client.post(f"{BASE}/voice/support_line", data={"CallSid": "CA" + "2" * 32})
        assert refused.status_code == 403
        # 4: a flow whose own code raises: the fallback
        buggy = phone(client, "buggy")
        answer = await buggy.start()
        assert answer.find("Dial").text == "+15005550199"

        scraped = await client.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
    text = scraped.text
    found = samples(text)
    webhooks = "ivrkit_webhooks_total"
    assert (
        value(
            found, webhooks, flow="support_line", endpoint="incoming", result="answered", cause=""
        )
        == 2
    )
    # first: 5 actions; second: 3 silences + 1 dial result answered, 1 replayed
    assert (
        value(found, webhooks, flow="support_line", endpoint="action", result="answered", cause="")
        == 9
    )
    assert (
        value(found, webhooks, flow="support_line", endpoint="action", result="replayed", cause="")
        == 1
    )
    assert (
        value(found, webhooks, flow="support_line", endpoint="status", result="answered", cause="")
        == 1
    )
    assert (
        value(
            found, webhooks, flow="support_line", endpoint="incoming", result="refused", cause="403"
        )
        == 1
    )
    assert (
        value(
            found,
            webhooks,
            flow="buggy",
            endpoint="incoming",
            result="fallback",
            cause="flow_error",
        )
        == 1
    )
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 2
    assert value(found, "ivrkit_calls_ended_total", flow="support_line", status="completed") == 1
    assert value(found, "ivrkit_calls_in_progress", flow="support_line") == 1
    assert value(found, "ivrkit_no_input_total", flow="support_line", state="main_menu") == 3
    assert value(found, "ivrkit_no_match_total", flow="support_line", state="main_menu") == 1
    assert value(found, "ivrkit_give_ups_total", flow="support_line", state="main_menu") == 1
    assert (
        value(found, "ivrkit_transfers_total", flow="support_line", kind="dial", outcome="busy")
        == 1
    )
    assert (
        value(
            found, "ivrkit_transfers_total", flow="support_line", kind="dial", outcome="no-answer"
        )
        == 1
    )
    # Every answered, replayed or fallback webhook is timed (the refused one too).
    assert value(found, "ivrkit_webhook_seconds_count", endpoint="action") == 10
    assert value(found, "ivrkit_webhook_seconds_count", endpoint="incoming") == 4
    assert value(found, "ivrkit_store_seconds_count", operation="load") >= 13
    assert value(found, "ivrkit_store_seconds_count", operation="status") == 1
    assert_no_personal_data(text, [first.sid, second.sid, buggy.sid])


async def test_metrics_are_off_unless_asked(serve: Any) -> None:
    async with serve([SupportLine]) as (app, client):
        assert (await client.get("/metrics")).status_code == 404
        call = phone(client, "support_line")
        await call.start()
        assert all(endpoint.metrics is None for endpoint in app.state.ivr.endpoints.values())


async def test_unknown_flow_names_are_other(serve: Any) -> None:
    async with serve([SupportLine], metrics=True) as (_, client):
        params = {"CallSid": "CA" + "3" * 32, "From": "+14155550100"}
        url = f"{BASE}/voice/no_such_flow_{'9' * 12}"
        answer = await client.post(url, data=params, headers=signed_headers(url, params))
        assert answer.status_code == 404
        # routed by the number called: counted for the flow that answers it
        routed = {"CallSid": "CA" + "5" * 32, "From": "+14155550100", "To": "+15005550006"}
        url = f"{BASE}/voice"
        answer = await client.post(url, data=routed, headers=signed_headers(url, routed))
        assert answer.status_code == 200
        text = (await client.get("/metrics")).text
    found = samples(text)
    assert (
        value(
            found,
            "ivrkit_webhooks_total",
            flow="other",
            endpoint="incoming",
            result="refused",
            cause="404",
        )
        == 1
    )
    assert "no_such_flow" not in text
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 1
    assert_no_personal_data(text, [])


def start_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], Output]:
    process = subprocess.Popen(
        [*IVRKIT, "serve", "flows/support_line.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, Output(process)


def stop_server(process: subprocess.Popen[str], output: Output) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.thread.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()


def walk_call(base: str, n: int) -> str:
    """Start a call, leave a message, end it: 4 webhooks, each on a new connection (so the
    workers share them)."""
    sid = f"CA{time.time_ns():024x}{n:08x}"
    hook = f"{base}/voice/support_line"
    params = {"CallSid": sid, "From": "+14155550100", "To": "+15005550006", "CallStatus": "ringing"}
    first = httpx.post(hook, data=params, headers=signed_headers(hook, params))
    assert first.status_code == 200
    action = f"{base}/voice/support_line/action?state=main_menu&step=1"
    params = {**params, "CallStatus": "in-progress", "Digits": "3"}
    assert (
        httpx.post(action, data=params, headers=signed_headers(action, params)).status_code == 200
    )
    action = f"{base}/voice/support_line/action?state=voicemail&step=2"
    params = {
        **params,
        "RecordingUrl": "https://api.twilio.com/rec/RE1",
        "RecordingDuration": "7",
        "RecordingSid": "RE" + "2" * 32,
    }
    del params["Digits"]
    assert (
        httpx.post(action, data=params, headers=signed_headers(action, params)).status_code == 200
    )
    status = f"{base}/voice/support_line/status"
    params = {
        "CallSid": sid,
        "From": "+14155550100",
        "CallStatus": "completed",
        "CallDuration": "30",
    }
    assert httpx.post(status, data=params, headers=signed_headers(status, params)).status_code in (
        200,
        204,
    )
    return sid


def wait_ready(base: str, output: Output, path: str = "/healthz") -> None:
    assert output.wait_for(lambda lines: any("ready:" in line for line in lines)), output.lines
    for _ in range(200):  # bounded wait, not a measurement
        try:
            if httpx.get(base + path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base}{path} never answered: {output.lines}")


def test_two_workers_add_up(tmp_path: Any) -> None:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL run skipped: set {PG_ENV} (SQLite serves one process)")
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left over from a run before")
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": url,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    process, output = start_server(["--port", str(port), "--workers", "2", "--metrics"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        assert output.wait_for(lambda lines: sum("ready:" in line for line in lines) >= 2), (
            output.lines
        )
        wait_ready(base, output)
        sids = [walk_call(base, n) for n in range(8)]
        scrapes = [httpx.get(f"{base}/metrics").text for _ in range(4)]
        pids = {
            m.group(1) for m in re.finditer(r"\[(\d+)\] ivrkit\.access", "\n".join(output.lines))
        }
    finally:
        stop_server(process, output)
    assert len(pids) == 2, "both workers answered webhooks"
    for text in scrapes:  # whichever worker answered the scrape: the same sums
        found = samples(text)
        assert value(found, "ivrkit_calls_started_total", flow="support_line") == 8
        assert (
            value(found, "ivrkit_calls_ended_total", flow="support_line", status="completed") == 8
        )
        assert value(found, "ivrkit_calls_in_progress", flow="support_line") == 0
        assert (
            value(
                found,
                "ivrkit_webhooks_total",
                flow="support_line",
                endpoint="action",
                result="answered",
                cause="",
            )
            == 16
        )
        assert value(found, "ivrkit_webhook_seconds_count", endpoint="status") == 8
        assert_no_personal_data(text, sids)
    assert not (folder / "counter_999999.db").exists()  # cleaned at start


def test_metrics_port(tmp_path: Any) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    process, output = start_server(["--port", str(port), "--metrics-port", str(metrics_port)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, output)
        sid = walk_call(base, 1)
        on_app = httpx.get(f"{base}/metrics")
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    finally:
        stop_server(process, output)
    assert on_app.status_code == 404
    found = samples(text)
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 1
    assert value(found, "ivrkit_calls_ended_total", flow="support_line", status="completed") == 1
    assert_no_personal_data(text, [sid])


def test_one_process_with_no_metrics_folder_given_still_counts(tmp_path: Any) -> None:
    """`ivrkit serve --metrics` as a user types it: no PROMETHEUS_MULTIPROC_DIR in the
    environment, one process. The folder serve makes must be known before prometheus_client
    is first imported, or the app counts in memory while /metrics reads the empty folder."""
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process, output = start_server(["--port", str(port), "--metrics"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, output)
        sid = walk_call(base, 1)
        text = httpx.get(f"{base}/metrics").text
    finally:
        stop_server(process, output)
    found = samples(text)
    assert value(found, "ivrkit_calls_started_total", flow="support_line") == 1
    assert value(found, "ivrkit_webhook_seconds_count", endpoint="status") == 1
    assert_no_personal_data(text, [sid])
