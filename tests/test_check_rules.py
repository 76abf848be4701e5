"""Every checker rule: a flow that breaks it and one that does not.

Flows with an error cannot even be defined (``serve`` would refuse them), so those are
created inside ``pytest.raises`` and the test reads the findings off the error.
"""

from __future__ import annotations

import pytest

from ivrkit import (
    REPEAT,
    Collect,
    Dial,
    Enqueue,
    Flow,
    FlowDefinitionError,
    Hangup,
    Menu,
    Record,
    Redirect,
    Reject,
    Retries,
    Say,
    decision,
)
from ivrkit.validation import ERROR, RULES, WARNING, Finding


def codes(findings: list[Finding], severity: str | None = None) -> list[str]:
    return [f.code for f in findings if severity is None or f.severity == severity]


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def test_every_rule_is_described():
    payments = ["IVR070", "IVR071", "IVR072"]
    assert sorted(RULES) == [f"IVR{i:03d}" for i in range(1, 19)] + payments


# -- IVR001 unknown target -------------------------------------------------------------------


def test_ivr001_unknown_target_names_file_line_and_suggestion():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu("Press 1.", choices={"1": "sals"}, retries=Retries(give_up="bye"))
            sales = Say("Sales.", then="bye")
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR001")
    assert finding.severity == ERROR
    assert finding.file == "tests/test_check_rules.py"
    assert finding.line > 0
    assert (finding.flow, finding.state) == ("Line", "menu")
    assert 'unknown state "sals" (did you mean "sales"?)' in finding.message


def test_ivr001_unknown_global_key_target():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            global_keys = {"0": "operatr"}
            menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
            operator = Dial("+15550100", on={"*": "bye"})
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR001")
    assert 'global key "0" goes to unknown state "operatr" (did you mean "operator"?)' in (
        finding.message
    )


def test_ivr001_known_targets_pass():
    class Line(Flow):
        global_keys = {"0": "operator"}
        menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
        operator = Dial("+15550100", on={"*": "bye"})
        bye = Hangup()

    assert "IVR001" not in codes(Line.findings())


# -- IVR002 initial state --------------------------------------------------------------------


def test_ivr002_missing_initial():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            initial = "wellcome"
            welcome = Say("Hi.", then=Hangup())

    assert codes(caught.value.findings) == ["IVR002"]
    assert 'did you mean "welcome"' in caught.value.findings[0].fix


def test_ivr002_explicit_initial_passes():
    class Line(Flow):
        initial = "welcome"
        bye = Hangup()
        welcome = Say("Hi.", then="bye")

    assert Line.initial_state() == "welcome"
    assert Line.findings() == []


# -- IVR003 give-up --------------------------------------------------------------------------


def test_ivr003_menu_without_give_up():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu("Press 1.", choices={"1": "bye"})
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR003")
    assert finding.state == "menu"
    assert "Retries(give_up=" in finding.fix


def test_ivr003_flow_wide_give_up_passes():
    class Line(Flow):
        give_up = "bye"
        menu = Menu("Press 1.", choices={"1": "bye"})
        bye = Hangup()

    assert Line.findings() == []


# -- IVR004 dead end -------------------------------------------------------------------------


def test_ivr004_prompt_with_no_way_out():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            hello = Say("Hello.")

    (finding,) = only(caught.value.findings, "IVR004")
    assert finding.message == "then leads nowhere"


def test_ivr004_prompt_that_hangs_up_passes():
    class Line(Flow):
        hello = Say("Hello.", then=Hangup())

    assert Line.findings() == []


# -- IVR005 dial outcomes --------------------------------------------------------------------


def test_ivr005_dial_without_busy_or_no_answer():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            sales = Dial("+15550100", on={"failed": "bye"})
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR005")
    assert finding.message == "no outcome for busy, no-answer"


def test_ivr005_dial_with_catch_all_passes():
    class Line(Flow):
        sales = Dial("+15550100", on={"*": "bye"})
        bye = Hangup()

    assert Line.findings() == []


# -- IVR006 unreachable ----------------------------------------------------------------------


def test_ivr006_unreachable_state_is_a_warning():
    class Line(Flow):
        welcome = Say("Hi.", then=Hangup())
        orphan = Say("Nobody hears this.", then=Hangup())

    (finding,) = only(Line.findings(), "IVR006")
    assert (finding.severity, finding.state) == (WARNING, "orphan")


def test_ivr006_entry_point_is_not_unreachable():
    class Line(Flow):
        entry_points = ("orphan",)
        welcome = Say("Hi.", then=Hangup())
        orphan = Say("Entered from outside.", then=Hangup())

    assert Line.findings() == []


# -- IVR007 pass-through loop ----------------------------------------------------------------


