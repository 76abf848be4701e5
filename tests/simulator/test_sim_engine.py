"""The engine against tiny TwiML apps: one checklist behaviour per test."""

from __future__ import annotations

import asyncio

from sim_apps import TOKEN, twiml
from starlette.responses import RedirectResponse, Response

from simulator import (
    ERROR_NOTICE,
    DialOutcome,
    HangUp,
    Press,
    QueueOutcome,
    RecordOutcome,
    Speak,
    Timeout,
    run_call,
)


async def call(app, steps=(), url="/voice", **options):
    options.setdefault("auth_token", TOKEN)
    return await run_call(url, steps, app=app, **options)


async def test_first_request_is_ringing_then_in_progress(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/next" numDigits="1"><Say>Press 1</Say></Gather>'),
            "/next": twiml("<Say>Bye</Say>"),
        }
    )
    result = await call(app, [Press("1")])
    assert [s.params["CallStatus"] for s in app.seen] == ["ringing", "in-progress"]
    first = app.seen[0].params
    assert first["From"] == "+15005550006"
    assert first["CallSid"].startswith("CA")
    assert len(first["CallSid"]) == 34
    assert first["ApiVersion"] == "2010-04-01"
    assert first["Direction"] == "inbound"
    assert result.status == "completed"
    assert result.reason == "end-of-document"
    assert result.ok


async def test_headers_user_agent_and_idempotency_token(make_app):
    app = make_app({"/voice": twiml("<Redirect>/two</Redirect>"), "/two": twiml("<Hangup/>")})
    await call(app)
    tokens = [s.headers["i-twilio-idempotency-token"] for s in app.seen]
    assert all(s.headers["user-agent"] == "TwilioProxy/1.1" for s in app.seen)
    assert len(set(tokens)) == 2


async def test_gather_timeout_falls_through_without_request(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Gather action="/next"><Say>Press something</Say></Gather>'
                "<Say>We did not get that</Say>"
            ),
        }
    )
    result = await call(app, [Timeout()])
    assert app.paths() == ["/voice"]
    assert result.said == ["Press something", "We did not get that"]
    assert result.events[-1].reason == "end-of-document"


async def test_finish_on_key_ends_entry_and_is_not_in_digits(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/next"><Say>Account number</Say></Gather>'),
            "/next": twiml("<Hangup/>"),
        }
    )
    await call(app, [Press("1234#99")])
    assert app.seen[1].params["Digits"] == "1234"
    assert app.seen[1].params["FinishedOnKey"] == "#"


async def test_finish_on_key_empty_disables_it(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/next" finishOnKey=""><Say>Keys</Say></Gather>'),
            "/next": twiml("<Hangup/>"),
        }
    )
    await call(app, [Press("12#")])
    assert app.seen[1].params["Digits"] == "12#"


async def test_num_digits_stops_collection(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/next" numDigits="2"><Say>Two keys</Say></Gather>'),
            "/next": twiml("<Hangup/>"),
        }
    )
    await call(app, [Press("3456")])
    assert app.seen[1].params["Digits"] == "34"


async def test_only_finish_key_is_no_input(make_app):
    app = make_app({"/voice": twiml('<Gather action="/next"/><Say>Nothing entered</Say>')})
    result = await call(app, [Press("#")])
    assert app.paths() == ["/voice"]
    assert "Nothing entered" in result.heard


async def test_action_on_empty_result_forces_the_request(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Gather action="/next" actionOnEmptyResult="true"/><Say>unreached</Say>'
            ),
            "/next": twiml("<Hangup/>"),
        }
    )
    result = await call(app, [Timeout()])
    assert app.paths() == ["/voice", "/next"]
    assert "Digits" not in app.seen[1].params
    assert "unreached" not in result.heard


