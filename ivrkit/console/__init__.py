"""The web console at /console: flows with their traffic, calls, timelines and a dialpad.

Off unless ``IVRKIT_CONSOLE_TOKEN`` or ``IVRKIT_CONSOLE_PASSWORD_HASH`` is set, or the app
runs with ``--insecure-dev`` (then open without a sign-in, unless a token is set too).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ivrkit.console.config import ConsoleConfig
from ivrkit.console.passwords import hash_password, verify_password
from ivrkit.console.routes import PREFIX, Console

__all__ = ["PREFIX", "Console", "ConsoleConfig", "create_console", "hash_password",
           "verify_password"]


def create_console(ivr: Any, app: Callable[[], Any]) -> Console | None:
    """The console of ``ivr`` (an ``IvrApp``), or None when it is off."""
    config = ConsoleConfig.from_settings(ivr.settings)
    if not config.enabled:
        return None
    return Console(ivr, config, app)
