"""The README's flow example is real: it loads, passes the checks and answers a call."""

from __future__ import annotations

import re
from pathlib import Path

from ivrkit.loader import load_flows
from tests.conftest import CLOSED_HOURS, phone

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