async def test_gather_default_action_is_the_current_document_url(make_app):
    answers = iter(
        [
            twiml('<Gather numDigits="1"><Say>Menu</Say></Gather>'),
            twiml("<Say>Got it</Say>"),
        ]
    )
    app = make_app({"/menu": lambda seen: next(answers)})
    await call(app, [Press("5")], url="/menu?step=3")
    assert [(s.method, s.path, s.query) for s in app.seen] == [
        ("POST", "/menu", {"step": "3"}),
        ("POST", "/menu", {"step": "3"}),
    ]
    assert app.seen[1].params["Digits"] == "5"


async def test_speech_input(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Gather input="dtmf speech" action="/next"><Say>Say it</Say></Gather>'
            ),
            "/next": twiml("<Hangup/>"),
        }
    )
    await call(app, [Speak("billing please", confidence=0.75)])
    params = app.seen[1].params
    assert params["SpeechResult"] == "billing please"
    assert params["Confidence"] == "0.75"
    assert "Digits" not in params


async def test_keys_cut_the_prompt_when_pressed_early(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/next"><Say>One</Say><Say>Two</Say></Gather>'),
            "/next": twiml("<Hangup/>"),
        }
    )
    result = await call(app, [Press("1#", after=1)])
    assert result.said == ["One"]


async def test_relative_redirect_resolves_against_current_document(make_app):
    app = make_app(
        {
            "/ivr/menu/start": twiml("<Redirect>next</Redirect>"),
            "/ivr/menu/next": twiml('<Redirect method="GET">../up?x=1</Redirect>'),
            "/ivr/up": twiml("<Say>Top</Say>"),
        }
    )
    result = await call(app, url="/ivr/menu/start")
    assert app.paths() == ["/ivr/menu/start", "/ivr/menu/next", "/ivr/up"]
    assert app.seen[2].method == "GET"
    assert app.seen[2].query["x"] == "1"
    assert app.seen[2].query["CallSid"] == result.call_sid  # GET params go in the query


async def test_get_voice_url_appends_params_to_existing_query(make_app):
    app = make_app({"/voice": twiml("<Say>Hi</Say>")})
    await call(app, url="/voice?flow=main", method="GET")
    seen = app.seen[0]
    assert seen.method == "GET"
    assert seen.query["flow"] == "main"
    assert seen.query["CallStatus"] == "ringing"


async def test_record_without_action_requests_the_same_url(make_app):
    answers = iter(
        [
            twiml('<Say>Leave a message</Say><Record maxLength="30"/><Say>unreached</Say>'),
            twiml("<Say>Thanks</Say>"),
        ]
    )
    app = make_app({"/voicemail": lambda seen: next(answers)})
    result = await call(app, [RecordOutcome(seconds=7, key="#")], url="/voicemail?box=2")
    assert [s.url for s in app.seen] == ["http://testserver/voicemail?box=2"] * 2
    params = app.seen[1].params
    assert params["RecordingDuration"] == "7"
    assert params["Digits"] == "#"
    assert params["RecordingSid"].startswith("RE")
    assert params["RecordingUrl"].endswith(params["RecordingSid"])
    assert "unreached" not in result.heard


async def test_record_is_cut_at_max_length(make_app):
    app = make_app(
        {
            "/voice": twiml('<Record action="/done" maxLength="10"/>'),
            "/done": twiml("<Hangup/>"),
        }
    )
    await call(app, [RecordOutcome(seconds=60)])
    assert app.seen[1].params["RecordingDuration"] == "10"
    assert "Digits" not in app.seen[1].params  # ended by maxLength, not by a key


async def test_record_after_hangup_still_posts_action(make_app):
    app = make_app(
        {
            "/voice": twiml('<Record action="/done"/>'),
            "/done": twiml("<Say>This TwiML is ignored</Say>"),
        }
    )
    result = await call(app, [RecordOutcome(seconds=4, hangup=True)])
    params = app.seen[1].params
    assert params["Digits"] == "hangup"
    assert params["CallStatus"] == "completed"
    assert params["RecordingDuration"] == "4"
    assert "This TwiML is ignored" not in result.heard
    assert result.reason == "caller-hangup"


