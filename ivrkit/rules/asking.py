"""Rules for states that ask the caller (Menu, Collect): keys, retries, notices, read-back.

IVR008 keys that cannot be entered, IVR013 retry counts and self-loops, IVR014 missing
notices, IVR017 a read-back that does not say which keys confirm or re-enter.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ivrkit import nodes as n
from ivrkit.rules.findings import ERROR, WARNING, Reporter
from ivrkit.rules.source import written_twice

if TYPE_CHECKING:
    from ivrkit.flow import Flow

MAX_SENSIBLE_RETRIES = 10
"""More attempts than this is a loop in all but name: nobody listens to a menu ten times."""

DEFAULT_CONFIRM_KEY = "1"
DEFAULT_RETRY_KEY = "2"

_KEY_WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "*": "star",
    "#": "pound|hash",
}


def check_asking(report: Reporter, flow: type[Flow], node: n.Node) -> None:
    if isinstance(node, n.Menu | n.Collect):
        _check_retries(report, node)
    if isinstance(node, n.Collect):
        _check_confirm_keys(report, node)
    if isinstance(node, n.Menu):
        _check_duplicate_keys(report, node)
        _check_menu_keys(report, flow, node)


def _check_retries(report: Reporter, node: n.Menu | n.Collect) -> None:
    retries = node.retries
    for what, count in (("no_input", retries.no_input), ("no_match", retries.no_match)):
        if count > MAX_SENSIBLE_RETRIES:
            report.add(
                "IVR013",
                WARNING,
                node,
                f"Retries({what}={count}) asks the caller {count} times before giving up",
                f"keep {what} at {MAX_SENSIBLE_RETRIES} or fewer (3 is usual)",
            )
    if retries.no_input_prompt is None:
        report.add(
            "IVR014",
            WARNING,
            node,
            "no no-input notice: after silence the caller hears the prompt again with no "
            "word that nothing was heard",
            'set Retries(no_input_prompt="Sorry, I didn\'t hear anything.")',
        )
    if retries.no_match_prompt is None:
        report.add(
            "IVR014",
            WARNING,
            node,
            "no no-match notice: a wrong entry replays the prompt with no word of what went wrong",
            'set Retries(no_match_prompt="Sorry, that is not a valid choice.")',
        )


def mentions_key(text: str, key: str) -> bool:
    """Whether ``text`` tells the caller to press ``key``: "press 1", "press one", "star"."""
    spoken = _KEY_WORDS.get(key)
    pattern = rf"(?<![\w*#]){re.escape(key)}(?![\w*#])"
    if spoken:
        pattern += rf"|\b(?:{spoken})\b"
    return re.search(pattern, text, re.IGNORECASE) is not None


def _check_confirm_keys(report: Reporter, node: n.Collect) -> None:
    # The keys are parameters (confirm_key, retry_key); a read-back that names other keys,
    # or none, leaves the caller guessing, and a wrong guess re-enters or confirms by mistake.
    if not node.confirm:
        return
    text = node.confirm.replace("{value}", "")
    keys = {
        "confirm_key": str(getattr(node, "confirm_key", DEFAULT_CONFIRM_KEY)),
        "retry_key": str(getattr(node, "retry_key", DEFAULT_RETRY_KEY)),
    }
    unsaid = {param: key for param, key in keys.items() if not mentions_key(text, key)}
    if not unsaid:
        return
    listed = " and ".join(f'{param} "{key}"' for param, key in unsaid.items())
    report.add(
        "IVR017",
        WARNING,
        node,
        f"the confirm text {node.confirm!r} does not mention {listed}, so the caller is not "
        "told which key confirms and which re-enters",
        f'say the keys, e.g. confirm="You entered {{value}}. Press {keys["confirm_key"]} if '
        f'that is right, or {keys["retry_key"]} to try again.", or set confirm_key= / '
        "retry_key= to the keys the text names",
    )


def _check_duplicate_keys(report: Reporter, node: n.Menu) -> None:
    for what, value in written_twice(node):
        report.add(
            "IVR008",
            ERROR,
            node,
            f'{what} "{value}" is listed twice; only the last one can be entered',
            f'remove one of the two "{value}" entries',
        )


def _check_menu_keys(report: Reporter, flow: type[Flow], node: n.Menu) -> None:
    for key, target in node.choices.items():
        if flow.target_name(target, node.name) == node.name and target is not n.REPEAT:
            report.add(
                "IVR013",
                WARNING,
                node,
                f'choice "{key}" goes back to {node.name} itself, replaying it without '
                "counting a retry",
                "use REPEAT to replay the menu on purpose, or send the key elsewhere",
            )
    for key in node.choices:
        if node.finish_on_key and node.finish_on_key in key:
            report.add(
                "IVR008",
                ERROR,
                node,
                f'choice "{key}" contains the finish key "{node.finish_on_key}"',
                "pick another key or set finish_on_key",
            )
        if node.input == "speech":
            report.add(
                "IVR008",
                ERROR,
                node,
                f'choice "{key}" cannot be pressed: input is speech',
                'use input="dtmf speech"',
            )
    if node.key_length() is None:
        report.add(
            "IVR008",
            WARNING,
            node,
            "choices have different lengths, so callers must press the finish key or wait",
            "give every key the same number of digits",
        )
    seen_words: set[str] = set()
    for word in node.words:
        if word in seen_words:
            report.add("IVR008", ERROR, node, f'word "{word}" is listed twice', "remove one")
        seen_words.add(word)


def check_global_keys(report: Reporter, flow: type[Flow], states: dict[str, n.Node]) -> None:
    """IVR008: keys that work in every menu must be enterable in each one."""
    for node in states.values():
        if not isinstance(node, n.Menu):
            continue
        keys = flow.global_keys_for(node)
        for key in keys:
            if node.finish_on_key and node.finish_on_key in key:
                report.add(
                    "IVR008",
                    ERROR,
                    node,
                    f'global key "{key}" contains the finish key "{node.finish_on_key}", '
                    "so it can never be entered here",
                    "set another finish_on_key on the menu, or global_keys=False",
                )
        if node.key_length() == 1 and any(len(key) > 1 for key in keys):
            report.add(
                "IVR008",
                WARNING,
                node,
                "a multi-digit global key turns this one-digit menu into one that waits for "
                "the finish key",
                "make every global key one digit",
            )
