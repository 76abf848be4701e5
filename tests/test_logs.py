"""Log lines: one JSON object per line with IVRKIT_LOG_FORMAT=json (numbers masked, the
call's fields on every line written during its webhook), text by default, and one
access line per webhook."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from flows.support_line import SupportLine
from ivrkit.logs import JsonFormatter
from tests.conftest import phone
from tests.driver import TOKEN, signed_headers
from tests.test_metrics import start_server, stop_server, wait_ready
from tests.test_serve_cli import free_port

CALLER = "+14155550100"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """ivrkit's loggers written as JSON into a buffer, at INFO."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ivrkit")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_json_lines_carry_the_call_and_mask_numbers(serve: Any, json_lines: Any) -> None:
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line", from_number=CALLER)
        await call.start()
        await call.press("3")
        await call.recorded(7)
        logging.getLogger("ivrkit.app").info("a line that names %s by mistake", "+14155550123")
    text = json_lines.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # each line is one object
    assert CALLER not in text
    assert "+14155550123" not in text
    access = [line for line in lines if line["logger"] == "ivrkit.access"]
    assert [(a["endpoint"], a.get("state"), a.get("step")) for a in access] == [
        ("incoming", None, None),
        ("action", "main_menu", 1),
        ("action", "voicemail", 2),
    ]
    for line in access:
        assert line["level"] == "info"
        assert line["flow"] == "support_line"
        assert line["CallSid"] == call.sid
        assert line["from"] == "+1415*****00"
        assert line["result"] == "answered"
        assert line["status"] == 200
        assert isinstance(line["latency_ms"], float)
        assert line["timestamp"].endswith("+00:00")
    started = next(line for line in lines if "started support_line" in line["message"])
    assert started["CallSid"] == call.sid  # a line of the app's own, tied to its call
    stray = next(line for line in lines if "by mistake" in line["message"])
    assert stray["message"] == "a line that names +1415*****23 by mistake"


async def test_text_access_line_by_default(serve: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="ivrkit.access")
    async with serve([SupportLine]) as (_, client):
        call = phone(client, "support_line")
        first = await call.start()
        await call.press("3")
        call.last = first
        await call.press("3")  # Twilio retried the webhook: replayed
    lines = [r.getMessage() for r in caplog.records if r.name == "ivrkit.access"]
    assert len(lines) == 3
    assert lines[0].startswith("POST /voice/support_line 200 answered CA")
    assert lines[1].startswith("POST /voice/support_line/action 200 answered CA")
    assert " main_menu#1 " in lines[1]
    assert " replayed " in lines[2]
    assert all(line.endswith(" ms") for line in lines)
    assert all(call.sid not in line for line in lines)  # a prefix only


async def test_refused_webhook_has_one_line(serve: Any, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    async with serve([SupportLine]) as (_, client):
        answer = await client.post("http://testserver/voice/support_line", data={"CallSid": "x"})
    assert answer.status_code == 403
    assert [
        r.name for r in caplog.records if r.levelno >= logging.INFO and "refused" in r.getMessage()
    ] == ["ivrkit.app"]
    assert not [r for r in caplog.records if r.name == "ivrkit.access"]


def test_served_json_logs_parse(tmp_path: Any) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "IVRKIT_LOG_FORMAT": "json",
    }
    process, output = start_server(["--port", str(port)], env)
    base = f"http://127.0.0.1:{port}"
    try:
        assert output.wait_for(lambda lines: any('"ready:' in line for line in lines)), output.lines
        wait_ready(base, output)
        hook = f"{base}/voice/support_line"
        params = {"CallSid": "CA" + "4" * 32, "From": CALLER, "To": "+15005550006"}
        assert (
            httpx.post(hook, data=params, headers=signed_headers(hook, params)).status_code == 200
        )
        assert output.wait_for(lambda lines: any("ivrkit.access" in line for line in lines))
    finally:
        stop_server(process, output)
    logged = [line for line in output.lines if line.startswith("{")]
    parsed = [json.loads(line) for line in logged]
    assert len(parsed) >= 3
    assert {"timestamp", "level", "logger", "message"} <= set(parsed[0])
    (access,) = [p for p in parsed if p["logger"] == "ivrkit.access"]
    assert access["CallSid"] == "CA" + "4" * 32
    assert CALLER not in "\n".join(output.lines)
    # Every line is JSON but the banner `ivrkit serve` prints before logging starts.
    others = [line for line in output.lines if not line.startswith("{")]
    assert all(line.startswith(("ivrkit: ", " ")) for line in others), others
