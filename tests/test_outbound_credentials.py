"""Credentials for the Calls API: from the environment, an API key or the token, never shown."""

from __future__ import annotations

import logging

import pytest

from flows.appointment_reminder import AppointmentReminder
from ivrkit.errors import ConfigError, TwilioAuthError
from ivrkit.outbound import call_outcome, client_from_env, place_call
from simulator.pytest_plugin import TEST_ACCOUNT_SID
from tests.conftest import opened_store, reset_database

KEY, SECRET = "SK" + "4" * 32, "api-key-secret-never-shown"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "TWILIO_ACCOUNT_SID is not set"),
        ({"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID}, "TWILIO_AUTH_TOKEN is not set"),
        (
            {"TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID, "TWILIO_API_KEY": KEY},
            "TWILIO_API_KEY is set but TWILIO_API_SECRET is not",
        ),
        (
            {
                "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": "t",
                "IVRKIT_TWILIO_API_URL": "127.0.0.1:9400",
            },
            "IVRKIT_TWILIO_API_URL must start with https:// or http://",
        ),
    ],
)
def test_missing_or_wrong_settings_say_which(env, message):
    with pytest.raises(ConfigError, match=message):
        client_from_env(env)


async def test_an_api_key_places_calls_and_its_secret_is_never_logged(
    tmp_path, twilio_api_server, caplog
):
    twilio_api_server.api.api_keys = {KEY: SECRET}
    env = {
        "TWILIO_ACCOUNT_SID": TEST_ACCOUNT_SID,
        "TWILIO_API_KEY": KEY,
        "TWILIO_API_SECRET": SECRET,
        "IVRKIT_TWILIO_API_URL": twilio_api_server.url,
    }
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    await reset_database(url)
    async with opened_store(url) as store:
        with caplog.at_level(logging.DEBUG):
            sid = await place_call(
                AppointmentReminder,
                to="+14155550142",
                from_="+14155550100",
                data={"appointment": "Monday"},
                store=store,
                client=client_from_env(env),
                public_url="https://ivr.example.com",
            )
            outcome = await call_outcome(store, sid)
            assert outcome.data == {"appointment": "Monday"}
            wrong = client_from_env({**env, "TWILIO_API_SECRET": "not-the-secret"})
            with pytest.raises(TwilioAuthError) as refused:
                await place_call(
                    AppointmentReminder,
                    to="+14155550142",
                    from_="+14155550100",
                    store=store,
                    client=wrong,
                    public_url="https://ivr.example.com",
                )
        assert SECRET not in caplog.text
        assert "not-the-secret" not in caplog.text + str(refused.value)
        assert "+14155550142" not in caplog.text  # numbers masked
        assert sid in caplog.text
        twilio_api_server.wait_idle()