def test_ivr007_prompts_that_loop():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            a = Say("A.", then="b")
            b = Say("B.", then="a")

    assert "IVR007" in codes(caught.value.findings, ERROR)


def test_ivr007_loop_through_a_menu_passes():
    class Line(Flow):
        a = Say("A.", then="menu")
        menu = Menu(
            "Press 1 to hear A.", choices={"1": "a", "2": "bye"}, retries=Retries(give_up="bye")
        )
        bye = Hangup()

    assert Line.findings() == []


# -- IVR008 keys -----------------------------------------------------------------------------


def test_ivr008_choice_listed_twice():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu(
                "Press 1.",
                choices={"1": "sales", "2": "bye", "1": "bye"},  # noqa: F601 - the point
                retries=Retries(give_up="bye"),
            )
            sales = Say("Sales.", then="bye")
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR008")
    assert finding.message == 'choice "1" is listed twice; only the last one can be entered'


def test_ivr008_word_listed_twice_in_other_case():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu(
                "Say sales.",
                choices={"1": "bye"},
                words={"Sales": "bye", "sales ": "bye"},
                retries=Retries(give_up="bye"),
            )
            bye = Hangup()

    assert 'word "sales" is listed twice' in only(caught.value.findings, "IVR008")[0].message


def test_ivr008_choice_with_the_finish_key():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu(
                "Press 1 or pound.",
                choices={"1": "bye", "#": "bye"},
                retries=Retries(give_up="bye"),
            )
            bye = Hangup()

    assert (
        'choice "#" contains the finish key "#"' in only(caught.value.findings, "IVR008")[0].message
    )


def test_ivr008_global_key_equal_to_finish_key():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            global_keys = {"#": REPEAT}
            menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR008")
    assert finding.message.startswith('global key "#" contains the finish key "#"')


def test_ivr008_multi_digit_global_key_on_one_digit_menu_warns():
    class Line(Flow):
        global_keys = {"00": "bye"}
        menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="bye"))
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR008")
    assert finding.severity == WARNING
    assert "multi-digit global key" in finding.message


def test_ivr008_distinct_one_digit_keys_pass():
    class Line(Flow):
        global_keys = {"0": "bye", "*": REPEAT}
        menu = Menu(
            "Press 1 or 2.",
            choices={"1": "bye", "2": "bye"},
            words={"yes": "bye", "no": "bye"},
            retries=Retries(give_up="bye"),
        )
        bye = Hangup()

    assert Line.findings() == []


# -- IVR009 decisions ------------------------------------------------------------------------


def test_ivr009_decision_returning_unknown_literal():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            start = Say("Hi.", then="route")
            open_ = Say("Open.", then=Hangup())
            closed = Say("Closed.", then=Hangup())

            @decision("route")
            def route(self, call):
                return "open_" if call.data.get("open") else "clsoed"

    (finding,) = only(caught.value.findings, "IVR009")
    assert finding.message == 'can return unknown state "clsoed" (did you mean "closed"?)'


def test_ivr009_literal_outside_declared_targets():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            start = Say("Hi.", then="route")
            open_ = Say("Open.", then=Hangup())
            closed = Say("Closed.", then=Hangup())

            @decision("route", targets=["open_"])
            def route(self, call):
                return "open_" if call.data.get("open") else "closed"

    (finding,) = only(caught.value.findings, "IVR009")
    assert finding.message == 'can return "closed", which is not in its targets'


def test_ivr009_decision_with_known_literals_passes():
    class Line(Flow):
        start = Say("Hi.", then="route")
        open_ = Say("Open.", then=Hangup())
        closed = Say("Closed.", then=Hangup())

        @decision("route")
        def route(self, call):
            return "open_" if call.data.get("open") else "closed"

    assert Line.findings() == []
    assert Line.machine().fire("route", "goto:closed") == "closed"


# -- IVR010 sub-flow (across flows; the commands: test_tools_agree.py) ----------------------


def test_ivr010_every_missing_subflow_is_a_finding_at_its_line():
    from ivrkit import SubFlow
    from ivrkit.validation import check_subflows

    class Caller(Flow):
        verify = SubFlow("account_pin", then="pay")
        pay = SubFlow("payments", then="bye")
        bye = Hangup()

    class Payments(Flow):
        take = Hangup("Paid.")

    missing = check_subflows([Caller])
    assert [(f.code, f.severity, f.state) for f in missing] == [
        ("IVR010", ERROR, "verify"),
        ("IVR010", ERROR, "pay"),
    ]
    assert missing[1].line == missing[0].line + 1
    assert missing[0].file == "tests/test_check_rules.py"
    assert 'sub-flow "account_pin" is not loaded (loaded: caller)' in missing[0].message
    assert [f.state for f in check_subflows([Caller, Payments])] == ["verify"]


