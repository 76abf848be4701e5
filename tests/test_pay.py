"""The Pay state: definition-time checks, its TwiML, what an action keeps, the status route."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from flows.pay_bill import PayBill
from ivrkit import Flow, FlowDefinitionError, Hangup, Pay, PayPrompt, Say
from ivrkit.graph import build_graph
from ivrkit.masking import mask_card_number, mask_params
from ivrkit.prompts import flow_rows
from tests.conftest import phone
from tests.driver import BASE

GOLDEN_PAY_BILL = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    "<Say>Welcome to Acme bill payment. Your balance is 42 dollars and 50 cents. "
    "Press star at any time to cancel.</Say>"
    '<Pay action="http://testserver/voice/pay_bill/action?state=payment&amp;step=1" '
    'chargeAmount="42.50" currency="usd" description="Acme bill" input="dtmf" '
    'maxAttempts="2" paymentMethod="credit-card" postalCode="true" securityCode="true" '
    'statusCallback="http://testserver/voice/pay_bill/pay-status?state=payment&amp;step=1" '
    'timeout="5" validCardTypes="visa mastercard amex">'
    '<Prompt for="payment-card-number"><Say>Please enter your card number.</Say></Prompt>'
    '<Prompt attempt="2" errorType="invalid-card-number" for="payment-card-number">'
    "<Say>That card number is not valid. Please enter it again.</Say></Prompt>"
    '<Prompt attempt="2" errorType="invalid-card-type" for="payment-card-number">'
    "<Say>We accept Visa, Mastercard and American Express. Please enter another card.</Say>"
    "</Prompt>"
    '<Prompt for="expiration-date"><Say>Enter the expiry date: two digits for the month, '
    "then two for the year.</Say></Prompt>"
    '<Prompt for="security-code"><Say>Enter the security code on the back of the card.</Say>'
    "</Prompt>"
    '<Prompt cardType="amex" for="security-code"><Say>Enter the four digit code on the front '
    "of the card.</Say></Prompt>"
    '<Prompt for="postal-code"><Say>Enter your billing zip code.</Say></Prompt>'
    '<Prompt for="payment-processing"><Say>Please wait while we process your payment.</Say>'
    "</Prompt></Pay></Response>"
)


async def test_pay_renders_exact_twiml(serve):
    async with serve([PayBill]) as (_, client):
        answer = await phone(client, "pay_bill").start()
        assert answer.content_type.startswith("text/xml")
        assert answer.body == GOLDEN_PAY_BILL


def success_fields(**extra: str) -> dict[str, str]:
    fields = {
        "Result": "success",
        "PaymentMethod": "credit-card",
        "PaymentCardNumber": "xxxx-xxxx-xxxx-1111",
        "PaymentCardType": "visa",
        "ExpirationDate": "0931",
        "SecurityCode": "xxx",
        "PaymentCardPostalCode": "60614",
        "PaymentConfirmationCode": "ch_1234567890",
    }
    fields.update(extra)
    return fields


async def test_action_keeps_only_what_a_flow_may_keep(serve):
    async with serve([PayBill]) as (app, client):
        call = phone(client, "pay_bill")
        await call.start()
        # A connector that sends the whole number (it should not): only the last four stay.
        answer = await call.post(
            call._action("Pay"), **success_fields(PaymentCardNumber="4111 1111 1111 1111")
        )
        assert answer.said()[0] == (
            "Thank you, your payment is complete. Your confirmation code ends in 5, 6, 7, 8, 9, 0."
        )
        record = await app.state.ivr.store.load(call.sid)
        assert record.data == {
            "payment": {
                "result": "success",
                "confirmation_code": "ch_1234567890",
                "card_type": "visa",
                "masked_number": "xxxx xxxx xxxx 1111",
            }
        }
        events = await app.state.ivr.store.call_events(call.sid)
        logged = events[-1].params
        assert logged["PaymentCardNumber"] == "xxxx xxxx xxxx 1111"
        assert logged["ExpirationDate"] == logged["PaymentCardPostalCode"] == "****"
        assert "4111 1111" not in str([e.params for e in events])


async def test_tokenize_keeps_the_token(serve):
    class SaveCard(Flow):
        save = Pay(token_type="reusable", on={"success": "done", "*": "done"})
        done = Hangup("Goodbye.")

    async with serve([SaveCard]) as (app, client):
        call = phone(client, "save_card")
        start = await call.start()
        verb = start.find("Pay")
        assert "chargeAmount" not in verb.attrib
        assert verb.attrib["tokenType"] == "reusable"
        await call.post(
            call._action("Pay"),
            Result="success",
            PaymentToken="tok_abcdef123456",
            PaymentCardType="amex",
            PaymentCardNumber="xxxx-xxxxxx-x0005",
        )
        record = await app.state.ivr.store.load(call.sid)
        assert record.data["payment"] == {
            "result": "success",
            "token": "tok_abcdef123456",
            "card_type": "amex",
            "masked_number": "xxxx-xxxxxx-x0005",
        }
        events = await app.state.ivr.store.call_events(call.sid)
        assert events[-1].params["PaymentToken"] == "****3456"


async def test_computed_amount_and_a_wrong_one_gets_the_apology(serve, caplog):
    class Computed(Flow):
        pay = Pay(
            charge_amount=lambda call: call.data.get("due", "-1"),
            on={"success": "done", "*": "done"},
        )
        done = Hangup()

    async with serve([Computed]) as (_, client):
        answer = await phone(client, "computed").start()
        assert answer.status == 200
        assert answer.verbs == ["Say", "Hangup"]  # the apology: -1 is no charge
        assert "charge_amount: -1 is out of range" in caplog.text


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"Result": "paid"}, "Result 'paid' is not one of <Pay>'s"),
        ({"Result": "success", "PaymentCardType": "Visa<x>"}, "PaymentCardType"),
        (
            {"Result": "success", "PaymentCardNumber": "4111-1111-1111-111A"},
            "PaymentCardNumber holds what no masked number does",
        ),
    ],
)
async def test_malformed_action_fields_are_refused_with_one_line(serve, caplog, fields, reason):
    async with serve([PayBill]) as (app, client):
        call = phone(client, "pay_bill")
        action = (await call.start()).find("Pay").attrib["action"]
        caplog.clear()
        answer = await call.post(action, **fields)
        assert answer.status == 400
        assert reason in answer.body
        lines = [r for r in caplog.records if r.name == "ivrkit.app"]
        assert len(lines) == 1
        assert lines[0].exc_info is None
        assert "1111-1111" not in caplog.text
        record = await app.state.ivr.store.load(call.sid)
        assert record.state == "payment"
        assert record.data == {}
        without = await call.post(action)  # no Result at all: not Twilio's <Pay>
        assert without.status == 400
        assert "without Result" in without.body
        # The call goes on: the next (good) webhook is answered.
        good = await call.post(action, **success_fields())
        assert good.status == 200


async def test_pay_status_route_checks_and_records(serve):
    async with serve([PayBill]) as (app, client):
        call = phone(client, "pay_bill")
        start = await call.start()
        url = start.find("Pay").attrib["statusCallback"]
        fields = {
            "For": "expiration-date",
            "Attempt": "1",
            "ExpirationDate": "0931",
            "PaymentCardNumber": "xxxx-xxxx-xxxx-1111",
            "ErrorType": "invalid-date",
        }
        assert (await call.post(url, **fields)).status == 204
        unsigned = await client.post(url, data=call.params(**fields))
        assert unsigned.status_code == 403
        assert (await call.post(url, **{**fields, "For": "pin"})).status == 400
        assert (await call.post(url, **{**fields, "Attempt": "one"})).status == 400
        assert (await call.post(url, Attempt="1")).status == 400  # no For
        not_pay = url.replace("state=payment", "state=welcome")
        refused = await call.post(not_pay, **fields)
        assert refused.status == 400
        assert "not a Pay state" in refused.body
        events = await app.state.ivr.store.call_events(call.sid)
        recorded = [e for e in events if e.kind == "pay-status"]
        assert len(recorded) == 1
        assert recorded[0].params["ExpirationDate"] == "****"
        assert recorded[0].params["ErrorType"] == "invalid-date"
        record = await app.state.ivr.store.load(call.sid)
        assert record.state == "payment"  # progress never moves the call
        assert record.data == {}


def test_masking_keeps_the_last_four_and_hides_the_rest():
    assert mask_card_number("xxxx-xxxxxx-x4001") == "xxxx-xxxxxx-x4001"
    assert mask_card_number("4111111111111111") == "xxxxxxxxxxxx1111"
    assert mask_card_number("") == ""
    masked = mask_params({"ExpirationDate": "", "SecurityCode": "123", "From": "+14155550100"})
    assert masked == {"ExpirationDate": "", "SecurityCode": "****", "From": "+1415*****00"}


# -- definition time --------------------------------------------------------------------------


def definition_error(body: dict[str, object]) -> FlowDefinitionError:
    with pytest.raises(FlowDefinitionError) as caught:
        type("Broken", (Flow,), body)
    return caught.value


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_attempts": 5}, "max_attempts: 5 is out of range"),
        ({"charge_amount": 12.5}, "floats round: give cents as text"),
        ({"charge_amount": "0"}, "charge_amount: 0 is out of range"),
        ({"charge_amount": "1.005"}, "more than two decimals"),
        ({"charge_amount": "10", "token_type": "reusable"}, "a token type is for saving a card"),
        ({"card_types": ["visa", "bitcoin"]}, 'card_types: "bitcoin" is a str'),
        ({"card_types": []}, "card_types: none given"),
        ({"currency": "dollars"}, 'currency: "dollars" is a str'),
        ({"postal_code": 94105}, "postal_code: 94105 is an int"),
        ({"language": "en-XX"}, 'expected one of "en-AU"'),
        ({"prompts": [PayPrompt("card-number", "Enter it.")]}, 'prompts[0].step: "card-number"'),
        ({"prompts": [PayPrompt("security-code", "x", attempt=[11])]}, "prompts[0].attempt"),
        ({"prompts": [PayPrompt("security-code", "x", error_type="late")]}, "error_type"),
        ({"prompts": PayPrompt("security-code", "x")}, "expected a list of PayPrompt"),
        ({"prompts": [PayPrompt("security-code", None)]}, "prompts[0].prompt: None"),
        ({"prompts": ["Enter it."]}, "prompts[0]: \"Enter it.\" is a str"),
        ({"on": {"success": "done", "declined": "done"}}, 'Pay outcome "declined" is not a Result'),
    ],
)
def test_wrong_arguments_fail_at_definition_naming_the_place(options, message):
    arguments: dict[str, object] = {"on": {"success": "done", "*": "done"}, **options}
    error = definition_error({"pay": Pay(**arguments), "done": Hangup()})  # type: ignore[arg-type]
    text = str(error)
    assert "tests/test_pay.py:" in text
    assert "Broken.pay: " in text
    assert message in text


def test_pay_without_success_or_failures_fails_with_ivr070():
    error = definition_error({"pay": Pay(on={"*": "done"}), "done": Hangup()})
    assert [f.code for f in error.findings if f.severity == "error"] == ["IVR070"]
    assert 'no outcome for "success"' in str(error)
    error = definition_error({"pay": Pay(on={"success": "done"}), "done": Hangup()})
    assert "no outcome for too-many-failed-attempts, caller-interrupted-with-star" in str(error)
    assert 'add on={"*": "<state>"}' in str(error)


def test_unmasked_collect_and_dead_prompts_are_warned():
    from ivrkit import Collect, Retries

    class Warned(Flow):
        account = Collect("Account?", save_as="account", digits=8, then="pay",
                          retries=Retries(give_up="done"))  # fmt: skip
        pay = Pay(
            security_code=False,
            prompts=[
                PayPrompt("security-code", "Enter the code."),
                PayPrompt("payment-card-number", "Again.", attempt=[3]),
            ],
            on={"success": "done", "*": "done"},
        )
        done = Hangup()

    codes = {(f.code, f.state): f.message for f in Warned.findings()}
    assert "events are not masked" in codes["IVR071", "pay"]
    assert '"account"' in codes["IVR071", "pay"]
    messages = [f.message for f in Warned.findings() if f.code == "IVR072"]
    assert any("security_code=False" in m for m in messages)
    assert any("max_attempts is 1" in m for m in messages)

    class Masked(Flow):
        sensitive = ("account",)
        account = Collect("Account?", save_as="account", digits=8, then="pay",
                          retries=Retries(give_up="done"))  # fmt: skip
        pay = Pay(on={"success": "done", "*": "done"})
        done = Hangup()

    assert [f for f in Masked.findings() if f.code.startswith("IVR07")] == []


def test_graph_and_prompts_show_payments():
    graph = build_graph([PayBill])
    labels = {(e.source, e.dest): e.label for e in graph.edges}
    assert labels["payment", "paid"] == "success"
    assert labels["payment", "cancelled"] == "caller-interrupted-with-star"
    assert "payment-connector-error" in labels["payment", "not_paid"]
    assert labels["payment", "payment>hangup"] == "caller-hung-up"
    rows = [(row.kind, row.text) for row in flow_rows(PayBill) if row.state == "payment"]
    assert ("pay payment-card-number", "Please enter your card number.") in rows
    assert (
        "pay payment-card-number attempt=2 error=invalid-card-number",
        "That card number is not valid. Please enter it again.",
    ) in rows
    assert ("pay security-code card=amex",
            "Enter the four digit code on the front of the card.") in rows  # fmt: skip


def test_decimal_amount_and_describe():
    node = Pay(charge_amount=Decimal("9.99"), on={"success": "x", "*": "x"})
    assert node.describe() == "(pay 9.99 usd)"
    assert node.steps()[-1] == "payment-processing"
    assert Pay(postal_code="94105", on={"success": "x", "*": "x"}).steps() == (
        "payment-card-number", "expiration-date", "security-code", "payment-processing",
    )  # fmt: skip


def test_say_prompt_is_xml_escaped():
    class Escaped(Flow):
        pay = Pay(
            prompts=[PayPrompt("payment-card-number", Say("Cards & <codes>"))],
            on={"success": "done", "*": "done"},
        )
        done = Hangup()

    from twilio.twiml.voice_response import VoiceResponse

    from ivrkit.pay import render
    from ivrkit.twiml import Links, Voice

    response = VoiceResponse()
    render(response, Escaped.state("pay"), call=None, voice=Voice(),  # type: ignore[arg-type]
           links=Links(BASE, "escaped", 3))  # fmt: skip
    root = ET.fromstring(str(response))
    assert root.find("Pay/Prompt/Say").text == "Cards & <codes>"  # type: ignore[union-attr]



@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_store_held_elsewhere_answers_pay_webhooks_in_time(serve, database_url, caplog):
    """The write lock held by someone else: the status callback gets a 503, the action the
    apology, within the deadline and without a traceback; once it is free, the same call pays."""
    import sqlite3

    from sqlalchemy.engine import make_url

    from ivrkit import twiml

    async with serve([PayBill], webhook_deadline=0.5) as (app, client):
        call = phone(client, "pay_bill")
        verb = (await call.start()).find("Pay")
        other = sqlite3.connect(make_url(database_url).database, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            late_status = await call.post(verb.attrib["statusCallback"], For="security-code",
                                          Attempt="1", SecurityCode="xxx")  # fmt: skip
            late_action = await call.post(verb.attrib["action"], **success_fields())
        finally:
            other.execute("COMMIT")
            other.close()
        assert (late_status.status, late_status.body) == (503, "storage unavailable\n")
        assert late_action.body == twiml.apology(PayBill.apology, PayBill.fallback_number)
        assert not any(r.exc_info for r in caplog.records)
        again = await call.post(verb.attrib["action"], **success_fields())
        assert "Your confirmation code ends in" in again.said()[0]
        record = await app.state.ivr.store.load(call.sid)
        assert record.data["payment"]["result"] == "success"


async def test_computed_amounts_and_prompts_are_never_shared_between_calls(serve):
    """A charge computed per call must not come from the render cache of another call."""
    dues = {"+14155550101": "10.00", "+14155550102": "20.00"}

    class PerCaller(Flow):
        pay = Pay(
            charge_amount=lambda call: dues[call.from_number],
            prompts=[PayPrompt("payment-card-number",
                               Say(lambda call: f"You owe {dues[call.from_number]}."))],
            on={"success": "done", "*": "done"},
        )  # fmt: skip
        done = Hangup()

    async with serve([PerCaller]) as (_, client):
        for number, due in [*dues.items(), *dues.items()]:
            verb = (await phone(client, "per_caller", from_number=number).start()).find("Pay")
            assert verb.attrib["chargeAmount"] == due
            assert verb.find("Prompt/Say").text == f"You owe {due}."  # type: ignore[union-attr]
