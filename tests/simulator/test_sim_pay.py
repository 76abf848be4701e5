"""The simulator's <Pay> against tiny TwiML apps: checks, attempts, prompts, callbacks, tools."""

from __future__ import annotations

import io
import json
import textwrap
from datetime import UTC, datetime

import pytest
from sim_apps import TOKEN, twiml

from simulator import (
    CONNECTOR_ERROR_CARD,
    HangUp,
    PayAction,
    PayCard,
    PayEvent,
    load_scenarios,
    parse_pay,
    run_call,
    run_scenarios,
)
from simulator.cli import main
from simulator.pay import card_type, luhn_ok, mask_card, replay_steps
from simulator.scenario import ScenarioError, parse_step

WHEN = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)

PROMPTS = (
    '<Prompt for="payment-card-number"><Say>Card number, please.</Say></Prompt>'
    '<Prompt for="payment-card-number" errorType="invalid-card-number" attempt="2">'
    "<Say>Bad number, try again.</Say></Prompt>"
    '<Prompt for="payment-card-number" errorType="invalid-card-type">'
    "<Say>We do not take that card.</Say></Prompt>"
    '<Prompt for="expiration-date" errorType="invalid-date"><Say>Expired card.</Say></Prompt>'
    '<Prompt for="security-code" cardType="amex"><Say>Four digits on the front.</Say></Prompt>'
    '<Prompt for="security-code"><Say>Three digits on the back.</Say></Prompt>'
)


def pay_app(make_app, attrs: str = 'maxAttempts="2"', prompts: str = PROMPTS):
    pay = (
        f'<Pay action="/paid" statusCallback="/pay-status" chargeAmount="10.00" {attrs}>'
        f"{prompts}</Pay>"
    )
    return make_app(
        {
            "/voice": twiml(pay),
            "/paid": lambda seen: twiml(f"<Say>Result {seen.params['Result']}</Say>"),
            "/pay-status": "",
        }
    )


async def pay(app, steps, **options):
    options.setdefault("start_time", WHEN)
    return await run_call("/voice", steps, app=app, auth_token=TOKEN, **options)


def action_params(app) -> dict[str, str]:
    return next(s.params for s in app.seen if s.path == "/paid")


def statuses(app) -> list[dict[str, str]]:
    return [s.params for s in app.seen if s.path == "/pay-status"]


async def test_success_posts_masked_fields_and_each_step(make_app):
    app = pay_app(make_app)
    result = await pay(app, [PayCard("4242424242424242", "1230", "321", "94105")])
    params = action_params(app)
    assert params["Result"] == "success"
    assert params["PaymentCardNumber"] == "xxxx-xxxx-xxxx-4242"
    assert params["PaymentCardType"] == "visa"
    assert params["ExpirationDate"] == "1230"
    assert params["SecurityCode"] == "xxx"
    assert params["PaymentConfirmationCode"].startswith("ch_sim_")
    assert "4242424242424242" not in json.dumps([s.params for s in app.seen])
    assert [s["For"] for s in statuses(app)] == [
        "payment-card-number", "expiration-date", "security-code", "postal-code",
        "payment-processing",
    ]  # fmt: skip
    assert all(s["Attempt"] == "1" and "ErrorType" not in s for s in statuses(app))
    assert statuses(app)[0]["CallSid"] == result.call_sid
    assert result.said[:3] == [
        "Card number, please.",
        "Please enter your expiration date, two digits for the month and two digits for the year.",
        "Three digits on the back.",
    ]
    assert result.said[-1] == "Result success"
    event = next(e for e in result.events if isinstance(e, PayEvent))
    assert (event.result, event.card, event.attempts) == ("success", "xxxx-xxxx-xxxx-4242", 1)


async def test_luhn_failure_costs_an_attempt_and_plays_the_error_variant(make_app):
    app = pay_app(make_app)
    result = await pay(app, [PayCard("4242424242424241"), PayCard("4242424242424242")])
    assert action_params(app)["Result"] == "success"
    first = statuses(app)[0]
    assert first["ErrorType"] == "invalid-card-number"
    assert first["Attempt"] == "1"
    assert statuses(app)[1]["Attempt"] == "2"
    assert result.said[:2] == ["Card number, please.", "Bad number, try again."]


