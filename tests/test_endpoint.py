"""The ASGI adapter every webhook endpoint runs in: whatever happens, a proper answer."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

import httpx

from ivrkit.app import Answer, Endpoint
from ivrkit.flow import DEFAULT_APOLOGY
from ivrkit.webhook import Refused


async def broken(scope, receive) -> Answer:
    raise KeyError("a bug of ours")


async def refusing(scope, receive) -> Answer:
    raise Refused(418, "no tea here")


async def post(app, path="/voice/x"):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ivr.test") as client:
        return await client.post(path, data={"CallSid": "CA1"})


async def test_a_bug_behind_a_twiml_endpoint_still_answers_the_apology(caplog):
    with caplog.at_level(logging.ERROR, "ivrkit.app"):
        response = await post(Endpoint(broken, frozenset({"POST"}), twiml_answer=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.text)
    assert [child.tag for child in root] == ["Say", "Hangup"]
    assert root.find("Say").text == DEFAULT_APOLOGY
    assert "a bug of ours" in caplog.text


async def test_a_bug_behind_an_informational_callback_is_a_500_twilio_only_logs():
    response = await post(Endpoint(broken, frozenset({"POST"}), twiml_answer=False))
    assert response.status_code == 500


async def test_a_refusal_is_its_status_and_reason(caplog):
    with caplog.at_level(logging.WARNING, "ivrkit.app"):
        response = await post(Endpoint(refusing, frozenset({"POST"}), twiml_answer=True))
    assert response.status_code == 418
    assert response.text == "no tea here\n"
    assert "refused POST /voice/x" in caplog.text
