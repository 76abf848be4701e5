"""Drive wrk over the request lines of a CallPlan, and read back what it sent.

wrk calls the script's ``request()`` once on thread 0 before the run, to check that it
returns one well-formed request, and never sends that request. A script that hands out
request lines in order would lose the first webhook of thread 0's first call in every run
(and that call's later webhooks would get the apology: status 200, invisible to wrk). So
each thread's first ``request()`` returns a harmless ``GET /healthz`` that belongs to no
call, whether it ends up discarded (thread 0) or sent; call webhooks start from the
second. A thread that runs out of lines sends more of the same and says so: the run is
then invalid (raise ``--calls``). ``done()`` prints how many lines each thread handed
out, so the caller knows exactly which webhooks of which calls were sent.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

THREADS = 2

LUA = r"""
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  lines = {}
  for line in io.lines(args[1] .. "." .. id) do
    lines[#lines + 1] = line
  end
  sent = 0    -- call webhooks handed out, in file order
  spare = 0   -- harmless requests: the first one of each thread, then any past the end
end

local harmless = nil

function request()
  if spare == 0 or sent >= #lines then
    spare = spare + 1
    harmless = harmless or wrk.format("GET", "/healthz")
    return harmless
  end
  sent = sent + 1
  local path, body, signature = lines[sent]:match("^([^\t]+)\t([^\t]*)\t([^\t]+)$")
  return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded",
                                   ["X-Twilio-Signature"] = signature}, body)
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    io.write(string.format("ivrkit-bench thread %d sent %d spare %d\n",
                           thread:get("id"), thread:get("sent"), thread:get("spare")))
  end
end
"""


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50: float  # ms
    p99: float  # ms
    requests: int
    non_2xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout
    sent: list[int]  # call webhooks handed out per thread
    spare: list[int]  # harmless requests per thread (1 each unless a thread ran out)

    @property
    def ran_out(self) -> bool:
        return any(count > 1 for count in self.spare)

    @property
    def lost_by_transport(self) -> int:
        """Requests wrk may have written without reading the answer (or never written)."""
        return sum(self.socket_errors[kind] for kind in ("connect", "read", "write"))


def write_script(directory: Path) -> Path:
    script = directory / "calls.lua"
    script.write_text(LUA)
    return script


def run_wrk(port: int, stem: Path, script: Path, duration: int, connections: int) -> WrkResult:
    """wrk with the calls in ``<stem>.<thread>`` files for ``duration`` seconds."""
    command = [
        "wrk",
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
        "--",
        str(stem),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or "ivrkit-bench thread" not in done.stdout:
        raise SystemExit(f"wrk failed ({' '.join(command)}):\n{done.stdout}{done.stderr}")
    return parse_output(done.stdout)


def parse_output(out: str) -> WrkResult:
    def number(pattern: str) -> str:
        found = re.search(pattern, out)
        if found is None:
            raise SystemExit(f"wrk's output has no {pattern!r}:\n{out}")
        return found.group(1)

    def percentile(label: str) -> float:
        found = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out)
        if found is None:
            raise SystemExit(f"wrk's output has no {label}% latency:\n{out}")
        value, unit = float(found.group(1)), found.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors = dict(zip(errors, map(int, socket.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    threads = sorted(
        (int(i), int(sent), int(spare))
        for i, sent, spare in re.findall(r"ivrkit-bench thread (\d+) sent (\d+) spare (\d+)", out)
    )
    return WrkResult(
        rps=float(number(r"Requests/sec:\s+([\d.]+)")),
        p50=percentile("50"),
        p99=percentile("99"),
        requests=int(number(r"(\d+) requests in ")),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=errors,
        sent=[sent for _, sent, _ in threads],
        spare=[spare for _, _, spare in threads],
    )
