"""`ivrkit graph`: the diagram's nodes and edges, parsed back from Mermaid and DOT output."""

from __future__ import annotations

import re
import shutil
import textwrap

import pytest

from flows.account_pin import AccountPin
from flows.support_line import SupportLine
from ivrkit import Collect, Dial, Flow, Hangup, Menu, Record, Retries, Say, SubFlow, decision
from ivrkit.cli import main
from ivrkit.graph import build_graph, diff, to_dot, to_mermaid

MERMAID_NODE = re.compile(r"^    (\w+)[\[{(]")
MERMAID_EDGE = re.compile(r'^    (\w+) (-->|-\.->|==>)(?:\|"(.*)"\|)? (\w+)$')
DOT_EDGE = re.compile(r'^    "([^"]+)" -> "([^"]+)" \[label="([^"]*)"')


def parse_mermaid(text: str) -> tuple[set[str], set[tuple[str, str, str, str]]]:
    nodes, edges = set(), set()
    for line in text.splitlines()[1:]:
        if match := MERMAID_EDGE.match(line):
            source, arrow, label, dest = match.groups()
            edges.add((source, arrow, label or "", dest))
        elif match := MERMAID_NODE.match(line):
            nodes.add(match.group(1))
    return nodes, edges


SUPPORT_NODES = {
    "welcome", "main_menu", "sales", "support_queue", "closed", "voicemail", "thanks",
    "no_message", "operator", "goodbye", "support_hours", "sales_hangup",
    "support_queue_hangup", "thanks_hangup", "operator_hangup",
    "assistant", "assistant_hangup", "billing_menu", "balance",
}  # fmt: skip

SUPPORT_EDGES = {
    ("welcome", "-->", "", "main_menu"),
    ("main_menu", "-->", "1", "sales"),
    ("main_menu", "-->", "2", "support_hours"),
    ("main_menu", "-->", "3", "voicemail"),
    ("main_menu", "-->", "'sales'", "sales"),
    ("main_menu", "-->", "'support'", "support_hours"),
    ("main_menu", "-->", "'message'", "voicemail"),
    ("main_menu", "-.->", "no-input / no-match", "main_menu"),
    ("main_menu", "-.->", "give up", "operator"),
    ("main_menu", "==>", "global 0", "operator"),
    ("main_menu", "==>", "global *", "main_menu"),
    ("sales", "-->", "completed / answered / canceled", "sales_hangup"),
    ("sales", "-->", "busy / no-answer / failed", "voicemail"),
    ("support_queue", "-->", "bridged / bridging-in-process / hang-up / red...",
     "support_queue_hangup"),
    ("support_queue", "-->", "error / leave / queue-full / system-error", "voicemail"),
    ("closed", "-->", "", "voicemail"),
    ("voicemail", "-->", "recorded", "thanks"),
    ("voicemail", "-->", "no recording", "no_message"),
    ("thanks", "-->", "", "thanks_hangup"),
    ("no_message", "-->", "", "goodbye"),
    ("operator", "-->", "completed / answered", "operator_hangup"),
    ("operator", "-->", "busy / no-answer / failed / canceled", "voicemail"),
    ("support_hours", "-->", "", "support_queue"),
    ("support_hours", "-->", "", "closed"),
    ("main_menu", "-->", "'question'", "assistant"),
    ("main_menu", "-->", "'bill'", "assistant"),
    ("assistant", "-->", "hand-off billing", "billing_menu"),
    ("assistant", "-->", "hand-off operator / session failed", "operator"),
    ("assistant", "-->", "other hand-off", "main_menu"),
    ("assistant", "-->", "caller hung up", "assistant_hangup"),
    ("billing_menu", "-->", "1", "balance"),
    ("billing_menu", "-.->", "no-input / no-match", "billing_menu"),
    ("billing_menu", "-.->", "give up", "operator"),
    ("billing_menu", "==>", "global 0", "operator"),
    ("billing_menu", "==>", "global *", "billing_menu"),
    ("balance", "-->", "", "billing_menu"),
}  # fmt: skip


def test_support_line_mermaid_nodes_and_edges():
    text = to_mermaid(build_graph([SupportLine]))
    assert text.startswith("flowchart TD\n")
    nodes, edges = parse_mermaid(text)
    assert nodes == SUPPORT_NODES
    assert edges == SUPPORT_EDGES


def test_node_labels_say_what_the_caller_hears_shortened():
    text = to_mermaid(build_graph([SupportLine]))
    assert 'welcome["welcome<br/>Thanks for calling Acme."]' in text
    assert 'main_menu{{"main_menu<br/>For sales press 1. For support press..."}}' in text
    assert 'goodbye(["goodbye<br/>Goodbye."])' in text


class Pharmacy(Flow):
    """Every kind of arrow once; the expected edges below are written by hand from it."""

    global_keys = {"0": "pharmacist"}
    welcome = Say("Pharmacy.", then="menu")
    menu = Menu(
        "Press 1 for a refill.",
        choices={"1": "refill"},
        retries=Retries(give_up="pharmacist", no_input_prompt="Hello?", no_match_prompt="No."),
    )
    refill = Collect(
        "Your prescription number?",
        save_as="rx",
        digits=6,
        confirm="You entered {value}. Press 1 if right, 2 to retry.",
        then="route",
        retries=Retries(give_up="pharmacist", no_input_prompt="Hello?", no_match_prompt="No."),
    )
    pharmacist = Dial("+15550100", on={"*": "message"})
    message = Record("Leave a message.", then="bye", on_empty="bye")
    bye = Hangup("Goodbye.")

    @decision("route")
    def route(self, call: object) -> str:
        return "message" if call else "bye"


