"""Done means: `ivrkit-sim call .../voice/support_line --speak ...` walks menu -> agent ->
hand-off -> billing menu, against `ivrkit serve` (real uvicorn in its own process)."""

from __future__ import annotations

import io
import json

from simulator.cli import main
from tests.driver import TOKEN
from tests.test_serve_cli import server  # noqa: F401 (fixture)


def test_sim_walks_menu_agent_handoff_billing_menu(server):  # noqa: F811
    base, _ = server
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "call", f"{base}/voice/support_line",
            "--speak", "I have a question about my bill",
            "--speak", "4 0 7 1 8 2 6 3",
            "--press", "1",
            "--json", "--auth-token", TOKEN,
        ],
        out=out,
        err=err,
    )  # fmt: skip
    assert code == 0, out.getvalue() + err.getvalue()
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    agent = [e["text"] for e in events if e["type"] == "agent"]
    assert agent == [
        "Sure.",
        "I can help with your bill.",
        "What is your eight digit account number?",
    ]
    (end,) = [e for e in events if e["type"] == "relay-end"]
    assert end["status"] == "ended"
    assert json.loads(end["handoff"]) == {"handoff": "billing", "account": "40718263"}
    said = [e.get("text") for e in events if e["type"] == "say"]
    assert "Billing. To hear your balance press 1. For an operator press 0." in said
    assert "The balance of the account ending in 6, 3 is 42 dollars." in said
