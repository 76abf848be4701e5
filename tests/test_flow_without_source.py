"""A flow defined where Python has no source file (``python -c``, a REPL, ``exec``) still loads."""

from __future__ import annotations

import subprocess
import sys

FLOW = """
from ivrkit import Flow, Hangup, Say

class Hello(Flow):
    hello = Say("Hello.", then=Hangup())

print(Hello.name, Hello.__ivrkit_source__)
"""


def test_a_flow_typed_at_the_command_line_loads() -> None:
    done = subprocess.run(
        [sys.executable, "-c", FLOW], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello ('<unknown>', 0)"
