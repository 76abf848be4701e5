"""`ivrkit call` for real: a uvicorn `ivrkit serve` on an SQLite file, the simulated Calls API
over HTTP (`twilio_api_server`), and the command in a process of its own."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from simulator.callees import Callee, CalleeModel
from simulator.caller import Press
from simulator.pytest_plugin import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN
from tests.test_serve_cli import IVRKIT, ROOT, free_port, start_serve

PATIENT = "+14155550142"
CLINIC = "+14155550100"


@pytest.fixture
def reminder_server(tmp_path, twilio_api_server):
    """`ivrkit serve flows/appointment_reminder.py` whose own twilio client (AsyncAmd moves)
    talks to the simulated API; gives (base URL, environment for `ivrkit call`)."""
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": TEST_AUTH_TOKEN,
        "IVRKIT_TWILIO_API_URL": twilio_api_server.url,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'reminders.db'}",
        "IVRKIT_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    process, base = start_serve(["flows/appointment_reminder.py", "--port", str(port)], env, port)
    yield base, env
    process.terminate()
    output = process.communicate(timeout=10)[0]
    assert "Traceback" not in output, output


def ivrkit_call(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IVRKIT, "call", "flows/appointment_reminder.py", "--from", CLINIC, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_ivrkit_call_places_a_call_a_person_confirms(reminder_server, twilio_api_server):
    _, env = reminder_server
    twilio_api_server.api.callees = CalleeModel(
        numbers={PATIENT: Callee(steps=(Press("1"),), ring_seconds=1)}
    )
    done = ivrkit_call(
        env, "--to", PATIENT, "--data", "appointment=your check-up on Monday", "--wait"
    )
    assert done.returncode == 0, done.stderr
    sid, outcome = done.stdout.strip().splitlines()
    assert sid.startswith("CA")
    result = json.loads(outcome)
    assert result["status"] == "completed"
    assert result["answered_by"] == "human"
    assert result["state"] == "confirmed>next"
    assert result["data"]["appointment"] == "your check-up on Monday"
    heard = [e.text for e in twilio_api_server.api.calls[sid].events if e.type == "say"]
    assert heard[0] == "Hello, this is Acme Dental reminding you of your check-up on Monday."
    assert TEST_AUTH_TOKEN not in done.stderr + done.stdout


def test_ivrkit_call_async_amd_moves_a_machine_through_the_servers_client(
    reminder_server, twilio_api_server
):
    _, env = reminder_server
    twilio_api_server.api.callees = CalleeModel(
        numbers={PATIENT: Callee(who="machine", ring_seconds=1)}
    )
    done = ivrkit_call(
        env, "--to", PATIENT, "--data", "appointment=Monday", "--async-amd", "--wait"
    )
    assert done.returncode == 0, done.stderr
    sid, outcome = done.stdout.strip().splitlines()
    result = json.loads(outcome)
    assert (result["answered_by"], result["state"]) == ("machine_end_beep", "leave_message>hangup")
    heard = [e.text for e in twilio_api_server.api.calls[sid].events if e.type == "say"]
    assert heard[-1].startswith("Hello, this is Acme Dental reminding you of Monday. To confirm")


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--to", "12"], 1, "ivrkit call: cannot call **: not a valid phone number"),
        (["--to", PATIENT, "--data", "oops"], 2, "ivrkit call: --data 'oops': expected KEY=VALUE"),
    ],
)
def test_ivrkit_call_failures_are_one_line(reminder_server, args, status, message):
    _, env = reminder_server
    done = ivrkit_call(env, *args)
    assert done.returncode == status
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr


def test_ivrkit_call_wrong_token_says_which_settings_and_never_the_token(reminder_server):
    _, env = reminder_server
    done = ivrkit_call({**env, "TWILIO_AUTH_TOKEN": "wrong-token-xyz"}, "--to", PATIENT)
    assert done.returncode == 1
    assert "Twilio refused the credentials" in done.stderr
    assert "wrong-token-xyz" not in done.stderr
    assert "Traceback" not in done.stderr


def test_ivrkit_call_without_credentials_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env["IVRKIT_PUBLIC_URL"] = "https://ivr.example.com"
    env["IVRKIT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    done = ivrkit_call(env, "--to", PATIENT)
    assert done.returncode == 2
    assert done.stderr.startswith("ivrkit call: TWILIO_ACCOUNT_SID is not set")
