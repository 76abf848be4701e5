"""How a ConversationRelay session ended, read from the ``<Connect action>`` callback.

Twilio posts ``SessionStatus`` (``ended``: the app sent ``end``; ``completed``: the caller
hung up; ``failed``), and with ``ended`` the ``HandoffData`` string the app sent, verbatim.
ivrkit's sessions send ``{"handoff": "<key>", <fields>...}``; the fields are checked
against the state's schema for that key, and a hand-off that fails it goes to the ``"*"``
outcome with one log line naming the field (never its value: it may be a secret).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from ivrkit import sensitive
from ivrkit.relay.node import FAILED, STAR, Agent

log = logging.getLogger("ivrkit.relay")

HANDOFF_FIELD = "handoff"
"""The key of ``HandoffData`` that names the hand-off (the rest are its fields)."""
KEPT = "ivrkit:kept"
"""What ``HandoffData`` carries instead of a ``secrets=`` field: ivrkit checked the
hand-off and kept the secret in call.data before sending ``end``, so it never travels
through Twilio (nor sits in its request logs)."""


class HandoffProblem(ValueError):
    """Hand-off data that does not fit the state's schema."""


def select_handoff(
    node: Agent, params: Mapping[str, str], data: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The trigger the ``<Connect action>`` callback fires, and what goes into call.data
    (``data`` is call.data now: it holds the secrets the session kept)."""
    status = params.get("SessionStatus", "")
    duration = params.get("SessionDuration", "")  # ASCII digits when present (fields.py)
    info: dict[str, Any] = {
        "id": params.get("SessionId", ""),
        "status": status,
        "duration": int(duration) if duration else 0,
    }
    if status == "completed":
        return "session:completed", {node.save_as: info}
    if status != "ended":  # failed (fields.py refuses values Twilio does not send)
        info["error"] = params.get("ErrorCode", "")
        return "session:failed", {node.save_as: info}
    sid = params.get("CallSid", "")
    try:
        key, fields = _read(node, params.get("HandoffData", ""), data)
    except HandoffProblem as problem:
        log.warning('call %s: %s: hand-off refused, going to "*": %s', sid, node.name, problem)
        info["handoff"] = STAR
        info["refused"] = str(problem)
        return f"handoff:{STAR}", {node.save_as: info}
    if key == FAILED:
        info["error"] = str(fields.get("reason", "agent failed"))[:200]
        return "session:failed", {node.save_as: info}
    info["handoff"] = key
    for name in node.secrets.intersection(fields):
        if fields[name] == KEPT:
            del fields[name]  # kept in call.data by the session already
        else:
            fields[name] = sensitive.kept(node.keep, str(fields[name]))
    return f"handoff:{key}", {**fields, node.save_as: info}


def _read(
    node: Agent, raw: str, data: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        raise HandoffProblem("HandoffData is not JSON") from None
    if not isinstance(payload, dict):
        raise HandoffProblem("HandoffData is not a JSON object")
    key = payload.pop(HANDOFF_FIELD, None)
    if key == FAILED:
        return key, payload
    if not isinstance(key, str) or key not in node.on or key == STAR:
        shown = repr(key)[:40] if isinstance(key, str) else "missing"
        raise HandoffProblem(
            f"hand-off key {shown} is not one of {', '.join(node.handoff_keys()) or 'none'}"
        )
    kept = {name for name in node.secrets if payload.get(name) == KEPT}
    for name in sorted(kept):
        if data is None or name not in data:
            raise HandoffProblem(f"field {name!r} was not kept by the session")
    schema = node.schemas.get(key) or node.schemas.get(STAR)
    if schema is not None:
        check_schema(schema, payload, checked=kept)
    return key, payload


def seal_secrets(node: Agent, handoff: str) -> tuple[str, dict[str, Any]]:
    """What the session sends as ``HandoffData``, and the secrets to keep in call.data now.

    The hand-off is checked here, with the secrets in clear (in memory); the secrets are
    replaced by :data:`KEPT`. A hand-off that fails the check is sent with its secrets
    masked, so the ``<Connect action>`` refuses it too and the call goes to ``"*"``.
    """
    try:
        key, fields = _read(node, handoff)
    except HandoffProblem:
        payload = json.loads(handoff) if handoff else {}
        if isinstance(payload, dict):
            for name in node.secrets.intersection(payload):
                payload[name] = sensitive.MASK
        return json.dumps(payload), {}
    secret = node.secrets.intersection(fields)
    if key == FAILED or not secret:
        return handoff, {}
    kept = {name: sensitive.kept(node.keep, str(fields[name])) for name in secret}
    return json.dumps({HANDOFF_FIELD: key, **fields, **dict.fromkeys(secret, KEPT)}), kept


def check_schema(
    schema: type, payload: dict[str, Any], *, checked: frozenset[str] | set[str] = frozenset()
) -> None:
    """Raise :class:`HandoffProblem` when ``payload`` does not fit ``schema`` (a dataclass
    or TypedDict); a dataclass is also built, so its ``__post_init__`` checks run.
    Fields in ``checked`` were checked in clear when the session ended and are skipped."""
    hints = get_type_hints(schema)
    if dataclasses.is_dataclass(schema):
        required = {
            f.name
            for f in dataclasses.fields(schema)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
    else:
        required = set(getattr(schema, "__required_keys__", hints))
    for name in sorted(payload):
        if name not in hints:
            raise HandoffProblem(f"field {name[:40]!r} is not in {schema.__name__}")
        if name not in checked and not _fits(payload[name], hints[name]):
            raise HandoffProblem(
                f"field {name!r} of {schema.__name__} is not {_type_name(hints[name])} "
                f"(got {type(payload[name]).__name__})"
            )
    missing = sorted(required - set(payload))
    if missing:
        raise HandoffProblem(f"{schema.__name__} needs field {missing[0]!r}")
    if dataclasses.is_dataclass(schema) and not checked:
        try:
            schema(**payload)
        except (TypeError, ValueError) as error:
            raise HandoffProblem(f"{schema.__name__} refused it: {error}"[:200]) from None


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if origin is Literal:
        return value in get_args(hint)
    if origin in (list, tuple):
        args = get_args(hint)
        return isinstance(value, list) and all(
            _fits(item, args[0] if args else Any) for item in value
        )
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    if get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")