async def test_card_type_outside_valid_types_then_too_many_attempts(make_app):
    app = pay_app(make_app, 'maxAttempts="2" validCardTypes="visa"')
    result = await pay(app, [PayCard("5555555555554444"), PayCard("378282246310005")])
    assert action_params(app)["Result"] == "too-many-failed-attempts"
    assert [s["ErrorType"] for s in statuses(app)] == ["invalid-card-type"] * 2
    assert result.said.count("We do not take that card.") == 1  # only before the 2nd try


async def test_expired_date_is_judged_by_the_simulated_clock(make_app):
    app = pay_app(make_app, 'maxAttempts="1"')
    await pay(app, [PayCard("4242424242424242", "1126")])  # Nov 2026 < Dec 2026
    assert action_params(app)["Result"] == "too-many-failed-attempts"
    assert statuses(app)[-1]["ErrorType"] == "invalid-date"
    later = pay_app(make_app, 'maxAttempts="1"')
    await pay(later, [PayCard("4242424242424242", "1226")], start_time=WHEN)
    assert action_params(later)["Result"] == "success"


async def test_amex_prompt_and_four_digit_code(make_app):
    app = pay_app(make_app)
    amex = "378282246310005"
    result = await pay(app, [PayCard(amex, "1230", "123"), PayCard(amex, "1230", "1234")])
    assert "Four digits on the front." in result.said
    assert statuses(app)[2]["ErrorType"] == "invalid-security-code"
    assert action_params(app)["Result"] == "success"
    assert action_params(app)["PaymentCardNumber"] == "xxxx-xxxxxx-x0005"


async def test_star_timeout_hangup(make_app):
    app = pay_app(make_app)
    await pay(app, [PayAction("star")])
    assert action_params(app)["Result"] == "caller-interrupted-with-star"
    silent = pay_app(make_app)
    result = await pay(silent, [PayAction("timeout"), PayAction("timeout")])
    assert action_params(silent)["Result"] == "too-many-failed-attempts"
    assert [s["ErrorType"] for s in statuses(silent)] == ["input-timeout"] * 2
    assert "Sorry, we did not receive your input." in result.said
    gone = pay_app(make_app)
    ended = await pay(gone, [PayCard("4242424242424241"), HangUp()])
    assert action_params(gone)["Result"] == "caller-hung-up"
    assert next(s for s in gone.seen if s.path == "/paid").params["CallStatus"] == "completed"
    assert ended.reason == "caller-hangup"
    assert "Result caller-hung-up" not in ended.said  # the TwiML after a hang-up is not played


async def test_connector_errors(make_app):
    app = pay_app(make_app)
    await pay(app, [PayCard(CONNECTOR_ERROR_CARD)])
    assert action_params(app)["Result"] == "payment-connector-error"
    assert action_params(app)["ConnectorError"] == "card_declined"
    flagged = pay_app(make_app)
    await pay(flagged, [PayCard("4242424242424242")], pay_connector_error=True)
    assert action_params(flagged)["Result"] == "payment-connector-error"


async def test_bad_attributes_are_a_validation_error_without_prompts(make_app):
    app = pay_app(make_app, 'maxAttempts="7"')
    result = await pay(app, [PayCard("4242424242424242")])
    assert action_params(app)["Result"] == "validation-error"
    assert statuses(app) == []
    assert result.said == ["Result validation-error"]


async def test_default_prompts_without_prompt_elements_and_tokenize(make_app):
    app = make_app(
        {
            "/voice": twiml('<Pay action="/paid" securityCode="false" postalCode="false"/>'),
            "/paid": lambda seen: twiml("<Hangup/>"),
        }
    )
    result = await pay(app, [PayCard("4242424242424242")])
    params = action_params(app)
    assert params["Result"] == "success"
    assert params["PaymentToken"].startswith("tok_sim_")
    assert "PaymentConfirmationCode" not in params
    assert result.said == [
        "Please enter your credit card number.",
        "Please enter your expiration date, two digits for the month and two digits for the year.",
    ]


