"""A call in progress survives a redeploy that changes its flow, or fails over cleanly."""

from __future__ import annotations

import asyncio

from ivrkit import Call, Flow, Hangup, Menu, Retries, Say, decision
from tests.conftest import phone


def version_one() -> type[Flow]:
    class Line(Flow):
        name = "line"
        menu = Menu(
            "Press 1 for billing.", choices={"1": "billing"}, retries=Retries(give_up="bye")
        )
        billing = Menu(
            "Billing. Press 1 to pay.", choices={"1": "bye"}, retries=Retries(give_up="bye")
        )
        bye = Hangup("Goodbye.")

    return Line


def version_two(*, migrate: bool) -> type[Flow]:
    class Line(Flow):
        name = "line"
        fallback_number = "+15005550199"
        migrations = {"billing": "accounts"} if migrate else {}
        menu = Menu(
            "Press 1 for accounts.", choices={"1": "accounts"}, retries=Retries(give_up="bye")
        )
        accounts = Menu(
            "Accounts. Press 1 to pay.", choices={"1": "paid"}, retries=Retries(give_up="bye")
        )
        paid = Say("Payment taken.", then="bye")
        bye = Hangup("Goodbye.")

    return Line


async def start_in_billing(serve) -> tuple[str, object]:
    async with serve([version_one()]) as (_, client):
        call = phone(client, "line")
        await call.start()
        await call.press("1")
        return call.sid, call.last


async def test_removed_state_migrates_to_its_declared_successor(serve):
    sid, last = await start_in_billing(serve)
    new = version_two(migrate=True)
    assert new.version() != version_one().version()
    async with serve([new], fresh=False) as (app, client):
        call = phone(client, "line", sid=sid)
        call.last = last
        call.history.append(last)
        answer = await call.press("1")
        assert answer.said() == ["Payment taken.", "Goodbye."]
        record = await app.state.ivr.store.load(sid)
        assert record.flow_version == new.version()


async def test_removed_state_without_migration_gets_the_fallback(serve):
    sid, last = await start_in_billing(serve)
    async with serve([version_two(migrate=False)], fresh=False) as (_, client):
        call = phone(client, "line", sid=sid)
        call.last = last
        call.history.append(last)
        answer = await call.press("1")
        assert answer.status == 200
        assert answer.find("Dial").text == "+15005550199"


class AsyncRouting(Flow):
    """A decision that awaits I/O (here a sleep standing in for a CRM look-up)."""

    welcome = Say("Hello.", then="route")
    vip = Hangup("Welcome back, valued customer.")
    standard = Hangup("Thanks for calling.")

    @decision("route")
    async def route(self, call: Call) -> str:
        await asyncio.sleep(0)
        call.data["looked_up"] = call.from_number[-4:]
        return "vip" if call.from_number.endswith("0100") else "standard"


async def test_async_decision_sees_the_caller_and_writes_call_data(serve):
    async with serve([AsyncRouting]) as (app, client):
        vip = phone(client, "async_routing", from_number="+14155550100")
        assert (await vip.start()).said() == ["Hello.", "Welcome back, valued customer."]
        other = phone(client, "async_routing", from_number="+14155550199")
        assert (await other.start()).said() == ["Hello.", "Thanks for calling."]
        assert (await app.state.ivr.store.load(vip.sid)).data == {"looked_up": "0100"}
