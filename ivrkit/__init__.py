"""ivrkit: code-first phone IVRs on Twilio.

Write a call flow as a Python class; ivrkit validates it when it loads, compiles each state
to TwiML, serves Twilio's webhooks and keeps each call's state in SQL.
"""

from ivrkit import outbound as outbound  # ivrkit.outbound.place_call, call_outcome
from ivrkit.app import create_app
from ivrkit.call import Call, CallerInfo
from ivrkit.config import Settings
from ivrkit.errors import (
    CallerIdError,
    ConfigError,
    FlowDefinitionError,
    FlowLoadError,
    FlowRuntimeError,
    InvalidNumberError,
    IvrkitError,
    PlaceCallError,
    RateLimitedError,
    TwilioAuthError,
)
from ivrkit.flow import Flow
from ivrkit.hours import BusinessHours
from ivrkit.loader import load_flows
from ivrkit.nodes import (
    REPEAT,
    Client,
    Collect,
    Conference,
    Dial,
    Enqueue,
    Hangup,
    Menu,
    Number,
    Pause,
    Play,
    Queue,
    Record,
    Redirect,
    Reject,
    Repeat,
    Retries,
    Return,
    Say,
    Sip,
    SubFlow,
    decision,
)
from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign import Campaign, CampaignSettings
from ivrkit.pay import Pay, PayPrompt
from ivrkit.relay.keywords import Intent, KeywordAgent
from ivrkit.relay.node import Agent, Language
from ivrkit.relay.session import AgentSession
from ivrkit.sensitive import matches, reveal

__version__ = "0.1.0"

__all__ = [
    "REPEAT",
    "Agent",
    "AgentSession",
    "BusinessHours",
    "Call",
    "CallerIdError",
    "CallerInfo",
    "CallingHours",
    "Campaign",
    "CampaignSettings",
    "Client",
    "Collect",
    "Conference",
    "ConfigError",
    "Dial",
    "Enqueue",
    "Flow",
    "FlowDefinitionError",
    "FlowLoadError",
    "FlowRuntimeError",
    "Hangup",
    "Intent",
    "InvalidNumberError",
    "IvrkitError",
    "KeywordAgent",
    "Language",
    "Menu",
    "Number",
    "Pause",
    "Pay",
    "PayPrompt",
    "PlaceCallError",
    "Play",
    "Queue",
    "RateLimitedError",
    "Record",
    "Redirect",
    "Reject",
    "Repeat",
    "Retries",
    "Return",
    "Say",
    "Settings",
    "Sip",
    "SubFlow",
    "TwilioAuthError",
    "create_app",
    "decision",
    "load_flows",
    "matches",
    "reveal",
]


def __getattr__(name: str) -> object:
    """``End`` was a second name for Hangup; it still imports, with a warning, until 0.3."""
    if name == "End":
        import warnings

        warnings.warn(
            "ivrkit.End is deprecated and goes away in ivrkit 0.3: use Hangup (the same state)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Hangup
    raise AttributeError(f"module 'ivrkit' has no attribute {name!r}")
