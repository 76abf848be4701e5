"""The README's ConversationRelay examples are real: the scenario file and the pytest lines."""

from __future__ import annotations

import io
import re
from pathlib import Path

from relay_app import RelayApp

from simulator import load_scenarios, run_scenarios

README = Path(__file__).resolve().parents[2] / "README.md"


def block(marker: str, language: str) -> str:
    found = re.search(rf"<!-- {marker}[^>]*-->\n```{language}\n(.*?)```", README.read_text(),
                      re.S)
    assert found, f"README.md has no ```{language} block under <!-- {marker} -->"
    return found.group(1)


async def test_readme_relay_scenario_passes(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text(block("readme-relay-scenario", "yaml"))
    app = RelayApp()
    out = io.StringIO()
    report = await run_scenarios(load_scenarios(path), url="/voice", app=app, out=out)
    assert report.passed == ["a billing question goes back to the billing menu"], out.getvalue()
    assert [m["type"] for m in app.sessions[0].received] == [
        "setup", "prompt", "interrupt", "prompt"]


async def test_readme_pytest_lines_pass(phone):
    text = README.read_text()
    start = text.index('call = await phone.call("/voice", app=RelayApp()')
    lines = text[start:text.index("```", start)]
    body = "".join(f"    {line}\n" for line in lines.splitlines())
    namespace = {"RelayApp": RelayApp}
    exec(f"async def example(phone):\n{body}", namespace)  # noqa: S102 - the README's own lines
    await namespace["example"](phone)
