"""Caller secrets (PINs, account and card numbers): what is kept of them, and in which form.

A :class:`~ivrkit.nodes.Collect` is *sensitive* when it says so (``sensitive=True``, or any
``keep=``) or when its flow names its state or its ``save_as`` key in ``Flow.sensitive``.
Its entry then

- reaches the ``validate=`` callable in clear, in memory only;
- is kept in ``call.data[save_as]`` in the form its ``keep`` names:

  ``"verdict"`` (the default)
      ``True``: only that the caller made a valid entry. Needs no key.
  ``"hash"``
      ``"hmac-sha256:<salt>:<mac>"``, an HMAC-SHA256 of a random salt and the value, keyed
      by ``IVRKIT_SECRET_KEY``: compare a later entry with :func:`matches`.
  ``"encrypted"``
      ``"fernet:<token>"``, authenticated encryption (Fernet: AES-128-CBC + HMAC-SHA256)
      under a key derived from ``IVRKIT_SECRET_KEY``: read it back with :func:`reveal`.

- while it waits for the caller to confirm a read-back (``confirm=``), is stored encrypted,
  so a sensitive Collect with ``confirm=`` needs ``IVRKIT_SECRET_KEY`` too;
- is masked as ``****`` in the event log (``Digits``, ``SpeechResult``), in the stored
  TwiML (the read-back the caller heard) and therefore in ``ivrkit events``. A retried
  webhook of the read-back step is answered from the stored TwiML with the read-back filled
  in again from the encrypted entry, so the caller hears the same question twice.

A flow that needs the key and does not find it fails when the app is created (at start-up),
not at the first call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any
from xml.sax.saxutils import escape

from cryptography.fernet import Fernet, InvalidToken

from ivrkit import nodes as n
from ivrkit.errors import ConfigError, FlowRuntimeError
from ivrkit.relay.node import Agent

KEY_ENV = "IVRKIT_SECRET_KEY"
MIN_KEY_LENGTH = 32
MASK = "****"
DEFAULT_KEEP = "verdict"
INPUT_FIELDS = ("Digits", "SpeechResult", "UnstableSpeechResult", "HandoffData")
"""Webhook fields that carry what the caller keyed or said (or an agent heard)."""

_HASH_PREFIX = "hmac-sha256:"
_SEALED_PREFIX = "fernet:"
_KEY_HINT = (
    f"set {KEY_ENV} to a random secret of at least {MIN_KEY_LENGTH} characters, e.g. the output "
    'of: python -c "import secrets; print(secrets.token_urlsafe(32))" (keep it: what was '
    "hashed or encrypted under it cannot be read without it)"
)


class Keyring:
    """The two keys derived from ``IVRKIT_SECRET_KEY``: one to hash, one to encrypt.

    Deriving both from one secret keeps deployment to one variable, and a hash never
    shares a key with the cipher.
    """

    def __init__(self, secret: str) -> None:
        if len(secret) < MIN_KEY_LENGTH:
            raise ConfigError(f"{KEY_ENV} is shorter than {MIN_KEY_LENGTH} characters; {_KEY_HINT}")
        root = secret.encode()
        self._hash_key = hmac.new(root, b"ivrkit hash v1", hashlib.sha256).digest()
        cipher_key = hmac.new(root, b"ivrkit encrypt v1", hashlib.sha256).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(cipher_key))

    def digest(self, value: str) -> str:
        """A salted, keyed hash of ``value``: equal values give different strings."""
        salt = secrets.token_bytes(16)
        return f"{_HASH_PREFIX}{salt.hex()}:{self._mac(salt, value)}"

    def matches(self, kept: str, candidate: str) -> bool:
        """Whether ``candidate`` is the value ``kept`` (a :meth:`digest`) was made from."""
        if not kept.startswith(_HASH_PREFIX):
            raise FlowRuntimeError(
                f"{kept[:16]!r}... is not a keep='hash' value; matches() compares those only"
            )
        salt_hex, _, mac = kept[len(_HASH_PREFIX) :].partition(":")
        return hmac.compare_digest(self._mac(bytes.fromhex(salt_hex), candidate), mac)

    def seal(self, value: str) -> str:
        """``value`` encrypted and authenticated, as text that fits in JSON."""
        return _SEALED_PREFIX + self._fernet.encrypt(value.encode()).decode()

    def reveal(self, kept: str) -> str:
        """The clear value of a :meth:`seal` result."""
        if not kept.startswith(_SEALED_PREFIX):
            raise FlowRuntimeError(
                "reveal() reads keep='encrypted' values only; this value is not one"
            )
        try:
            return self._fernet.decrypt(kept[len(_SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise FlowRuntimeError(
                f"an encrypted caller entry cannot be read: it was encrypted under another "
                f"{KEY_ENV}, or altered; restore the key it was written with"
            ) from None

    def _mac(self, salt: bytes, value: str) -> str:
        return hmac.new(self._hash_key, salt + value.encode(), hashlib.sha256).hexdigest()


_keyrings: dict[str, Keyring] = {}


def keyring(env: Mapping[str, str] | None = None) -> Keyring:
    """The keyring of the current ``IVRKIT_SECRET_KEY`` (derived once per key)."""
    secret = (os.environ if env is None else env).get(KEY_ENV, "")
    found = _keyrings.get(secret)
    if found is None:
        if not secret:
            raise ConfigError(f"{KEY_ENV} is not set; {_KEY_HINT}")
        found = _keyrings[secret] = Keyring(secret)
    return found


def reveal(kept: str) -> str:
    """The clear value of a ``keep="encrypted"`` entry, e.g. ``reveal(call.data["account"])``."""
    return keyring().reveal(kept)


def matches(kept: str, candidate: str) -> bool:
    """Whether ``candidate`` equals the ``keep="hash"`` entry ``kept`` (constant time)."""
    return keyring().matches(kept, candidate)


# -- which entries are sensitive ------------------------------------------------------------


def keep_mode(flow: Any, node: n.Node) -> str | None:
    """How a state's entry is kept: None when it is not sensitive."""
    if not isinstance(node, n.Collect):
        return None
    listed: Iterable[str] = getattr(flow, "sensitive", ())
    if node.sensitive or node.name in listed or node.save_as in listed:
        return node.keep or DEFAULT_KEEP
    return None