async def test_empty_recording_makes_no_request_and_continues(make_app):
    app = make_app({"/voice": twiml('<Record action="/done"/><Say>No message recorded</Say>')})
    result = await call(app, [RecordOutcome(seconds=0)])
    assert app.paths() == ["/voice"]
    assert "No message recorded" in result.heard


async def test_dial_without_action_continues_the_document(make_app):
    app = make_app({"/voice": twiml("<Dial>+15550111</Dial><Say>After the dial</Say>")})
    result = await call(app, [DialOutcome("busy")])
    assert app.paths() == ["/voice"]
    assert result.said == ["After the dial"]
    dial = next(e for e in result.events if e.type == "dial")
    assert dial.targets == ["+15550111"]
    assert dial.status == "busy"


async def test_dial_action_params(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Dial action="/dialed" timeout="20"><Number>+15550111</Number>'
                "<Client>alice</Client></Dial><Say>unreached</Say>"
            ),
            "/dialed": twiml("<Hangup/>"),
        }
    )
    result = await call(app, [DialOutcome("completed", duration=42)])
    params = app.seen[1].params
    assert params["DialCallStatus"] == "completed"
    assert params["DialCallDuration"] == "42"
    assert params["DialCallSid"].startswith("CA")
    assert params["DialBridged"] == "true"
    dial = next(e for e in result.events if e.type == "dial")
    assert dial.targets == ["+15550111", "client:alice"]
    assert "unreached" not in result.heard


async def test_dial_no_answer_and_conference_params(make_app):
    app = make_app(
        {
            "/voice": twiml('<Dial action="/a"><Number>+15550111</Number></Dial>'),
            "/a": twiml('<Dial action="/b"><Conference>room</Conference></Dial>'),
            "/b": twiml("<Hangup/>"),
        }
    )
    await call(app, [DialOutcome("no-answer"), DialOutcome("answered", duration=5)])
    no_answer, conference = app.seen[1].params, app.seen[2].params
    assert no_answer["DialCallStatus"] == "no-answer"
    assert no_answer["DialBridged"] == "false"
    assert "DialCallDuration" not in no_answer
    assert conference["DialCallStatus"] == "answered"
    assert "DialCallSid" not in conference
    assert "DialCallDuration" not in conference


async def test_hangup_on_star_drops_only_the_callee_and_time_limit_cuts(make_app):
    app = make_app(
        {
            "/voice": twiml('<Dial action="/a" hangupOnStar="true">+15550111</Dial>'),
            "/a": twiml('<Dial action="/b" timeLimit="10">+15550112</Dial>'),
            "/b": twiml('<Dial action="/c">+15550113</Dial>'),
            "/c": twiml("<Say>Still here</Say>"),
        }
    )
    result = await call(
        app,
        [
            DialOutcome("completed", duration=12, presses_star=True),
            DialOutcome("completed", duration=60),
            DialOutcome("completed", duration=8, presses_star=True),
        ],
    )
    starred, limited, plain = app.seen[1].params, app.seen[2].params, app.seen[3].params
    assert starred["DialCallStatus"] == "completed"
    assert starred["DialCallDuration"] == "12"
    assert limited["DialCallDuration"] == "10"  # timeLimit cut the bridge
    assert plain["DialCallDuration"] == "8"
    dials = [e.to_json() for e in result.events if e.type == "dial"]
    assert dials[0]["ended_by"] == "star"  # the caller stayed on: only the callee was dropped
    assert "ended_by" not in dials[2]  # no hangupOnStar: * is just a tone
    assert "Still here" in result.heard
    assert result.status == "completed"


async def test_enqueue_wait_url_gets_queue_params_and_leave_resumes(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Enqueue waitUrl="/hold">support</Enqueue><Say>Back from the queue</Say>'
            ),
            "/hold": twiml("<Say>Please hold</Say><Leave/>"),
        }
    )
    result = await call(app, [QueueOutcome("bridged")])
    assert app.paths() == ["/voice", "/hold"]
    hold = app.seen[1]
    assert hold.method == "POST"
    assert hold.params["QueuePosition"] == "1"
    assert hold.params["QueueSid"].startswith("QU")
    assert {"QueueTime", "AvgQueueTime", "CurrentQueueSize", "MaxQueueSize"} <= set(hold.params)
    assert result.said == ["Please hold", "Back from the queue"]
    enqueue = next(e for e in result.events if e.type == "enqueue")
    assert (enqueue.queue, enqueue.result) == ("support", "leave")


