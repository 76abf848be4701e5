"""Every state kind's arguments are checked when the Flow class is created (finding 2).

Each wrong argument is one IVR000 error naming the file and line, the flow, the state, the
argument, what was given and what is expected, instead of a TypeError from deep inside
ivrkit (or nothing at all) when the module is imported.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from ivrkit import (
    Client,
    Collect,
    Conference,
    Dial,
    Enqueue,
    Flow,
    FlowDefinitionError,
    Hangup,
    Menu,
    Number,
    Pause,
    Play,
    Queue,
    Record,
    Redirect,
    Reject,
    Retries,
    Say,
    Sip,
    SubFlow,
    decision,
)
from ivrkit.checker import run_check

STATE = 'expected a state name like "voicemail" or a state like Hangup()'
PROMPT = 'expected text, Say(...), Play(...), Pause(...) or a list of them, e.g. "Hello."'
LOOP = "how many times to play it; 0 repeats until the caller hangs up"


def define(node: Any) -> type[Flow]:
    return type("Line", (Flow,), {"give_up": "bye", "state": node, "bye": Hangup()})


def menu(**options: Any) -> Menu:
    options.setdefault("choices", {"1": "bye"})
    return Menu(options.pop("prompt", "Press 1."), **options)


def collect(**options: Any) -> Collect:
    options.setdefault("save_as", "account")
    options.setdefault("then", "bye")
    return Collect(options.pop("prompt", "Enter it."), **options)


CASES: list[tuple[str, Callable[[], Any], str]] = [
    # Say, Play, Pause
    ("say text", lambda: Say(5, then="bye"),
     'text: 5 is an int (expected the text to speak, e.g. "Hello.", or a function (call) -> str)'),
    ("say then", lambda: Say("Hi.", then=3), f"then: 3 is an int ({STATE})"),
    ("say voice", lambda: Say("Hi.", then="bye", voice=""),
     'voice: "" is a str (expected a non-empty str, e.g. "Polly.Joanna")'),
    ("say language", lambda: Say("Hi.", then="bye", language=7),
     'language: 7 is an int (expected a non-empty str, e.g. "en-US")'),
    ("say loop range", lambda: Say("Hi.", then="bye", loop=-1),
     f"loop: -1 is out of range (expected 0-1000: {LOOP})"),
    ("say loop type", lambda: Say("Hi.", then="bye", loop="2"),
     f'loop: "2" is a str (expected an int (0-1000): {LOOP})'),
    ("play url", lambda: Play("", then="bye"),
     'url: "" is a str (expected a non-empty str, e.g. "https://example.com/hello.mp3")'),
    ("play loop", lambda: Play("https://x.test/a.mp3", then="bye", loop=True),
     f"loop: True is a bool (expected an int (0-1000): {LOOP})"),
    ("play then", lambda: Play("https://x.test/a.mp3", then=["bye"]),
     f"then: ['bye'] is a list ({STATE})"),
    ("pause length", lambda: Pause("2", then="bye"),
     'length: "2" is a str (expected an int (1-600): whole seconds of silence)'),
    ("pause zero", lambda: Pause(0, then="bye"),
     "length: 0 is out of range (expected 1-600: whole seconds of silence)"),
    # Menu (and what it shares with Collect)
    ("menu key int", lambda: menu(choices={1: "bye"}),
     'choices: key 1 is an int (keys are the digits as strings, e.g. "1")'),
    ("menu key letters", lambda: menu(choices={"x": "bye"}),
     'choices: key "x" is not made of 0-9, * and # (keys are what the caller presses, '
     'e.g. "1", "0", "*" or "12")'),
    ("menu choice target", lambda: menu(choices={"1": 5}),
     f"choices['1']: 5 is an int ({STATE} or REPEAT)"),
    ("menu choices list", lambda: menu(choices=["1"]),
     "choices: ['1'] is a list (expected a dict like {\"1\": \"sales\"})"),
    ("menu nothing to choose", lambda: menu(choices={}),
     'choices: no choices and no words (give at least one, e.g. choices={"1": "sales"})'),
    ("menu words", lambda: menu(words={"sales": 2}),
     f"words['sales']: 2 is an int ({STATE} or REPEAT)"),
    ("menu word type", lambda: menu(words={3: "bye"}),
     'words: word 3 is an int (words are str, e.g. "sales")'),
    ("menu words list", lambda: menu(words=["sales"]),
     "words: ['sales'] is a list (expected a dict like {\"sales\": \"sales\"})"),
    ("menu no prompt", lambda: menu(prompt=None),
     'prompt: None is a NoneType (a caller cannot guess: give what they hear, '
     'e.g. "For sales press 1.")'),
    ("menu prompt type", lambda: menu(prompt=5), f"prompt: 5 is an int ({PROMPT})"),
    ("menu prompt item", lambda: menu(prompt=["Hi.", 5]), f"prompt[1]: 5 is an int ({PROMPT})"),
    ("menu prompt part", lambda: menu(prompt=Say(5)),
     'prompt.text: 5 is an int (expected the text to speak, e.g. "Hello.", or a function '
     "(call) -> str)"),
    ("menu short prompt", lambda: menu(short_prompt=""),
     f'short_prompt: "" is a str ({PROMPT})'),
    ("menu retries type", lambda: menu(retries=3),
     'retries: 3 is an int (expected Retries(...), e.g. Retries(no_input=3, give_up="operator"))'),
    ("retries count", lambda: menu(retries=Retries(no_match="3")),
     'retries.no_match: "3" is a str (expected an int (1 or more): attempts before giving up '
     "(1 gives up on the first miss))"),
    ("retries zero", lambda: menu(retries=Retries(no_input=0)),
     "retries.no_input: 0 is out of range (expected 1 or more: attempts before giving up "
     "(1 gives up on the first miss))"),
    ("retries give up", lambda: menu(retries=Retries(give_up=4)),
     f"retries.give_up: 4 is an int ({STATE})"),
    ("retries notice", lambda: menu(retries=Retries(no_input_prompt=5)),
     'retries.no_input_prompt: 5 is an int (expected a non-empty str, e.g. "Sorry?")'),
    ("menu timeout", lambda: menu(timeout=0),
     "timeout: 0 is out of range (expected 1-600: seconds of silence before a retry)"),
    ("menu finish key", lambda: menu(finish_on_key="##"),
     'finish_on_key: "##" is a str (expected one key: 0-9, * or # or "" for none)'),
    ("menu input", lambda: menu(input="voice"),
     'input: "voice" is a str (expected one of "dtmf", "speech", "dtmf speech")'),
    ("menu hints", lambda: menu(hints="sales"),
     'hints: "sales" is a str (expected a list of str, e.g. ["sales", "support"])'),
    ("menu hint item", lambda: menu(hints=["sales", 2]),
     'hints: item 2 is an int (expected a list of str, e.g. ["sales", "support"])'),
    ("menu global keys", lambda: menu(global_keys="yes"),
     'global_keys: "yes" is a str (expected True or False)'),
    ("menu language", lambda: menu(language=""),
     'language: "" is a str (expected a non-empty str, e.g. "en-US")'),
    # Collect
    ("collect digits str", lambda: collect(digits="7"),
     'digits: "7" is a str (expected an int (1-30) or a range like (4, 8))'),
    ("collect digits range", lambda: collect(digits=(8, 4)),
     "digits: (8, 4) is not a range from low to high (expected an int (1-30) or a range "
     "like (4, 8))"),
    ("collect digits zero", lambda: collect(digits=0),
     "digits: 0 is out of range (expected an int (1-30) or a range like (4, 8))"),
    ("collect save_as", lambda: collect(save_as="account number"),
     'save_as: "account number" is a str (expected a simple name, e.g. "account")'),
    ("collect then", lambda: collect(then=None), f"then: None is a NoneType ({STATE})"),
    ("collect pattern type", lambda: collect(pattern=5),
     r'pattern: 5 is an int (expected a regular expression, e.g. r"\d{4}")'),
    ("collect pattern", lambda: collect(pattern="[0-9"),
     'pattern: "[0-9" is not a regular expression (unterminated character set at position 0) '
     r'(expected e.g. r"\d{4}")'),
    ("collect validate", lambda: collect(validate="yes"),
     'validate: "yes" is a str (expected a function (value, call) -> bool, sync or async)'),
    ("collect confirm", lambda: collect(confirm="You entered it."),
     'confirm: "You entered it." is a str (expected text with {value}, e.g. "You entered '
     '{value}. Press 1 if that is right, or 2 to enter it again.")'),
    ("collect confirm braces", lambda: collect(confirm="{value} for {name}"),
     '''confirm: {name} cannot be filled in (only {value} is filled in; write other braces '''
     '''twice, e.g. "{{")'''),
    # Dial and its targets
    ("dial nothing", lambda: Dial(on={"*": "bye"}),
     'targets: 0 given (expected 1 to 10 things to ring, e.g. Dial("+15550100"))'),
    ("dial target", lambda: Dial(15550100, on={"*": "bye"}),
     'targets[0]: 15550100 is an int (expected a number like "+15550100", Number, Client, '
     "Sip, Conference or Queue)"),
    ("dial number", lambda: Dial(Number(15550100), on={"*": "bye"}),
     'targets[0].number: 15550100 is an int (expected a non-empty str, e.g. "+15550100")'),
    ("dial client", lambda: Dial("+15550100", Client(""), on={"*": "bye"}),
     'targets[1].identity: "" is a str (expected a non-empty str, e.g. "+15550100")'),
    ("dial sip", lambda: Dial(Sip("sip:a@b.test", username=5), on={"*": "bye"}),
     'targets[0].username: 5 is an int (expected a non-empty str, e.g. "+15550100")'),
    ("dial conference", lambda: Dial(Conference("room", start_on_enter="yes"), on={"*": "bye"}),
     'targets[0].start_on_enter: "yes" is a str (expected True or False)'),
    ("dial queue", lambda: Dial(Queue(None), on={"*": "bye"}),
     'targets[0].name: None is a NoneType (expected a non-empty str, e.g. "+15550100")'),
    ("dial timeout", lambda: Dial("+15550100", timeout=3, on={"*": "bye"}),
     "timeout: 3 is out of range (expected 5-600: seconds to ring before no-answer)"),
    ("dial caller id", lambda: Dial("+15550100", caller_id=5, on={"*": "bye"}),
     'caller_id: 5 is an int (expected a non-empty str, e.g. "+15550100")'),
    ("dial time limit", lambda: Dial("+15550100", time_limit=0, on={"*": "bye"}),
     "time_limit: 0 is out of range (expected 1-14400: longest call in seconds)"),
    ("dial record", lambda: Dial("+15550100", record="yes", on={"*": "bye"}),
     'record: "yes" is a str (expected True or False)'),
    ("dial hangup on star", lambda: Dial("+15550100", hangup_on_star=1, on={"*": "bye"}),
     "hangup_on_star: 1 is an int (expected True or False)"),
    ("dial answer on bridge", lambda: Dial("+15550100", answer_on_bridge=None, on={"*": "bye"}),
     "answer_on_bridge: None is a NoneType (expected True or False)"),
    ("dial outcome name", lambda: Dial("+15550100", on={"bussy": "bye", "*": "bye"}),
     'on: Dial outcome "bussy" is not a DialCallStatus (use completed, answered, busy, '
     "no-answer, failed, canceled or '*')"),
    ("dial outcome map", lambda: Dial("+15550100", on=["busy"]),
     "on: ['busy'] is a list (expected a dict like {\"*\": \"voicemail\"})"),
    ("dial outcome target", lambda: Dial("+15550100", on={"*": 5}),
     f"on['*']: 5 is an int ({STATE})"),
    ("dial then", lambda: Dial("+15550100", on={"*": "bye"}, then=5),
     f"then: 5 is an int ({STATE})"),
    ("dial prompt", lambda: Dial("+15550100", on={"*": "bye"}, prompt=5),
     f"prompt: 5 is an int ({PROMPT})"),
    # Record
    ("record then", lambda: Record("Speak.", then=None), f"then: None is a NoneType ({STATE})"),
    ("record on empty", lambda: Record("Speak.", then="bye", on_empty=5),
     f"on_empty: 5 is an int ({STATE})"),
    ("record save_as", lambda: Record("Speak.", then="bye", save_as="my message"),
     'save_as: "my message" is a str (expected a simple name, e.g. "voicemail")'),
    ("record max length", lambda: Record("Speak.", then="bye", max_length=0),
     "max_length: 0 is out of range (expected 1-14400: longest recording in s)"),
    ("record transcribe", lambda: Record("Speak.", then="bye", max_length=600, transcribe=True),
     "max_length: 600 with transcribe=True (Twilio transcribes recordings of at most 120 "
     "seconds)"),
    ("record timeout", lambda: Record("Speak.", then="bye", timeout=-1),
     "timeout: -1 is out of range (expected 0-600: seconds of silence that end it)"),
    ("record finish keys", lambda: Record("Speak.", then="bye", finish_on_key="x"),
     'finish_on_key: "x" is a str (expected the keys that stop the recording, e.g. "#", '
     'or "" for none)'),
    ("record beep", lambda: Record("Speak.", then="bye", beep="yes"),
     'beep: "yes" is a str (expected True or False)'),
    ("record transcribe flag", lambda: Record("Speak.", then="bye", transcribe=1),
     "transcribe: 1 is an int (expected True or False)"),
    ("record trim", lambda: Record("Speak.", then="bye", trim_silence="no"),
     'trim_silence: "no" is a str (expected True or False)'),
    ("record prompt", lambda: Record(5, then="bye"), f"prompt: 5 is an int ({PROMPT})"),
    # Enqueue
    ("enqueue name", lambda: Enqueue("", on={"*": "bye"}),
     'queue: "" is a str (expected a name of 1 to 64 characters, e.g. "support")'),
    ("enqueue long name", lambda: Enqueue("q" * 65, on={"*": "bye"}),
     'queue: "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq... is a str (expected a name of 1 to 64 '
     'characters, e.g. "support")'),
    ("enqueue hold", lambda: Enqueue("support", hold=5, on={"*": "bye"}),
     f"hold: 5 is an int ({PROMPT})"),
    ("enqueue prompt item", lambda: Enqueue("support", prompt=["Hold.", None], on={"*": "bye"}),
     f"prompt[1]: None is a NoneType ({PROMPT})"),
    ("enqueue wait url", lambda: Enqueue("support", wait_url="", on={"*": "bye"}),
     'wait_url: "" is a str (expected a non-empty str, e.g. "https://example.com/hold")'),
    ("enqueue hold and wait url",
     lambda: Enqueue("support", hold="Hold.", wait_url="https://x.test/hold", on={"*": "bye"}),
     "wait_url: given with hold= (give hold= (ivrkit serves it) or wait_url= (yours), not both)"),
    ("enqueue outcome name", lambda: Enqueue("support", on={"left": "bye", "*": "bye"}),
     'on: Enqueue outcome "left" is not a QueueResult (use bridged, bridging-in-process, '
     "error, hangup, leave, redirected, redirected-from-bridged, queue-full, system-error or '*')"),
    ("enqueue then", lambda: Enqueue("support", on={"*": "bye"}, then=5),
     f"then: 5 is an int ({STATE})"),
    # SubFlow, Return, Reject, Redirect, Hangup
    ("subflow name", lambda: SubFlow("account pin", then="bye"),
     'flow: "account pin" is a str (expected a simple name, e.g. "account_pin" (the other '
     "flow's name))"),
    ("subflow class", lambda: SubFlow(Flow, then="bye"),
     "flow: <class 'ivrkit.flow.Flow'> is a type (expected a simple name, e.g. \"account_pin\" "
     "(the other flow's name))"),
    ("subflow then", lambda: SubFlow("account_pin", then=5), f"then: 5 is an int ({STATE})"),
    ("reject reason", lambda: Reject("nope"),
     'reason: "nope" is a str (expected one of "rejected", "busy")'),
    ("redirect url", lambda: Redirect(""),
     'url: "" is a str (expected a non-empty str, e.g. "https://example.com/voice")'),
    ("redirect method", lambda: Redirect("https://x.test/voice", method="PUT"),
     'method: "PUT" is a str (expected one of "GET", "POST")'),
    ("hangup prompt", lambda: Hangup(5), f"prompt: 5 is an int ({PROMPT})"),
]  # fmt: skip


@pytest.mark.parametrize(("node", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_wrong_argument_is_one_located_error(node, message):
    with pytest.raises(FlowDefinitionError) as caught:
        define(node())
    assert [(f.code, f.state, f"{f.message} ({f.fix})") for f in caught.value.findings] == [
        ("IVR000", "state", message)
    ]


def test_inline_state_arguments_are_checked_too():
    with pytest.raises(FlowDefinitionError) as caught:
        define(Say("Hi.", then=Hangup(["Bye.", 3])))
    (finding,) = caught.value.findings
    assert (finding.state, finding.message) == ("state>next", "prompt[1]: 3 is an int")


def test_the_error_reads_like_the_issue_asks():
    with pytest.raises(FlowDefinitionError) as caught:

        class Refill(Flow):
            main_menu = Menu("Press 1.", choices={1: "refill"}, retries=Retries(give_up="bye"))
            refill = Collect("Your number?", save_as="rx", digits="7", then="bye")
            bye = Hangup()

    line = sys._getframe().f_lineno
    assert str(caught.value).splitlines() == [
        f"tests/test_argument_errors.py:{line - 4}: IVR000 error: Refill.main_menu: choices: "
        'key 1 is an int (keys are the digits as strings, e.g. "1")',
        f"tests/test_argument_errors.py:{line - 3}: IVR000 error: Refill.refill: digits: "
        '"7" is a str (expected an int (1-30) or a range like (4, 8))',
    ]


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"global_keys": {0: "bye"}},
         'global_keys: key 0 is an int (keys are the digits as strings, e.g. "1")'),
        ({"give_up": 5}, f"give_up: 5 is an int ({STATE})"),
        ({"number": 15005550006}, 'number: 15005550006 is an int (expected "+15550100" or a list)'),
        ({"number": ["+15005550006", 2]},
         'number: 2 is an int (expected a non-empty str, e.g. "+15550100")'),
        ({"initial": 5}, 'initial: 5 is an int (expected a simple name, e.g. "welcome")'),
        ({"name": "refill line"},
         'name: "refill line" is a str (expected a simple name, e.g. "support_line")'),
        ({"fallback_number": 5},
         'fallback_number: 5 is an int (expected a non-empty str, e.g. "+15550100")'),
        ({"apology": ""},
         'apology: "" is a str (expected a non-empty str, e.g. "Sorry, something went wrong.")'),
        ({"voice": 1}, 'voice: 1 is an int (expected a non-empty str, e.g. "Polly.Joanna")'),
        ({"language": 1}, 'language: 1 is an int (expected a non-empty str, e.g. "en-US")'),
    ],
)  # fmt: skip
def test_flow_options_are_checked_like_arguments(attributes, message):
    with pytest.raises(FlowDefinitionError) as caught:
        type("Line", (Flow,), {"give_up": "bye", "bye": Hangup(), **attributes})
    assert [(f.state, f"{f.message} ({f.fix})") for f in caught.value.findings] == [("", message)]


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (decision("open now"), 'state: "open now" is a str (expected a simple name, e.g. "route")'),
        (decision(5), 'state: 5 is an int (expected a simple name, e.g. "route")'),
        (decision(targets="bye"),
         'targets: "bye" is a str (expected a list of str, e.g. ["open", "closed"])'),
    ],
)  # fmt: skip
def test_decision_arguments_are_checked(mark, message):
    def route(self, call):
        return "bye"

    with pytest.raises(FlowDefinitionError) as caught:
        type("Line", (Flow,), {"route": mark(route), "bye": Hangup()})
    assert [(f.state, f"{f.message} ({f.fix})") for f in caught.value.findings] == [
        ("route", message)
    ]


def test_ivrkit_check_reports_them_with_file_and_line(tmp_path, capsys):
    module = tmp_path / "refill.py"
    module.write_text(
        "from ivrkit import Collect, Flow, Hangup\n"
        "\n"
        "class Refill(Flow):\n"
        '    rx = Collect("Your number?", save_as="rx", digits="7", then="bye")\n'
        "    bye = Hangup()\n"
    )
    assert run_check([str(module)], output="json") == 1
    (finding,) = json.loads(capsys.readouterr().out)["findings"]
    assert (finding["file"].endswith("refill.py"), finding["line"]) == (True, 4)
    assert (finding["code"], finding["flow"], finding["state"]) == ("IVR000", "Refill", "rx")
    assert finding["message"] == 'digits: "7" is a str'
