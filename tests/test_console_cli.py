"""`ivrkit console` and the console of `ivrkit serve --insecure-dev` (what `make run` starts)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import time

import httpx
import pytest

from ivrkit.cli import main
from ivrkit.console import verify_password
from tests.test_console import console, csrf_of, sign_in  # noqa: F401 (fixture)
from tests.test_serve_cli import IVRKIT, ROOT, free_port


def test_console_command_refuses_to_run_without_a_sign_in(monkeypatch, capsys):
    monkeypatch.delenv("IVRKIT_CONSOLE_TOKEN", raising=False)
    monkeypatch.delenv("IVRKIT_CONSOLE_PASSWORD_HASH", raising=False)
    assert main(["console", "flows/support_line.py"]) == 2
    assert "IVRKIT_CONSOLE_TOKEN" in capsys.readouterr().err


def test_console_command_hashes_a_password_from_a_pipe(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a long passphrase\n"))
    assert main(["console", "--hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    assert encoded.startswith("scrypt$")
    assert verify_password("a long passphrase", encoded)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "--hash-password"]) == 2


def test_make_run_serves_the_open_console_with_a_working_dialpad(tmp_path):
    """`make run` is `ivrkit serve flows/support_line.py --insecure-dev`: no token, so the
    console is open, and its dialpad's unsigned calls are accepted like the simulator's."""
    port = free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("TWILIO_AUTH_TOKEN", "IVRKIT_CONSOLE_TOKEN")}
    env["IVRKIT_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'run.db'}"
    process = subprocess.Popen(
        [*IVRKIT, "serve", "flows/support_line.py", "--insecure-dev", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("server did not start")
        with httpx.Client(base_url=base, timeout=20) as client:
            page = client.get("/console/")
            assert page.status_code == 200
            assert 'href="/console/flows/support_line?days=7"' in page.text
            headers = {"x-csrf-token": csrf_of(client.get("/console/dialpad").text)}
            view = client.post("/console/dialpad/calls", json={"flow": "support_line"},
                               headers=headers).json()
            assert view["question"]["kind"] == "gather"
            view = client.post(f"/console/dialpad/calls/{view['call_sid']}",
                               json={"action": "press", "digits": "3"}, headers=headers).json()
            assert view["question"]["kind"] == "record"
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert re.search(rf"web console: http://127\.0\.0\.1:{port}/console/", output), output
    assert "Traceback" not in output


async def test_dialpad_signs_for_the_public_url(console):  # noqa: F811
    async with console(public_url="https://ivr.example.com") as (app, plain):
        # the cookie is Secure now: the browser talks https to the public URL
        secure = httpx.AsyncClient(transport=plain._transport, base_url="https://ivr.example.com")
        async with secure as client:
            assert (await sign_in(client)).status_code == 303
            page = await client.get("/console/dialpad")
            headers = {"x-csrf-token": csrf_of(page.text)}
            view = (await client.post("/console/dialpad/calls", json={"flow": "support_line"},
                                      headers=headers)).json()
            assert view["question"]["kind"] == "gather"  # the app accepted the signature
            events = await app.ivr.store.call_events(view["call_sid"])
            assert [e.kind for e in events] == ["start"]