async def test_enqueue_wait_url_refetched_and_action_gets_queue_result(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Enqueue waitUrl="/hold" waitUrlMethod="GET" action="/after">sales</Enqueue>'
            ),
            "/hold": twiml("<Play>http://example.com/music.mp3</Play>"),
            "/after": twiml("<Hangup/>"),
        }
    )
    await call(app, [QueueOutcome("bridged", wait_rounds=3)])
    assert app.paths() == ["/voice", "/hold", "/hold", "/hold", "/after"]
    assert app.seen[1].method == "GET"
    assert app.seen[4].params["QueueResult"] == "bridged"


async def test_nested_verbs_twilio_refuses_are_12200(make_app):
    for inner in ("<Dial>+15550111</Dial>", "<Gather/>", '<Play digits="1w2"/>', "<Record/>"):
        app = make_app({"/voice": twiml(f"<Gather>{inner}</Gather>")})
        result = await call(app)
        assert [e.code for e in result.errors] == [12200], inner
        assert result.said == [ERROR_NOTICE]


async def test_unknown_verb_is_reported_and_skipped(make_app):
    app = make_app({"/voice": twiml("<say>lower case</say><Say>Real</Say>")})
    result = await call(app)
    assert [e.code for e in result.errors] == [12200]
    assert result.said == ["Real"]


async def test_bad_content_type_is_12300(make_app):
    app = make_app(
        {"/voice": lambda s: Response(twiml("<Say>x</Say>"), media_type="application/json")}
    )
    result = await call(app)
    assert [e.code for e in result.errors] == [12300]
    assert result.said == [ERROR_NOTICE]
    assert not result.ok


async def test_non_xml_body_is_12100(make_app):
    app = make_app({"/voice": "this is not xml"})
    result = await call(app)
    assert [e.code for e in result.errors] == [12100]


async def test_text_before_xml_declaration_is_12100(make_app):
    app = make_app({"/voice": "hello" + twiml("<Say>x</Say>")})
    result = await call(app)
    assert [e.code for e in result.errors] == [12100]


async def test_root_must_be_response(make_app):
    app = make_app({"/voice": "<Reply><Say>x</Say></Reply>"})
    result = await call(app)
    assert [e.code for e in result.errors] == [12100]


async def test_comments_ignored(make_app):
    app = make_app({"/voice": twiml("<!-- a note --><Say>Hi</Say>")})
    result = await call(app)
    assert result.ok
    assert result.said == ["Hi"]


async def test_plain_text_that_is_not_twiml_is_spoken_then_hangup(make_app):
    app = make_app({"/voice": lambda s: Response("Hello there", media_type="text/plain")})
    result = await call(app)
    assert result.ok
    assert result.said == ["Hello there"]


async def test_body_over_64k_is_11750(make_app):
    app = make_app({"/voice": twiml("<Say>" + "a" * 70000 + "</Say>")})
    result = await call(app)
    assert [e.code for e in result.errors] == [11750]


async def test_500_answer_is_11200(make_app):
    app = make_app({"/voice": lambda s: Response("boom", status_code=500)})
    result = await call(app)
    assert [e.code for e in result.errors] == [11200]
    assert result.said == [ERROR_NOTICE]
    assert app.paths() == ["/voice"]  # rp defaults to ct: no retry on 5xx


async def test_retry_policy_from_fragment(make_app):
    app = make_app({"/voice": lambda s: Response("boom", status_code=503)})
    await call(app, url="/voice#rc=2&rp=5xx")
    assert app.paths() == ["/voice"] * 3
    assert all("#" not in s.url for s in app.seen)


