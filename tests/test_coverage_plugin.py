"""``pytest --ivr-coverage``: a small suite that skips one branch reports exactly that branch."""

from __future__ import annotations

import pytest

from flows.support_line import SupportLine
from ivrkit.coverage import CoverageRecorder, transitions_of

pytest_plugins = ["pytester"]

FLOW = """
from ivrkit import Flow, Hangup, Menu, Retries, Say


class MenuLine(Flow):
    menu = Menu(
        "Press 1 for sales, 2 to hang up.",
        choices={"1": "sales", "2": "bye"},
        retries=Retries(no_input=2, no_match=1, give_up="bye"),
    )
    sales = Say("Sales.", then=Hangup())
    bye = Hangup("Goodbye.")
"""

SUITE = """
import pytest

from ivrkit import Settings, create_app
from menu_flow import MenuLine

TOKEN = "pytester-token-0123456789"


@pytest.fixture
async def app(tmp_path):
    app = create_app(
        [MenuLine],
        settings=Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", auth_token=TOKEN
        ),
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.parametrize("key", ["1", "2"])
async def test_choice(phone, app, key):
    call = await phone.call("/voice/menu_line", app=app, auth_token=TOKEN).start()
    await call.press(key)
    assert call.ended


async def test_silence_then_wrong_key_gives_up(phone, app):
    call = await phone.call("/voice/menu_line", app=app, auth_token=TOKEN).start()
    await call.timeout()
    await call.press("9")
    call.assert_heard("Goodbye.")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(menu_flow=FLOW)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


def test_full_suite_reports_every_transition(suite):
    suite.makepyfile(test_menu=SUITE)
    result = suite.runpytest_subprocess("--ivr-coverage", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*ivrkit flow coverage*", "menu_line * 4/4 * 5/5 * 100%"])
    assert "transitions no test took" not in result.stdout.str()


def test_skipped_branch_is_listed_exactly_and_fail_under_fails(suite):
    suite.makepyfile(test_menu=SUITE.replace('["1", "2"]', '["1"]'))
    result = suite.runpytest_subprocess(
        "--ivr-coverage", "--ivr-coverage-fail-under=90", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    missed = out.split("transitions no test took:\n", 1)[1].split("\n\n", 1)[0]
    assert missed.splitlines() == ["  menu_line: menu -press:2-> bye"]
    result.stdout.fnmatch_lines(
        ["menu_line * 4/4 * 4/5 * 80%", "FAIL: flow transition coverage 80.0% *=90)"]
    )


def test_fail_under_passes_at_the_threshold(suite):
    suite.makepyfile(test_menu=SUITE.replace('["1", "2"]', '["1"]'))
    result = suite.runpytest_subprocess("--ivr-coverage-fail-under=80", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["ok: flow transition coverage 80.0% *"])


def test_without_the_option_nothing_is_recorded(suite):
    suite.makepyfile(test_menu=SUITE)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    assert "ivrkit flow coverage" not in result.stdout.str()


def test_total_excludes_triggers_no_webhook_fires():
    edges = transitions_of(SupportLine)
    assert ("main_menu", "repeat", "main_menu") in edges
    assert ("main_menu", "press:*", "main_menu") not in edges  # REPEAT fires "repeat"
    assert ("main_menu", "press:0", "operator") in edges
    # 40, plus the assistant: 2 words to it, 3 hand-offs, hang-up and failure, the billing
    # menu's 1, 0, star, no-input, no-match and give-up, and balance -> billing menu.
    assert len(edges) == 54


def test_recorder_merges_states_and_transitions():
    recorder = CoverageRecorder()
    recorder.flows_loaded([SupportLine])
    recorder.state_entered(SupportLine, "welcome", "CA1")
    recorder.trigger_taken(SupportLine, "welcome", "next", "main_menu", "CA1")
    report = recorder.report()
    assert report.taken_transitions == 1
    assert report.flows[0].states == {"welcome", "main_menu"}
    assert "support_line" in report.table()