def test_card_checks_and_masks():
    assert luhn_ok("4242424242424242")
    assert not luhn_ok("4242424242424241")
    assert luhn_ok(CONNECTOR_ERROR_CARD)
    assert card_type("5555555555554444") == "mastercard"
    assert card_type("2223003122003222") == "mastercard"
    assert card_type("6011111111111117") == "discover"
    assert card_type("9999999999999995") is None
    assert mask_card("4242424242424242") == "xxxx-xxxx-xxxx-4242"
    assert parse_pay("4242 4242 4242 4242:1230") == PayCard("4242424242424242", "1230")
    assert parse_pay("STAR") == PayAction("star")
    with pytest.raises(ValueError, match="MMYY"):
        parse_pay("4242424242424242:12/30")
    with pytest.raises(ValueError, match="digits"):
        parse_pay("abc")
    assert replay_steps("success", "amex", 2) == [PayAction("timeout"), PayCard("378282246310005")]
    assert replay_steps("too-many-failed-attempts", "", 2, ["invalid-date", "timeout"]) == [
        PayCard("4242424242424242", "0100"), PayAction("timeout"),
    ]  # fmt: skip
    assert replay_steps("caller-hung-up", "", 1) == [PayAction("hangup")]


def test_scenario_pay_steps():
    assert parse_step({"pay": "4242424242424242:1230:123:94105"}) == PayCard(
        "4242424242424242", "1230", "123", "94105"
    )
    assert parse_step({"pay": {"card": 4242424242424242, "zip": 10001}}) == PayCard(
        "4242424242424242", None, None, "10001"
    )
    assert parse_step({"pay": "timeout"}) == PayAction("timeout")
    with pytest.raises(ScenarioError, match="step 2: --pay"):
        parse_step({"pay": "12/30"}, "step 2")


async def test_scenario_file_succeeds_and_fails_by_script(make_app, tmp_path):
    app = pay_app(make_app)
    path = tmp_path / "pay.yaml"
    path.write_text(textwrap.dedent("""
        url: /voice
        start: 2026-12-02T09:00:00+00:00
        scenarios:
          - name: pays
            steps: [{pay: "4242424242424242:1230:123:94105"}]
            expect: {heard: ["Result success"]}
          - name: gives up
            steps: [{pay: "4242424242424241"}, {pay: timeout}]
            expect: {heard: ["Bad number, try again.", "Result too-many-failed-attempts"]}
    """))
    out = io.StringIO()
    report = await run_scenarios(load_scenarios(path), auth_token=TOKEN, app=app, out=out)
    assert report.ok, out.getvalue()
    assert report.passed == ["pays", "gives up"]
    path.write_text(path.read_text().replace("Result too-many", "Result success-never"))
    failing = await run_scenarios(load_scenarios(path), auth_token=TOKEN, app=app, out=out)
    assert list(failing.failed) == ["gives up"]


def test_cli_pay_success_and_star(serve, make_app):
    app = pay_app(make_app)
    server = serve(app)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["call", f"{server.url}/voice", "--pay", "4242424242424241", "--pay",
         "4242424242424242:1230:123:94105", "--auth-token", TOKEN, "--start", WHEN.isoformat()],
        out=out, err=err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "Pay: success (visa xxxx-xxxx-xxxx-4242) after 2 attempt(s)" in text
    assert 'Say: "Result success"' in text
    out = io.StringIO()
    code = main(["call", f"{server.url}/voice", "--pay", "star", "--json", "--auth-token", TOKEN],
                out=out, err=io.StringIO())  # fmt: skip
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    pays = [e for e in events if e["type"] == "pay"]
    assert pays == [{"type": "pay", "result": "caller-interrupted-with-star", "card": "",
                     "card_type": "", "attempts": 1, "errors": []}]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main(["call", f"{server.url}/voice", "--pay", "4242:12/30"])
    assert refused.value.code == 2