async def test_slow_answer_past_read_timeout_is_11205(make_app):
    async def slow(seen):
        await asyncio.sleep(1)
        return twiml("<Say>too late</Say>")

    app = make_app({"/voice": slow})
    result = await call(app, url="/voice#rt=200")
    assert [e.code for e in result.errors] == [11205]
    assert "too late" not in result.heard
    assert app.seen[0].url == "http://testserver/voice"  # the fragment is never sent


async def test_fallback_url_gets_error_code_and_continues(make_app):
    app = make_app(
        {
            "/voice": lambda s: Response("boom", status_code=500),
            "/fallback": twiml("<Say>Fallback speaking</Say>"),
        }
    )
    result = await call(app, fallback_url="/fallback")
    fallback = app.seen[1]
    assert fallback.path == "/fallback"
    assert fallback.params["ErrorCode"] == "11200"
    assert fallback.params["ErrorUrl"] == "http://testserver/voice"
    assert fallback.params["CallStatus"] == "ringing"  # still the first event of the call
    assert result.said == ["Fallback speaking"]


async def test_request_loop_limit_ends_the_call(make_app):
    app = make_app({"/voice": twiml("<Say>Again</Say><Redirect>/voice</Redirect>")})
    result = await call(app, max_requests=25)
    assert len(app.seen) == 25
    assert result.reason == "request-limit"
    assert result.errors[0].code == "request-limit"
    assert "--max-requests" in result.errors[0].message


async def test_reject_as_first_verb_is_unanswered(make_app):
    app = make_app({"/voice": twiml('<Reject reason="busy"/>')})
    result = await call(app, status_callback="/status")
    assert result.status == "busy"
    assert result.duration == 0
    assert app.seen[-1].params["CallStatus"] == "busy"
    app2 = make_app({"/voice": twiml("<Reject/>")})
    assert (await call(app2)).status == "no-answer"


async def test_reject_after_another_verb_is_refused(make_app):
    app = make_app({"/voice": twiml("<Say>Hi</Say><Reject/>")})
    result = await call(app)
    assert result.status == "completed"
    assert [e.code for e in result.errors] == [12200]


async def test_hangup_verb_ends_and_later_verbs_unreachable(make_app):
    app = make_app({"/voice": twiml("<Say>Bye</Say><Hangup/><Say>never</Say>")})
    result = await call(app)
    assert result.said == ["Bye"]
    assert result.reason == "hangup"


async def test_say_loop_zero_is_capped(make_app):
    app = make_app({"/voice": twiml('<Say loop="0">la</Say>')})
    result = await call(app)
    assert len(result.said) == 1000


async def test_status_callback_params(make_app):
    app = make_app(
        {
            "/voice": twiml('<Say>Hello there caller</Say><Pause length="10"/>'),
            "/status": lambda s: Response(status_code=204),
        }
    )
    result = await call(app, status_callback="/status")
    status = app.seen[-1]
    assert status.path == "/status"
    params = status.params
    assert params["CallStatus"] == "completed"
    assert int(params["CallDuration"]) == result.duration >= 10
    assert params["SequenceNumber"] == "0"
    assert params["CallbackSource"] == "call-progress-events"
    assert params["Timestamp"].endswith("GMT")
    assert result.events[-1].type == "end"


async def test_status_callback_events_sequence(make_app):
    app = make_app({"/voice": twiml("<Say>Hi</Say>"), "/status": ""})
    await call(
        app,
        status_callback="/status",
        status_callback_events=["initiated", "answered", "completed"],
    )
    callbacks = [s.params for s in app.seen if s.path == "/status"]
    assert [(p["CallStatus"], p["SequenceNumber"]) for p in callbacks] == [
        ("initiated", "0"),
        ("in-progress", "1"),
        ("completed", "2"),
    ]


async def test_cookies_are_kept(make_app):
    def first(seen):
        response = Response(twiml("<Redirect>/second</Redirect>"), media_type="text/xml")
        response.set_cookie("session", "abc123")
        return response

    app = make_app({"/voice": first, "/second": twiml("<Hangup/>")})
    await call(app)
    assert "session=abc123" in app.seen[1].headers.get("cookie", "")