def needs_key(flow: Any, node: n.Node) -> bool:
    if isinstance(node, Agent):  # hand-off fields named in secrets=, kept as keep= says
        return bool(node.secrets) and node.keep in ("hash", "encrypted")
    mode = keep_mode(flow, node)
    return mode in ("hash", "encrypted") or (mode is not None and node.confirm is not None)  # type: ignore[attr-defined]


def check_flows(flows: Iterable[Any]) -> frozenset[str]:
    """Check every flow's ``sensitive`` list; return the sensitive state names.

    Raises :class:`FlowRuntimeError` for a ``Flow.sensitive`` name that matches nothing
    (like an unknown sub-flow, found when the flows are put together).
    """
    problems: list[str] = []
    secret_states: set[str] = set()
    for flow in flows:
        problems += _listed_problems(flow)
        secret_states.update(
            name
            for name, node in flow.states().items()
            if keep_mode(flow, node) is not None or (isinstance(node, Agent) and node.sensitive)
        )
    if problems:
        raise FlowRuntimeError("\n".join(problems))
    return frozenset(secret_states)


def require_keys(flows: Iterable[Any]) -> None:
    """Fail at start-up, not at the first call, when a flow needs IVRKIT_SECRET_KEY.

    Raises :class:`ConfigError` naming the first state that needs the key, and why.
    """
    for flow in flows:
        for name, node in flow.states().items():
            if not needs_key(flow, node):
                continue
            try:
                keyring()
            except ConfigError as error:
                file, line = node.defined_at
                why = "keeps it encrypted while the caller confirms the read-back"
                if node.keep in ("hash", "encrypted"):
                    why = f'keeps it as keep="{node.keep}"'
                raise ConfigError(
                    f"{file}:{line}: {flow.__name__}.{name} is a sensitive entry and {why}, "
                    f"which needs a key: {error}"
                ) from None


def _listed_problems(flow: Any) -> list[str]:
    listed = getattr(flow, "sensitive", ())
    file, line = flow.__ivrkit_source__
    if isinstance(listed, str):
        return [
            f"{file}:{line}: {flow.__name__}.sensitive is the text {listed!r}; write a tuple "
            f"of names: sensitive = ({listed!r},)"
        ]
    collects = {name: node for name, node in flow.states().items() if isinstance(node, n.Collect)}
    known = set(collects) | {node.save_as for node in collects.values()}
    return [
        f"{file}:{line}: {flow.__name__}.sensitive names {name!r}, which is neither a Collect "
        f"state nor a save_as key of the flow (known: {', '.join(sorted(known)) or 'none'})"
        for name in listed
        if name not in known
    ]


# -- what is stored ---------------------------------------------------------------------------


def kept(mode: str, value: str) -> Any:
    """The form of a valid entry that goes into ``call.data``."""
    if mode == "hash":
        return keyring().digest(value)
    if mode == "encrypted":
        return keyring().seal(value)
    return True


def open_pending(counters: dict[str, Any]) -> None:
    """Decrypt the entry awaiting confirmation, in memory, for this webhook's work."""
    pending = counters.get("pending")
    if isinstance(pending, str) and pending.startswith(_SEALED_PREFIX):
        counters["pending"] = keyring().reveal(pending)


def seal_pending(counters: dict[str, Any]) -> None:
    """Encrypt the entry awaiting confirmation before the record is stored (or cached)."""
    pending = counters.get("pending")
    if isinstance(pending, str) and not pending.startswith(_SEALED_PREFIX):
        counters["pending"] = keyring().seal(pending)


def spoken(value: str) -> str:
    """'1234' -> '1, 2, 3, 4': a read-back a text-to-speech voice says digit by digit."""
    return ", ".join(value)


def unmask_readback(stored: str, confirm: str, pending: str) -> str:
    """The stored (masked) answer with the read-back filled in again, for a replay."""
    value = keyring().reveal(pending) if pending.startswith(_SEALED_PREFIX) else pending
    return stored.replace(
        escape(confirm.format(value=MASK)), escape(confirm.format(value=spoken(value)))
    )


def mask_input(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` with what the caller keyed or said replaced by ``****``."""
    masked = dict(params)
    for name in INPUT_FIELDS:
        if masked.get(name):
            masked[name] = MASK
    return masked
