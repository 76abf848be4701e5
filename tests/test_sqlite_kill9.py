"""kill -9 of ``ivrkit serve`` on SQLite under ``ivrkit-sim load``, then a restart.

Every call the file holds must go on from its stored state (its next webhook answered as a
fresh step, not the apology), and the file must pass ``PRAGMA integrity_check``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from flows.support_line import SupportLine
from tests.driver import TOKEN, signed_headers
from tests.test_serve_cli import ROOT, free_port

SERVE = [sys.executable, "-m", "ivrkit.cli", "serve", "flows/support_line.py"]
LOAD = [sys.executable, "-m", "simulator.cli", "load"]
# The parameters a live call's next webhook carries, by the verb its last answer ended in.
NEXT = {
    "Gather": {"Digits": "9"},  # no match: the menu again, a step like any other
    "Dial": {"DialCallStatus": "completed", "DialCallDuration": "5"},
    "Record": {"RecordingUrl": "https://api.twilio.com/r/RE1", "RecordingDuration": "3"},
    "Enqueue": {"QueueResult": "hangup", "QueueTime": "5"},
    # support_line's assistant: the caller hung up during the agent session.
    "Connect": {"SessionId": "VX" + "0" * 32, "SessionStatus": "completed", "SessionDuration": "5"},
}


@contextmanager
def serving(db: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "TWILIO_AUTH_TOKEN": TOKEN, "IVRKIT_DATABASE_URL": f"sqlite:///{db}"}
    process = subprocess.Popen(
        [*SERVE, "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: healthy(port), f"ivrkit serve on port {port} did not start")
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=20)


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(condition: object, failure: str, limit: float = 60) -> None:
    """Poll a condition (a start-up, rows appearing): a guard against hanging, not a timing
    under test."""
    deadline = time.monotonic() + limit
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, failure
        time.sleep(0.05)


def stored_calls(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM ivrkit_calls").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


def test_every_stored_call_continues_after_a_kill_9_under_load(tmp_path):
    db = tmp_path / "calls.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(db, port) as server:
        load = subprocess.Popen(
            [
                *LOAD,
                f"{base}/voice/support_line",
                "--calls",
                "5000",
                "--concurrency",
                "16",
                "--auth-token",
                TOKEN,
                "--seed",
                "7",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: stored_calls(db) >= 24, "the load stored no calls")
            os.kill(server.pid, signal.SIGKILL)  # mid-load: webhooks in flight are cut off
            server.wait(timeout=20)
        finally:
            load.kill()
            load.wait(timeout=20)

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        live = conn.execute(
            "SELECT call_sid, step, last_twiml FROM ivrkit_calls WHERE ended_at IS NULL"
        ).fetchall()
    assert live, "no call was in progress when the server was killed"

    port = free_port()
    continued = 0
    with serving(db, port):
        for sid, _, last_twiml in live:
            verb = next(
                (
                    e
                    for e in ET.fromstring(last_twiml).iter()
                    if e.tag in NEXT and "action" in e.attrib
                ),
                None,
            )
            if verb is None:
                continue  # its last answer ended the call (the status callback never came)
            action = urlsplit(verb.attrib["action"])
            url = f"http://127.0.0.1:{port}{action.path}?{action.query}"
            params = {
                "CallSid": sid,
                "AccountSid": "AC" + "0" * 32,
                "From": "+15005550006",
                "To": "+15005550001",
                "CallStatus": "in-progress",
                **NEXT[verb.tag],
            }
            answer = httpx.post(url, data=params, headers=signed_headers(url, params))
            assert answer.status_code == 200, answer.text
            said = [e.text for e in ET.fromstring(answer.text).iter("Say")]
            assert said != [SupportLine.apology], (sid, last_twiml, answer.text)
            continued += 1
    assert continued > 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        kinds = dict(
            conn.execute(
                "SELECT e.call_sid, e.kind FROM ivrkit_events e WHERE e.id IN "
                "(SELECT max(id) FROM ivrkit_events GROUP BY call_sid)"
            ).fetchall()
        )
        steps = dict(conn.execute("SELECT call_sid, step FROM ivrkit_calls").fetchall())
    for sid, step, last_twiml in live:
        if any(e.tag in NEXT and "action" in e.attrib for e in ET.fromstring(last_twiml).iter()):
            assert (kinds[sid], steps[sid]) == ("action", step + 1), sid