async def test_302_is_followed_without_resending_digits(make_app):
    app = make_app(
        {
            "/voice": twiml('<Gather action="/choose" numDigits="1"/>'),
            "/choose": lambda s: RedirectResponse("/menu2", status_code=302),
            "/menu2": twiml("<Say>Second menu</Say>"),
        }
    )
    result = await call(app, [Press("4")])
    assert app.paths() == ["/voice", "/choose", "/menu2"]
    assert app.seen[1].params["Digits"] == "4"
    assert app.seen[2].method == "GET"
    assert "Digits" not in app.seen[2].params
    assert result.said == ["Second menu"]


async def test_too_many_redirects_is_11215(make_app):
    app = make_app({"/voice": lambda s: RedirectResponse("/voice", status_code=301)})
    result = await call(app)
    assert len(app.seen) == 11
    assert [e.code for e in result.errors] == [11215]


async def test_other_3xx_is_11216(make_app):
    app = make_app({"/voice": lambda s: Response(status_code=308, headers={"location": "/x"})})
    result = await call(app)
    assert [e.code for e in result.errors] == [11216]


async def test_caller_hangup_at_gather(make_app):
    app = make_app({"/voice": twiml('<Gather action="/x"><Say>Menu</Say></Gather>'), "/status": ""})
    result = await call(app, [HangUp()], status_callback="/status")
    assert result.reason == "caller-hangup"
    assert app.paths() == ["/voice", "/status"]


async def test_script_running_out_hangs_up(make_app):
    app = make_app({"/voice": twiml('<Gather action="/voice"><Say>Menu</Say></Gather>')})
    result = await call(app, [Press("1#"), Press("2#")])
    assert len(app.seen) == 3
    assert result.reason == "caller-hangup"


async def test_unsigned_when_no_token(make_app):
    app = make_app({"/voice": twiml("<Say>Hi</Say>")}, token=None)
    await run_call("/voice", app=app)
    assert "x-twilio-signature" not in app.seen[0].headers


async def test_virtual_clock_counts_pauses_without_sleeping(make_app):
    app = make_app({"/voice": twiml('<Pause length="600"/><Say>Hi</Say><Pause length="120"/>')})
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await call(app)
    assert loop.time() - started < 2
    assert result.duration >= 120  # the first Pause delays the answer, so it is not billed
    assert result.duration < 600


async def test_connect_requests_its_action_or_continues(make_app):
    app = make_app(
        {
            "/voice": twiml(
                '<Connect><Stream url="wss://x"/></Connect><Say>After connect</Say>'
                '<Connect action="/done"><Stream url="wss://x"/></Connect>'
            ),
            "/done": twiml("<Say>Done</Say>"),
        }
    )
    result = await call(app)
    assert result.said == ["After connect", "Done"]


async def test_say_over_4096_characters_is_13521(make_app):
    app = make_app({"/voice": twiml("<Say>" + "word " * 1000 + "</Say><Say>Short</Say>")})
    result = await call(app)
    assert [e.code for e in result.errors] == [13521]
    assert result.said == ["Short"]


async def test_audio_answer_is_played_then_hangup(make_app):
    app = make_app({"/voice": lambda s: Response(b"RIFF....", media_type="audio/wav")})
    result = await call(app)
    assert result.ok
    plays = [e for e in result.events if e.type == "play"]
    assert [p.url for p in plays] == ["http://testserver/voice"]
    assert result.reason == "end-of-document"


async def test_play_digits_and_pause_advance_the_clock(make_app):
    app = make_app({"/voice": twiml('<Play digits="1WW2"/><Pause length="3"/><Hangup/>')})
    result = await call(app)
    assert [e.type for e in result.events[1:-1]] == ["play", "pause", "hangup"]
    assert result.duration == 6  # 1 + 1 + 0.5 + 0.5 s of digits, then 3 s of pause
