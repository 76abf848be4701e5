"""``ivrkit check``'s look for caller secrets that a flow forgot to mark sensitive.

Kept apart from the load-time rules (:mod:`ivrkit.validation`): a name is only a hint, so
this is a warning of the checker, never an error that stops a flow from loading.
"""

from __future__ import annotations

from typing import Any

from ivrkit import nodes as n
from ivrkit.sensitive import keep_mode
from ivrkit.validation import WARNING, Finding, relative_path

CODE = "IVR050"
SECRET_WORDS = ("pin", "password", "passcode", "card", "account", "ssn", "cvv", "cvc", "iban")
"""Words in a Collect's state name or save_as key that say the entry is a secret."""


def looks_secret(name: str) -> bool:
    """'pin_ok', 'card_number', 'accountnumber' -> True; 'requested_date', 'spinner' -> False."""
    for word in name.lower().split("_"):
        if word in SECRET_WORDS or any(
            word.startswith(secret) for secret in SECRET_WORDS if len(secret) > 3
        ):
            return True
    return False


def secret_findings(flow: Any) -> list[Finding]:
    """A warning for each Collect that looks like it takes a secret but is not sensitive."""
    found = []
    for name, node in flow.states().items():
        if not isinstance(node, n.Collect) or keep_mode(flow, node) is not None:
            continue
        if looks_secret(name) or looks_secret(node.save_as):
            file, line = node.defined_at
            found.append(
                Finding(
                    code=CODE,
                    severity=WARNING,
                    file=relative_path(file),
                    line=line,
                    flow=flow.__name__,
                    state=name,
                    message=(
                        f'"{name}" (save_as "{node.save_as}") looks like a caller secret but is '
                        "stored, logged and read back in clear"
                    ),
                    fix='add sensitive=True (or keep="hash" / keep="encrypted") to the Collect',
                )
            )
    return found
