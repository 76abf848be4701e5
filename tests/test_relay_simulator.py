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
    assert json.loads(end["handoff"]) == {"handoff": "billing", "account": "ivrkit:kept"}
    said = [e.get("text") for e in events if e["type"] == "say"]
    assert "Billing. To hear your balance press 1. For an operator press 0." in said
    assert "The balance of the account ending in 6, 3 is 42 dollars." in said


async def test_phone_fixture_in_process_menu_agent_billing(phone, tmp_path):
    """The simulator's phone fixture against ivrkit's app in-process (ASGI WebSocket)."""
    from flows.support_line import SupportLine
    from ivrkit import Settings, create_app
    from simulator.relay import RelayOptions
    from tests.conftest import OPEN_HOURS

    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", auth_token=TOKEN)
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    phone.relay = RelayOptions(agent_silence=5.0, settle=0.05)
    async with app.router.lifespan_context(app):
        live = await phone.call("/voice/support_line", app=app, auth_token=TOKEN).start()
        assert live.waiting_for == "gather"
        reply = await live.speak("I have a question about my bill")
        assert reply.splitlines() == [
            "Sure.",
            "I can help with your bill.",
            "What is your eight digit account number?",
        ]
        assert live.waiting_for == "agent"
        back = await live.speak("four oh seven one eight two six three")
        assert back.splitlines() == [
            "Billing. To hear your balance press 1. For an operator press 0."
        ]
        assert live.waiting_for == "gather"
        await live.press("1")
        live.assert_heard("The balance of the account ending in 6, 3 is 42 dollars.")
        await live.hangup()
        assert live.ended
        assert app.ivr.relay.active == 0
        assert not app.ivr.relay.tasks
