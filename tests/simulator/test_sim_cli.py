"""``ivrkit-sim`` end to end against a real uvicorn server."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import textwrap

from sim_apps import TOKEN, demo_ivr

from simulator.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_scripted_call_json(serve):
    app = demo_ivr()
    server = serve(app)
    code, out, err = run_cli(
        "call",
        f"{server.url}/voice",
        "--press",
        "timeout",
        "--press",
        "1",
        "--dial",
        "busy",
        "--record",
        "7#",
        "--json",
        "--auth-token",
        TOKEN,
        "--from",
        "+15551112222",
        "--status-callback",
        f"{server.url}/status",
    )
    assert code == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "request"
    assert kinds[-1] == "end"
    assert {"say", "gather", "input", "dial", "record", "redirect"} <= set(kinds)
    assert [e for e in events if e["type"] == "input"] == [
        {"type": "input", "timeout": True},
        {"type": "input", "digits": "1"},
    ]
    dial = next(e for e in events if e["type"] == "dial")
    assert dial == {"type": "dial", "targets": ["+15550111"], "status": "busy", "duration": 0}
    assert next(e for e in events if e["type"] == "record") == {"type": "record", "duration": 7}
    assert events[-1]["status"] == "completed"
    assert events[-1]["reason"] == "end-of-document"
    said = [e["text"] for e in events if e["type"] == "say"]
    assert said[-1] == "Got 7 seconds. Goodbye."
    request = events[0]
    assert set(request) == {"type", "method", "url", "params", "status", "elapsed_ms"}
    assert request["params"]["From"] == "+15551112222"
    assert app.seen[-1].path == "/status"
    assert "TwilioProxy" in app.seen[0].headers["user-agent"]
    assert not app.bad_signatures
    assert err == ""


def test_text_output_and_hangup_when_script_runs_out(serve):
    server = serve(demo_ivr())
    code, out, _ = run_cli("call", f"{server.url}/voice", "--press", "9", "--auth-token", TOKEN)
    assert code == 0
    assert 'Say: "That is not a valid choice."' in out
    assert out.strip().splitlines()[-1].endswith("(caller-hangup)")


def test_call_exit_status_on_twilio_error(serve):
    server = serve(demo_ivr())
    code, out, _ = run_cli("call", f"{server.url}/missing", "--auth-token", TOKEN)
    assert code == 1
    assert "error 11200" in out


def test_unsigned_warning(serve):
    server = serve(demo_ivr(token=None))
    code, _, err = run_cli("call", f"{server.url}/voice", "--press", "3", "--record", "2")
    assert code == 0
    assert "without X-Twilio-Signature" in err


def test_run_scenarios(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    server = serve(demo_ivr())
    path = tmp_path / "ivr.yaml"
    path.write_text(
        textwrap.dedent("""\
        url: http://127.0.0.1:1/voice   # overridden by --url
        scenarios:
          - name: voicemail after busy sales
            steps:
              - press: "1"
              - dial: busy
              - record: {seconds: 12, key: "#"}
            expect:
              heard: ["Thanks for calling Acme.", "Got 12 seconds"]
              state: [menu, sales_done, saved]
              reached: ["/ivr"]
              ended: {status: completed, reason: end-of-document}
          - name: wrong expectation
            steps: [wait, {press: "2"}, {queue: leave}]
            expect:
              heard: "Queue result bridged."
              not_heard: "We did not hear a choice."
    """)
    )
    code, out, err = run_cli("run", str(path), "--url", f"{server.url}/voice")
    assert code == 1, err
    assert "PASS voicemail after busy sales" in out
    assert "FAIL wrong expectation" in out
    assert "expected to hear 'Queue result bridged.'" in out
    assert "did not expect to hear 'We did not hear a choice.'" in out
    assert "1 passed, 1 failed of 2 scenarios" in out


def test_run_scenarios_all_pass_and_bad_file(serve, tmp_path):
    server = serve(demo_ivr())
    good = tmp_path / "good.yaml"
    good.write_text(
        f"url: {server.url}/voice\nauth_token: {TOKEN}\nscenarios:\n"
        "  - name: menu\n    steps: [{press: '2'}, {queue: bridged}]\n"
        "    expect: {heard: Queue result bridged., ended: completed}\n"
    )
    assert run_cli("run", str(good))[0] == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenarios:\n  - name: typo\n    steps: [{pres: '1'}]\n")
    code, _, err = run_cli("run", str(bad))
    assert code == 2
    assert "typo: step 1: unknown step 'pres'" in err


def test_replay_detects_a_changed_prompt(serve, tmp_path):
    v1 = serve(demo_ivr())
    v2 = serve(demo_ivr(greeting="Welcome to Acme Corporation."))
    recording = tmp_path / "call.jsonl"
    code, out, _ = run_cli(
        "call", f"{v1.url}/voice", "--press", "3", "--record", "9#", "--json", "--auth-token", TOKEN
    )
    assert code == 0
    recording.write_text(out)
    code, out, _ = run_cli("replay", str(recording), f"{v1.url}/voice", "--auth-token", TOKEN)
    assert code == 0, out
    assert "replay matches" in out
    code, out, _ = run_cli("replay", str(recording), f"{v2.url}/voice", "--auth-token", TOKEN)
    assert code == 1
    assert "-say  Thanks for calling Acme." in out
    assert "+say  Welcome to Acme Corporation." in out


def test_replay_ivrkit_event_log_export(serve, tmp_path):
    v1_app = demo_ivr()
    v1 = serve(v1_app)
    code, _, _ = run_cli(
        "call",
        f"{v1.url}/voice",
        "--press",
        "timeout",
        "--press",
        "1",
        "--dial",
        "no-answer",
        "--record",
        "5#",
        "--auth-token",
        TOKEN,
    )
    assert code == 0
    export = tmp_path / "events.jsonl"
    export.write_text(
        "".join(
            json.dumps({"kind": "webhook", "params": seen.params, "twiml": answer}) + "\n"
            for seen, answer in v1_app.answers
        )
    )
    code, out, _ = run_cli("replay", str(export), f"{v1.url}/voice", "--auth-token", TOKEN)
    assert code == 0, out
    changed = serve(demo_ivr(greeting="Hello from the new menu."))
    code, out, _ = run_cli("replay", str(export), f"{changed.url}/voice", "--auth-token", TOKEN)
    assert code == 1
    assert "+say  Hello from the new menu." in out


def test_load(serve):
    app = demo_ivr()
    server = serve(app)
    code, out, _ = run_cli(
        "load",
        f"{server.url}/voice",
        "--calls",
        "40",
        "--concurrency",
        "8",
        "--wrong-input",
        "10%",
        "--no-input",
        "10%",
        "--hangup",
        "5%",
        "--json",
        "--auth-token",
        TOKEN,
        "--seed",
        "7",
    )
    assert code == 0
    report = json.loads(out)
    assert report["completed"] == 40
    assert report["behaviours"] == {"normal": 30, "wrong-input": 4, "no-input": 4, "hangup": 2}
    assert sum(report["end_reasons"].values()) == 40
    assert report["end_reasons"]["caller-hangup"] >= 2
    assert report["errors"] == {}
    assert report["requests"] == len(app.seen)
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["max"]
    assert not app.bad_signatures


def test_load_text_output(serve):
    server = serve(demo_ivr(token=None))
    code, out, err = run_cli("load", f"{server.url}/voice", "--calls", "5", "--concurrency", "2")
    assert code == 0
    assert "calls completed   5/5" in out
    assert "webhook latency   p50" in out
    assert "[" not in err  # no progress bar when stderr is not a terminal


def test_python_dash_m(serve):
    server = serve(demo_ivr())
    completed = subprocess.run(
        [sys.executable, "-m", "simulator", "call", f"{server.url}/nope", "--auth-token", TOKEN],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 1
    assert "11200" in completed.stdout


def test_transcript_header_shows_the_call_sid(serve):
    app = demo_ivr()
    server = serve(app)
    code, out, _ = run_cli("call", f"{server.url}/voice", "--press", "3", "--record", "4#",
                           "--auth-token", TOKEN)
    assert code == 0
    header = out.splitlines()[0]
    match = re.fullmatch(rf"== call (CA[0-9a-f]{{32}}): POST {server.url}/voice", header)
    assert match, header
    assert {seen.params["CallSid"] for seen in app.seen} == {match.group(1)}


def test_silence_without_a_terminal_is_explained_on_stderr(serve):
    server = serve(demo_ivr())
    code, out, err = run_cli("call", f"{server.url}/voice", "--auth-token", TOKEN)
    assert err == (
        "ivrkit-sim: no input (stdin is not a terminal): the caller hangs up; use -i or --press\n"
    )
    assert out.splitlines()[-1].endswith("(caller-hangup)")
    assert code == 0


def test_a_script_that_runs_out_at_a_gather_says_so(serve):
    server = serve(demo_ivr())
    _, out, err = run_cli("call", f"{server.url}/voice", "--press", "timeout",
                          "--auth-token", TOKEN)
    assert "<- caller stays silent (timeout)" in out
    assert err == "ivrkit-sim: no --press or --speak left for this Gather: the caller hangs up\n"


def test_start_must_carry_a_utc_offset(serve):
    server = serve(demo_ivr())
    code, out, err = run_cli("call", f"{server.url}/voice", "--start", "2026-11-22T03:00:00")
    assert code == 2
    assert out == ""
    assert "--start: 2026-11-22T03:00:00 has no UTC offset; add one" in err