PHARMACY_EDGES = {
    ("welcome", "menu", ""),
    ("menu", "refill", "1"),
    ("menu", "menu", "no-input / no-match"),
    ("menu", "pharmacist", "give up"),
    ("menu", "pharmacist", "0"),
    ("refill", "route", "entered"),
    ("refill", "refill", "no-input / no-match / re-enter"),
    ("refill", "pharmacist", "give up"),
    ("pharmacist", "pharmacist>hangup", "completed / answered"),
    ("pharmacist", "message", "busy / no-answer / failed / canceled"),
    ("message", "bye", "recorded / no recording"),
    ("route", "message", ""),
    ("route", "bye", ""),
}


def test_edges_match_a_hand_written_expectation():
    graph = build_graph([Pharmacy])
    assert {(e.source, e.dest, e.label) for e in graph.edges} == PHARMACY_EDGES


def test_machine_moves_along_the_same_hand_written_edges():
    moves = {(source, dest) for source, _, dest in Pharmacy.machine().edges()}
    assert moves == {(source, dest) for source, dest, _ in PHARMACY_EDGES}


def test_dot_has_the_same_edges_with_distinct_styles():
    text = to_dot(build_graph([SupportLine]), name="support_line")
    edges = {match.groups() for line in text.splitlines() if (match := DOT_EDGE.match(line))}
    assert len(edges) == len(SUPPORT_EDGES)
    assert ("main_menu", "operator", "give up") in edges
    assert '"main_menu" -> "operator" [label="give up" style=dashed' in text
    assert '"main_menu" -> "operator" [label="global 0" style=bold' in text
    assert text.startswith('digraph "support_line" {')
    assert text.rstrip().endswith("}")


class Parent(Flow):
    welcome = Say("Welcome.", then="verify")
    verify = SubFlow("account_pin", then="bye")
    bye = Hangup()


def test_subflow_hand_off_links_to_the_other_flow():
    alone = build_graph([Parent])
    assert ("verify", "flow:account_pin", "enter", "subflow") in {
        (e.source, e.dest, e.label, e.kind) for e in alone.edges
    }
    together = build_graph([Parent, AccountPin])
    nodes, edges = parse_mermaid(to_mermaid(together))
    assert ("parent_verify", "==>", "enter", "account_pin_account") in edges
    assert ("parent_verify", "-->", "returned", "parent_bye") in edges
    assert "account_pin_pin" in nodes


def test_diff_lists_added_and_removed_states_and_edges():
    class Before(Flow):
        menu = Menu("Press 1.", choices={"1": "sales"}, retries=Retries(give_up="bye"))
        sales = Say("Sales.", then="bye")
        bye = Hangup()

    class After(Flow):
        menu = Menu("Press 2.", choices={"2": "support"}, retries=Retries(give_up="bye"))
        support = Say("Support.", then="bye")
        bye = Hangup()

    change = diff(build_graph([Before]), build_graph([After]))
    assert change.text().splitlines() == [
        "+ state support: Support.",
        "- state sales: Sales.",
        "+ choice menu -[2]-> support",
        "+ outcome support -[]-> bye",
        "- choice menu -[1]-> sales",
        "- outcome sales -[]-> bye",
    ]
    mermaid = change.mermaid()
    assert "class support added" in mermaid
    assert "class sales removed" in mermaid
    assert mermaid.count("linkStyle") == 4


def test_cli_graph_mermaid_and_class_selector(capsys):
    assert main(["graph", "flows/support_line.py:SupportLine", "--format", "mermaid"]) == 0
    nodes, edges = parse_mermaid(capsys.readouterr().out)
    assert (nodes, edges) == (SUPPORT_NODES, SUPPORT_EDGES)


def test_cli_graph_unknown_class_names_the_choices(capsys):
    assert main(["graph", "flows/support_line.py:Nope"]) == 2
    err = capsys.readouterr().err
    assert "no flow 'Nope' (flows there: SupportLine)" in err


def test_cli_graph_diff_of_two_files(tmp_path, capsys):
    old = tmp_path / "old" / "line.py"
    new = tmp_path / "new" / "line.py"
    source = textwrap.dedent(
        """
        from ivrkit import Flow, Hangup, Menu, Retries
        class Line(Flow):
            menu = Menu("Press 1.", choices={%s}, retries=Retries(give_up="bye"))
            bye = Hangup()
        """
    )
    for path, choices in ((old, '"1": "bye"'), (new, '"1": "bye", "2": "bye"')):
        path.parent.mkdir()
        path.write_text(source % choices)
    assert main(["graph", "--diff", str(old), str(new)]) == 0
    assert capsys.readouterr().out == "+ choice menu -[2]-> bye\n"
    assert main(["graph", "--diff", str(old), str(new), "--format", "mermaid"]) == 0
    assert "linkStyle 1 stroke:#1e8449" in capsys.readouterr().out
    assert main(["graph", "--diff", str(old), str(new), "--format", "png"]) == 2


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize(("fmt", "magic"), [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_cli_graph_images_through_graphviz(tmp_path, fmt, magic):
    out = tmp_path / f"support.{fmt}"
    assert main(["graph", "flows/support_line.py", "--format", fmt, "-o", str(out)]) == 0
    assert magic in out.read_bytes()[:400]


def test_missing_graphviz_names_the_install(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["graph", "flows/support_line.py", "--format", "svg"]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err
