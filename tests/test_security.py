"""Our one-HMAC signature check agrees with twilio's own RequestValidator."""

from __future__ import annotations

import random
import string

import pytest
from twilio.request_validator import RequestValidator

from ivrkit.masking import mask_number, mask_params
from ivrkit.security import SignatureChecker

VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}


def test_twilio_python_published_vector():
    checker = SignatureChecker("12345")
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    pairs = list(VECTOR_PARAMS.items())
    assert checker.compute(url, pairs) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert checker.valid(url, pairs, "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
    # Twilio may have signed the URL with the port: the variant is accepted too.
    assert checker.valid(
        "https://mycompany.com:443/myapp.php?foo=1&bar=2", pairs, "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )
    assert not checker.valid(url, pairs, "RSOYDt4T1cUTdK1PDd93/VVr8B8X")
    assert not checker.valid(url, pairs, "")


@pytest.mark.parametrize("seed", range(25))
def test_agrees_with_request_validator_on_random_params(seed):
    rng = random.Random(seed)
    token = "".join(rng.choices(string.ascii_letters, k=32))
    params = {
        "".join(rng.choices(string.ascii_letters, k=rng.randint(1, 12))): "".join(
            rng.choices(string.printable, k=rng.randint(0, 20))
        )
        for _ in range(rng.randint(0, 30))
    }
    url = f"https://ivr{seed}.example.com/voice/x/action?state=s&step={seed}"
    expected = RequestValidator(token).compute_signature(url, params)
    assert SignatureChecker(token).compute(url, list(params.items())) == expected
    assert RequestValidator(token).validate(url, params, expected)


def test_masking_keeps_enough_to_tell_calls_apart():
    assert mask_number("+14155550123") == "+1415*****23"
    assert mask_number("client:alice") == "client:al***"
    assert mask_number("anonymous") == "anon***us"
    assert mask_number("266696687") == "2666***87"
    assert mask_params({"From": "+14155550123", "Digits": "1", "CallToken": "secret"}) == {
        "From": "+1415*****23",
        "Digits": "1",
        "CallToken": "***",
    }


@pytest.mark.parametrize(
    "body",
    [
        "CallSid=CA1&From=%2B14155550100&SpeechResult=sales+please&Empty=&Flag",
        "a=1&a=2&b=%26%3D&&c=%E2%82%AC+x",
        "",
    ],
)
def test_form_parser_matches_the_standard_library(body):
    from urllib.parse import parse_qsl

    from ivrkit.webhook import FormDecoder

    decoder = FormDecoder(size=2)
    expected = parse_qsl(body, keep_blank_values=True)
    assert decoder.decode(body) == expected
    assert decoder.decode(body) == expected  # again, partly from the memo (emptied when full)


def test_repeated_names_are_signed_as_twilio_signs_them():
    """Names sorted, each name's values sorted and de-duplicated (twilio's own rule)."""
    from starlette.datastructures import ImmutableMultiDict

    pairs = [("b", "2"), ("a", "z"), ("a", "y"), ("a", "z"), ("c", "")]
    url = "https://ivr.example.com/voice/x/action?state=s&step=1"
    expected = RequestValidator("tok").compute_signature(url, ImmutableMultiDict(pairs))
    assert SignatureChecker("tok").compute(url, pairs) == expected
    assert SignatureChecker("tok").compute(url, pairs[:2]) != expected
