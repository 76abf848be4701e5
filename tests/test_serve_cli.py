"""`ivrkit serve` for real: a uvicorn subprocess answering signed webhooks over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.driver import TOKEN, signed_headers

ROOT = Path(__file__).resolve().parent.parent
IVRKIT = [sys.executable, "-m", "ivrkit.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])



def start_serve(args: list[str], env: dict[str, str], port: int) -> tuple[Any, str]:
    """`ivrkit serve ARGS` in a process of its own, once its /healthz answers: (process, base
    URL). A server that does not come up within 20 s fails the test with its output."""
    process = subprocess.Popen(
        [*IVRKIT, "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"server did not start: {process.communicate()[0]}")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    process, base = start_serve(["flows/support_line.py", "--port", str(port)], env, port)
    yield base, process
    process.terminate()
    process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def test_serve_answers_signed_webhook_over_http(server):
    base, process = server
    url = f"{base}/voice/support_line"
    params = {
        "CallSid": "CA" + "b" * 32,
        "From": "+14155550100",
        "To": "+15005550006",
        "CallStatus": "ringing",
        "AccountSid": "AC" + "0" * 32,
    }
    response = httpx.post(url, data=params, headers=signed_headers(url, params))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    gather = ET.fromstring(response.text).find("Gather")
    assert gather.attrib["action"].startswith(f"{base}/voice/support_line/action?state=main_menu")
    assert httpx.post(url, data=params).status_code == 403
    health = httpx.get(f"{base}/healthz").json()
    assert health == {"status": "ok", "database": "ok", "flows": ["support_line"]}
    process.terminate()
    output = process.communicate(timeout=10)[0]
    assert "/voice/support_line" in output  # the webhook URL to paste into the console
    assert TOKEN not in output
    assert "+14155550100" not in output  # only masked numbers reach the log
    assert "+1415*****00" in output
    assert "transitions.core" not in output  # no per-transition chatter from the engine


def run_ivrkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*IVRKIT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def test_serve_refuses_without_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TWILIO_AUTH_TOKEN"}
    done = run_ivrkit("serve", "flows/support_line.py", env=env)
    assert done.returncode == 2
    assert "TWILIO_AUTH_TOKEN is not set" in done.stderr
    assert "--insecure-dev" in done.stderr


def test_serve_refuses_broken_flow(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text(
        "from ivrkit import Flow, Menu, Retries, Hangup\n"
        "class Broken(Flow):\n"
        "    menu = Menu('Press 1.', choices={'1': 'goodbye'}, retries=Retries(give_up='bye'))\n"
        "    bye = Hangup()\n"
    )
    done = run_ivrkit("serve", str(broken), "--insecure-dev")
    assert done.returncode == 2
    assert "broken.py:3: IVR001 error: Broken.menu" in done.stderr
    assert 'unknown state "goodbye"' in done.stderr


def test_sqlite_refuses_several_workers():
    env = {**os.environ, "TWILIO_AUTH_TOKEN": TOKEN}
    done = run_ivrkit("serve", "flows/support_line.py", "--workers", "2", env=env)
    assert done.returncode == 2
    assert "PostgreSQL" in done.stderr


def test_a_second_server_on_the_same_sqlite_file_is_refused(server, tmp_path):
    """The first server's memory of live calls would go stale under a second writer."""
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
    }
    done = run_ivrkit("serve", "flows/support_line.py", "--port", str(free_port()), env=env)
    assert done.returncode == 2
    assert "serve.db is already served by another ivrkit process" in done.stderr
    assert "Traceback" not in done.stderr
    base, _ = server
    assert httpx.get(f"{base}/healthz").status_code == 200  # the first one is unharmed