# -- IVR011 reject ---------------------------------------------------------------------------


def test_ivr011_reject_after_speaking_warns():
    class Line(Flow):
        hello = Say("Hello.", then="no")
        no = Reject()

    (finding,) = only(Line.findings(), "IVR011")
    assert (finding.severity, finding.state) == (WARNING, "no")


def test_ivr011_reject_before_answering_passes():
    class Line(Flow):
        no = Reject("busy")

    assert Line.findings() == []


# -- IVR012 enqueue outcomes -----------------------------------------------------------------


def test_ivr012_enqueue_without_leave_outcome():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            queue = Enqueue("support", on={"error": "bye"})
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR012")
    assert finding.message.startswith("no outcome for leave, queue-full")


def test_ivr012_enqueue_with_star_passes():
    class Line(Flow):
        queue = Enqueue("support", on={"*": "bye"})
        bye = Hangup()

    assert Line.findings() == []


# -- IVR013 retry loops ----------------------------------------------------------------------


def test_ivr013_give_up_back_to_the_same_menu():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            menu = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="sorry"))
            sorry = Say("Let's try again.", then="menu")
            bye = Hangup()

    (finding,) = only(caught.value.findings, "IVR013")
    assert finding.severity == ERROR
    assert "menu -> sorry -> menu forever" in finding.message


def test_ivr013_cycle_of_menus_giving_up_to_each_other():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            first = Menu("Press 1.", choices={"1": "bye"}, retries=Retries(give_up="second"))
            second = Menu("Press 2.", choices={"2": "bye"}, retries=Retries(give_up="first"))
            bye = Hangup()

    assert {f.state for f in only(caught.value.findings, "IVR013")} == {"first", "second"}


def test_ivr013_choice_to_its_own_menu_and_huge_retries_warn():
    class Line(Flow):
        menu = Menu(
            "Press 1.",
            choices={"1": "bye", "9": "menu"},
            retries=Retries(no_input=50, give_up="bye"),
        )
        bye = Hangup()

    messages = [f.message for f in only(Line.findings(), "IVR013")]
    assert codes(Line.findings(), ERROR) == []
    assert 'choice "9" goes back to menu itself, replaying it without counting a retry' in messages
    assert "Retries(no_input=50) asks the caller 50 times before giving up" in messages


def test_ivr013_give_up_that_ends_and_repeat_key_pass():
    class Line(Flow):
        menu = Menu("Press 1.", choices={"1": "bye", "9": REPEAT}, retries=Retries(give_up="bye"))
        bye = Hangup()

    assert Line.findings() == []


# -- IVR014 notices --------------------------------------------------------------------------


def test_ivr014_menu_without_no_match_and_no_input_notice():
    class Line(Flow):
        menu = Menu(
            "Press 1.",
            choices={"1": "bye"},
            retries=Retries(give_up="bye", no_input_prompt=None, no_match_prompt=None),
        )
        bye = Hangup()

    found = only(Line.findings(), "IVR014")
    assert [f.severity for f in found] == [WARNING, WARNING]
    assert found[0].message.startswith("no no-input notice")
    assert found[1].message.startswith("no no-match notice")


def test_ivr014_collect_with_notices_passes():
    class Line(Flow):
        pin = Collect(
            "Your PIN.", digits=4, save_as="pin", then="bye", retries=Retries(give_up="bye")
        )
        bye = Hangup()

    assert Line.findings() == []


# -- IVR015 self redirect --------------------------------------------------------------------


def test_ivr015_redirect_to_own_webhook_before_any_input():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            hello = Say("Hello.", then="again")
            again = Redirect("https://ivr.example.com/voice/line")

    (finding,) = only(caught.value.findings, "IVR015")
    assert "Twilio requests it forever" in finding.message
    assert finding.fix == 'go to the state itself (then="hello") instead of redirecting'


def test_ivr015_redirect_after_a_menu_warns():
    class Line(Flow):
        menu = Menu("Press 1.", choices={"1": "again"}, retries=Retries(give_up="bye"))
        again = Redirect("/voice/line")
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR015")
    assert finding.severity == WARNING


def test_ivr015_redirect_to_another_app_passes():
    class Line(Flow):
        hello = Say("Hello.", then="away")
        away = Redirect("https://other.example.com/voice/billing")

    assert Line.findings() == []


# -- IVR016 traps ----------------------------------------------------------------------------


def test_ivr016_states_that_never_end_the_call():
    with pytest.raises(FlowDefinitionError) as caught:

        class Line(Flow):
            first = Menu("Press 1.", choices={"1": "second"}, retries=Retries(give_up="agent"))
            second = Menu("Press 2.", choices={"2": "first"}, retries=Retries(give_up="agent"))
            agent = Record("Leave a message.", then="first")

    (finding,) = only(caught.value.findings, "IVR016")
    assert finding.message == "no path from first, second, agent ever ends the call"