async def test_phone_fixture_pays_attempt_by_attempt(phone, make_app):
    phone.auth_token = TOKEN
    app = pay_app(make_app)
    call = await phone.call("/voice", app=app, start_time=WHEN).start()
    assert call.waiting_for == "pay"
    assert call.prompt.attempt == 1
    with pytest.raises(AssertionError, match=r"waiting at a Pay.*pay\("):
        await call.press("1")
    await call.pay("4242424242424241")
    assert call.waiting_for == "pay"
    assert call.prompt.error_type == "invalid-card-number"
    assert call.prompt.step == "payment-card-number"
    await call.pay("4242424242424242", expiry="1230", cvc="999")
    assert call.ended
    call.assert_heard("Result success")


async def test_replay_of_a_recorded_payment(make_app, tmp_path):
    from simulator import load_recording, replay

    app = pay_app(make_app)
    recorded = await pay(app, [PayCard("4242424242424241"), PayCard("5555555555554444")],
                         start_time=None)  # fmt: skip
    path = tmp_path / "call.jsonl"
    path.write_text("\n".join(json.dumps(e.to_json()) for e in recorded.events))
    recording = load_recording(path)
    assert recording.steps == [PayCard("5555555555554445"), PayCard("5555555555554444")]
    report = await replay(recording, "/voice", auth_token=TOKEN, app=pay_app(make_app))
    assert report.ok, report.diff
    changed = make_app({"/voice": twiml('<Pay action="/paid" maxAttempts="2"/>'),
                        "/paid": lambda seen: twiml("<Say>Result changed</Say>")})  # fmt: skip
    assert not (await replay(recording, "/voice", auth_token=TOKEN, app=changed)).ok


async def test_load_callers_pay(make_app):
    from simulator import run_load

    app = pay_app(make_app)
    report = await run_load("/voice", calls=6, concurrency=3, wrong_input=0.5, app=app,
                            auth_token=TOKEN, seed=1)  # fmt: skip
    assert report.completed == 6
    results = [s.params["Result"] for s in app.seen if s.path == "/paid"]
    assert results == ["success"] * 6
    errors = [s.get("ErrorType") for s in statuses(app) if s.get("ErrorType")]
    assert errors == ["invalid-card-number"] * 3  # the wrong-input half failed once first


async def test_interactive_caller_pays_from_the_terminal(make_app):
    from simulator import InteractiveCaller

    out = io.StringIO()
    answers = iter(["4242-4242-4242-4241", "12/30", "", "4242424242424242:1230"])
    caller = InteractiveCaller(read=lambda prompt: (out.write(prompt), next(answers))[1], out=out)
    app = pay_app(make_app, 'maxAttempts="3"')
    await pay(app, caller)
    assert action_params(app)["Result"] == "too-many-failed-attempts"  # Enter: a silence
    shown = out.getvalue()
    assert "Pay, attempt 1: CARD[:MMYY[:CVC[:ZIP]]]" in shown
    assert "attempt 2 again (invalid-card-number)" in shown
    assert "the card number must be digits" in shown  # "12/30" is refused: a silence
    errors = [s.get("ErrorType") for s in statuses(app)]
    assert errors == ["invalid-card-number", "input-timeout", "input-timeout"]


def test_sync_call_pays(phone, make_app):
    phone.auth_token = TOKEN
    phone.app = pay_app(make_app)
    call = phone.sync("/voice", start_time=WHEN)
    call.pay("star")
    assert call.ended
    call.assert_heard("Result caller-interrupted-with-star")


async def test_prompt_with_play_and_pause_resolves_media(make_app):
    from simulator import PauseEvent, PlayEvent

    app = pay_app(make_app, prompts='<Prompt for="payment-card-number"><Pause length="2"/>'
                  "<Play>/audio/card.mp3</Play></Prompt>")  # fmt: skip
    result = await pay(app, [PayAction("star")])
    heard = [e for e in result.events if isinstance(e, PlayEvent | PauseEvent)]
    assert heard[0] == PauseEvent(2)
    assert heard[1].url.endswith("/audio/card.mp3")
    assert heard[1].url.startswith("http")
