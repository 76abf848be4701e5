"""`ivrkit serve` for real: worker processes keep the log format (defect 11), and an
oversize request head is refused while the server keeps answering (defect 9)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import PG_ENV
from tests.driver import TOKEN, signed_headers
from tests.test_serve_cli import IVRKIT, ROOT, free_port, server  # noqa: F401 (fixture)

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) \[(?P<pid>\d+)\] "
    r"(?P<logger>[\w.]+): (?P<message>.*)$"
)


class Output:
    """A subprocess's output, collected line by line while it runs."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, found, seconds: float = 60) -> bool:
        """Wait (bounded, not measured) until ``found(lines)`` holds."""
        with self.changed:
            return self.changed.wait_for(lambda: found(self.lines), timeout=seconds)


def ready_pids(lines: list[str]) -> set[str]:
    return {
        m["pid"]
        for m in map(LINE.match, lines)
        if m and m["logger"] == "ivrkit.app" and m["message"].startswith("ready:")
    }


def test_two_workers_log_like_one_process():
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"PostgreSQL run skipped: set {PG_ENV} (SQLite serves one process)")
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_DATABASE_URL": url,
        "IVRKIT_LOG_LEVEL": "info",
    }
    process = subprocess.Popen(
        [*IVRKIT, "serve", "flows/support_line.py", "--port", str(port), "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = Output(process)
    try:
        assert output.wait_for(lambda lines: len(ready_pids(lines)) >= 2), output.lines
        base = f"http://127.0.0.1:{port}"
        sids = []
        for n in range(6):
            sid = f"CA{time.time_ns():024x}{n:08x}"
            sids.append(sid)
            params = {"CallSid": sid, "From": "+14155550100", "To": "+15005550006"}
            hook = f"{base}/voice/support_line"
            # A new connection each: the two workers share the listening socket.
            answer = httpx.post(hook, data=params, headers=signed_headers(hook, params))
            assert answer.status_code == 200
        assert httpx.post(f"{base}/voice/support_line", data=params).status_code == 403
        assert output.wait_for(
            lambda lines: (
                all(any(sid in line for line in lines) for sid in sids)
                and any("refused POST" in line for line in lines)
            )
        ), output.lines
    finally:
        process.terminate()
        process.wait(timeout=20)
        output.thread.join(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
    parsed = [m for m in map(LINE.match, output.lines) if m]
    # Two (or more: uvicorn replaces a worker that starts too slowly on a busy machine).
    assert len(ready_pids(output.lines)) >= 2
    for sid in sids:
        (started,) = [m for m in parsed if sid in m["message"]]
        assert (started["level"], started["logger"]) == ("INFO", "ivrkit.app")
        assert started["pid"] in ready_pids(output.lines)
    (refused,) = [m for m in parsed if "refused POST" in m["message"]]
    assert (refused["level"], refused["logger"]) == ("WARNING", "ivrkit.app")
    # Every log line has the one format (uvicorn's own lines too); only the banner
    # ``ivrkit serve`` prints before uvicorn starts is not a log line.
    logged = [line for line in output.lines if not line.startswith(("ivrkit: ", " "))]
    assert len(logged) > len(sids)
    assert [line for line in logged if not LINE.match(line)] == []


def send_head(port: int, header_bytes: int) -> bytes:
    """Send a request whose head carries one header of ``header_bytes``; the answer."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: "
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if header_bytes < 60_000:  # all at once: the server reads the whole head in one go
            sock.sendall(head + b"a" * header_bytes + b"\r\n\r\n")
        else:
            sock.sendall(head)
            chunk = b"a" * 65536
            sent = 0
            try:
                while sent < header_bytes:
                    sock.sendall(chunk[: header_bytes - sent])
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the head ended: the answer is waiting
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
                if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 431"):
                    break
                if b'"status"' in answer:
                    break
        except ConnectionResetError:
            pass
        return answer


def test_oversize_request_head_is_refused_and_the_server_keeps_answering(server):  # noqa: F811
    base, process = server
    port = int(base.rsplit(":", 1)[1])
    refused = send_head(port, 20 * 1024 * 1024)
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]
    assert b"over the 16,384 byte limit" in refused
    in_one_read = send_head(port, 20 * 1024)  # a whole head a little over, sent at once
    assert in_one_read.startswith(b"HTTP/1.1 431"), in_one_read[:200]
    fits = send_head(port, 8 * 1024)
    assert fits.startswith(b"HTTP/1.1 200"), fits[:200]
    assert httpx.get(f"{base}/healthz").status_code == 200
    process.terminate()
    output = process.communicate(timeout=10)[0]
    assert output.count("request headers too large") == 1  # later ones are counted
