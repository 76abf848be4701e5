"""Signatures against the reference's vectors and twilio-python's RequestValidator."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from twilio.request_validator import RequestValidator

from simulator import Signer, compute_signature, signing_url

PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_reference_vector_example_com():
    params = {**PARAMS, "Caller": "+14158675310", "From": "+14158675310"}
    url = "https://example.com/myapp.php?foo=1&bar=2"
    assert compute_signature("12345", url, params) == "L/OH5YylLD5NRKLltdqwSvS0BnU="


def test_twilio_python_vector_and_port_is_dropped_for_https():
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert compute_signature("12345", url, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert compute_signature("12345", with_port, PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # The reference's with-port vector is what signing the raw URL (port kept) would give.
    raw = with_port + "".join(k + v for k, v in sorted(PARAMS.items()))
    digest = hmac.new(b"12345", raw.encode(), hashlib.sha1).digest()
    assert base64.b64encode(digest).decode() == "kvajT1Ptam85bY51eRf/AJRuM3w="


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:p@host.example:8443/a?b=1#rt=200", "https://host.example/a?b=1"),
        ("http://127.0.0.1:8000/voice?x=1", "http://127.0.0.1:8000/voice?x=1"),
        ("http://host/voice#ct=100", "http://host/voice"),
    ],
)
def test_signing_url(url, expected):
    assert signing_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["https://example.com/ivr?state=menu&step=2", "http://127.0.0.1:8123/voice", "https://x.io/"],
)
def test_accepted_by_twilio_request_validator(url):
    params = {"b": "2", "a": "1", "Z": "0", "SpeechResult": "hello world ü", "Empty": ""}
    validator = RequestValidator("secret-token")
    assert validator.validate(url, params, Signer("secret-token").sign(url, params))
    assert not validator.validate(url, params, Signer("other-token").sign(url, params))


def test_names_sorted_in_byte_order():
    # "Z" (0x5A) sorts before "a" (0x61): case-sensitive byte order, not alphabetical.
    params = {"a": "1", "Z": "2"}
    expected = compute_signature("t", "https://h/", [("Z", "2"), ("a", "1")])
    assert compute_signature("t", "https://h/", params) == expected
    payload = b"https://h/Z2a1"
    assert expected == base64.b64encode(hmac.new(b"t", payload, hashlib.sha1).digest()).decode()


def test_repeated_names_sorted_and_deduplicated():
    pairs = [("k", "b"), ("k", "a"), ("k", "b")]
    payload = b"https://h/kakb"
    digest = base64.b64encode(hmac.new(b"t", payload, hashlib.sha1).digest()).decode()
    assert compute_signature("t", "https://h/", pairs) == digest


def test_get_signs_the_full_url_only():
    url = "https://h/voice?CallSid=CA1&From=%2B1555"
    validator = RequestValidator("t")
    assert validator.validate(url, {}, compute_signature("t", url))
