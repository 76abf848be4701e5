"""The README's flow example is real: it loads, passes the checks and answers a call."""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
from pathlib import Path

from flows.pay_bill import PayBill
from flows.support_line import SupportLine
from ivrkit import Settings, create_app
from ivrkit.loader import load_flows
from simulator import load_scenarios, run_scenarios
from tests.conftest import CLOSED_HOURS, OPEN_HOURS, phone

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_flow(folder: Path) -> type:
    """The block saved as a module, the way a user would (`ivrkit serve pizza.py`)."""
    text = README.read_text()
    block = re.search(r"<!-- readme-flow[^>]*-->\n```python\n(.*?)```", text, re.S).group(1)
    assert len(block.strip().splitlines()) <= 32, "the README promises a ~30-line flow"
    module = folder / "pizza.py"
    module.write_text(block)
    (flow,) = load_flows([str(module)])
    return flow


async def test_readme_flow_answers_like_the_readme_says(serve, tmp_path):
    flow = readme_flow(tmp_path)
    assert [f.code for f in flow.findings()] == []
    async with serve([flow], clock=lambda: CLOSED_HOURS) as (_, client):
        call = phone(client, "pizza_line")
        answer = await call.start()
        assert answer.verbs == ["Say", "Gather", "Redirect"]
        gather = answer.find("Gather")
        assert gather.attrib["hints"] == "order, hours"
        assert gather.attrib["action"].endswith("/voice/pizza_line/action?state=menu&step=1")
        closed = await call.press("1")
        assert closed.said()[0] == "We are open weekdays from 9 to 5."
        staff = await call.press("0")
        assert staff.find("Dial").find("Number").text == "+15005550100"


def readme_block(marker: str, language: str) -> str:
    """The code block under ``<!-- {marker}... -->``, exactly as printed."""
    text = README.read_text()
    found = re.search(rf"<!-- {marker}[^>]*-->\n```{language}\n(.*?)```", text, re.S)
    assert found, f"README.md has no ```{language} block under <!-- {marker} -->"
    return found.group(1)


def test_readme_pytest_example_passes_as_a_test_file(pytester):
    """Pasted into a test file as printed, with the project's pytest settings."""
    pytester.makepyfile(test_support=readme_block("readme-pytest", "python"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n"
        "    ignore:Module already imported:pytest.PytestAssertRewriteWarning\n"
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


async def test_readme_hours_scenario_passes_against_the_support_line(tmp_path):
    """The business-hours scenario, against the support line as `make run` serves it."""
    scenarios = tmp_path / "hours.yaml"
    scenarios.write_text(readme_block("readme-hours-scenario", "yaml"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", insecure_dev=True)
    app = create_app([SupportLine], settings=settings, clock=lambda: OPEN_HOURS)
    out = io.StringIO()
    report = await run_scenarios(
        load_scenarios(scenarios), url="/voice/support_line", app=app, out=out
    )
    assert report.ok, out.getvalue()
    assert report.passed == [
        "support is closed at 3 on a Sunday morning",
        "support answers on a Wednesday morning",
    ]


async def test_readme_pay_scenario_succeeds_and_fails_by_script(tmp_path):
    """The payment scenarios, against flows/pay_bill.py: one pays, two do not."""
    scenarios = tmp_path / "pay.yaml"
    scenarios.write_text(readme_block("readme-pay-scenario", "yaml"))
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", insecure_dev=True)
    app = create_app([PayBill], settings=settings)
    out = io.StringIO()
    report = await run_scenarios(load_scenarios(scenarios), url="/voice/pay_bill", app=app, out=out)
    assert report.ok, out.getvalue()
    assert report.passed == [
        "a caller pays on the second try",
        "an expired card twice is too many failed attempts",
        "star cancels",
    ]


def test_readme_signatures_match_the_code():
    block = readme_block("readme-signatures", "python")
    code = " ".join(line.split("#")[0] for line in block.splitlines())
    names = [p.name for p in inspect.signature(create_app).parameters.values()]
    assert f"create_app({names[0]}, *, " + ", ".join(f"{n}=None" for n in names[1:]) + ")" in code
    settings = re.search(r"Settings\((.*?)\)\s*$", code, re.S)
    assert settings
    printed = [part.strip() for part in settings.group(1).split(",") if part.strip()]
    expected = []
    for field in dataclasses.fields(Settings):
        default = field.default
        shown = f'"{default}"' if isinstance(default, str) else repr(default)
        expected.append(f"{field.name}={shown}")
    assert printed == expected
