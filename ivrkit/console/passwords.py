"""Console password hashes: hashlib's scrypt (or PBKDF2), in a text form an env var can hold.

``scrypt$16384$8$1$<salt b64>$<hash b64>`` or ``pbkdf2_sha256$600000$<salt b64>$<hash b64>``.
Only the hash lives in the environment (``IVRKIT_CONSOLE_PASSWORD_HASH``), so a leaked
environment does not give the password away; make one with ``ivrkit console --hash-password``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from ivrkit.errors import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000
FORMATS = "scrypt$N$r$p$SALT$HASH or pbkdf2_sha256$ITERATIONS$SALT$HASH (base64)"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, method: str = "scrypt") -> str:
    """A new salted hash of ``password`` in the form ``verify_password`` reads."""
    if not password:
        raise ValueError("an empty password cannot protect the console")
    salt = secrets.token_bytes(16)
    if method == "scrypt":
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
        )
        return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"
    if method == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ITERATIONS)
        return f"pbkdf2_sha256${PBKDF2_ITERATIONS}${_b64(salt)}${_b64(digest)}"
    raise ValueError(f"unknown password hash method {method!r}: use scrypt or pbkdf2_sha256")


def check_hash_format(encoded: str) -> None:
    """Refuse a malformed IVRKIT_CONSOLE_PASSWORD_HASH at start-up, not at the first sign-in."""
    try:
        _parse(encoded)
    except (ValueError, TypeError):
        raise ConfigError(
            f"IVRKIT_CONSOLE_PASSWORD_HASH is not a password hash ivrkit reads: expected "
            f"{FORMATS}; make one with `ivrkit console --hash-password`"
        ) from None


def _parse(encoded: str) -> tuple[str, list[int], bytes, bytes]:
    parts = encoded.strip().split("$")
    if parts[0] == "scrypt" and len(parts) == 6:
        numbers = [int(p) for p in parts[1:4]]
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5])
    elif parts[0] == "pbkdf2_sha256" and len(parts) == 4:
        numbers = [int(parts[1])]
        salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3])
    else:
        raise ValueError(encoded)
    if not salt or not digest or min(numbers) < 1:
        raise ValueError(encoded)
    return parts[0], numbers, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; compared in constant time."""
    try:
        method, numbers, salt, digest = _parse(encoded)
    except (ValueError, TypeError):
        return False
    if method == "scrypt":
        n, r, p = numbers
        computed = hashlib.scrypt(
            password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest), maxmem=2**27
        )
    else:
        computed = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), salt, numbers[0], dklen=len(digest)
        )
    return hmac.compare_digest(computed, digest)