def test_ivr016_loop_with_an_exit_passes():
    class Line(Flow):
        first = Menu("Press 1.", choices={"1": "second"}, retries=Retries(give_up="agent"))
        second = Menu("Press 2.", choices={"2": "first"}, retries=Retries(give_up="agent"))
        agent = Record("Leave a message.", then=Hangup("Thanks."))

    assert Line.findings() == []


# -- IVR017 read-back that does not name its keys ------------------------------------------


NOTICES = Retries(give_up="bye", no_input_prompt="Sorry?", no_match_prompt="Sorry.")


def account_entry(confirm: str, **keys: str) -> Collect:
    entry = Collect("Your account number?", save_as="account", then="bye", digits=6,
                    confirm=confirm, retries=NOTICES)  # fmt: skip
    for param, key in keys.items():  # confirm_key= / retry_key= once Collect takes them
        setattr(entry, param, key)
    return entry


def test_ivr017_confirm_text_without_the_keys_warns():
    class Line(Flow):
        account = account_entry("You entered {value}. Is that right?")
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR017")
    assert finding.severity == WARNING
    assert finding.state == "account"
    assert 'does not mention confirm_key "1" and retry_key "2"' in finding.message
    assert 'Press 1 if that is right, or 2 to try again."' in finding.fix


def test_ivr017_text_naming_other_keys_than_the_parameters_warns():
    class Line(Flow):
        account = account_entry("You entered {value}. Press 1 if right, 2 to retry.",
                                confirm_key="9", retry_key="2")  # fmt: skip
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR017")
    assert 'does not mention confirm_key "9"' in finding.message
    assert "retry_key" not in finding.message


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("You entered {value}. Press 1 if that is right, or 2 to try again.", {}),
        ("You said {value}. Press one to confirm or two to re-enter.", {}),
        ("Got {value}. Press star to confirm, pound to start over.",
         {"confirm_key": "*", "retry_key": "#"}),
    ],
)  # fmt: skip
def test_ivr017_text_that_names_both_keys_passes(text, keys):
    class Line(Flow):
        account = account_entry(text, **keys)
        bye = Hangup()

    assert only(Line.findings(), "IVR017") == []


def test_ivr017_a_value_with_the_key_digits_does_not_count_as_naming_them():
    class Line(Flow):
        account = account_entry("You entered {value}, extension 12.")
        bye = Hangup()

    assert len(only(Line.findings(), "IVR017")) == 1


# -- IVR018 "*" written for the old meaning (it caught a finished bridge) ------------------


SURVEY = Menu("Rate us: press 1 to 5.", choices={str(k): "bye" for k in range(1, 6)},
              retries=NOTICES)  # fmt: skip


def test_ivr018_enqueue_star_to_a_survey_warns_with_the_fix():
    class Line(Flow):
        queue = Enqueue("support", on={"*": "survey"})
        survey = SURVEY
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR018")
    assert finding.severity == WARNING
    assert finding.state == "queue"
    assert finding.message.startswith(
        'on={"*": "survey"} catches only unsuccessful outcomes: after a finished bridge the '
        'call ends, so a caller who talked to the agent never reaches "survey"'
    )
    assert finding.fix == (
        'if callers should reach "survey" after talking, add then="survey"; if "*" is for '
        "failures only, add then=Hangup() to say so"
    )


def test_ivr018_dial_star_to_a_menu_warns():
    class Line(Flow):
        call_back = Dial("+15550100", on={"*": "survey"})
        survey = SURVEY
        bye = Hangup()

    (finding,) = only(Line.findings(), "IVR018")
    assert "a caller who talked to the callee" in finding.message


@pytest.mark.parametrize(
    "connect",
    [
        Enqueue("support", on={"*": "message"}),  # voicemail: a failure handler
        Dial("+15550100", on={"*": "sorry"}),  # a goodbye after prompts
        Enqueue("support", on={"*": "survey"}, then="survey"),  # says what follows a bridge
        Enqueue("support", on={"*": "survey", "bridged": "bye"}),
        Dial("+15550100", on={"*": "survey", "completed": "bye"}),
        Dial("+15550100", on={"busy": "survey", "no-answer": "survey", "failed": "survey"}),
    ],
    ids=["to-voicemail", "to-goodbye", "with-then", "bridged", "completed", "no-star"],
)
def test_ivr018_stars_written_for_failures_pass(connect):
    class Line(Flow):
        start = connect
        survey = SURVEY
        message = Record("Leave a message.", then="bye")
        sorry = Say("Nobody is free.", then="bye")
        bye = Hangup()

    assert only(Line.findings(), "IVR018") == []
