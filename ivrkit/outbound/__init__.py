"""Outbound calls: place a call into a flow through Twilio's Calls API, tell a person from
an answering machine, and read what became of the call.

- :func:`place_call` (``ivrkit call`` on the command line) and :func:`call_outcome`;
- :mod:`~ivrkit.outbound.amd`: a flow's ``on_machine`` / ``on_answered_by`` routes;
- :mod:`~ivrkit.outbound.arrival`: a placed call's first webhook and its stored row;
- :mod:`~ivrkit.outbound.moves`: the AsyncAmd callback that moves a call a machine answered;
- :mod:`~ivrkit.outbound.credentials`: a twilio ``Client`` from the environment;
- :class:`Campaign` (``ivrkit campaign``): a contacts list called at a rate, within calling
  hours, with retries, stop and resume (``campaign``, ``campaign_store``, ``rate``,
  ``contacts``, ``calling_hours``, ``dialer``, ``twilio_dialer``).
"""

from ivrkit.outbound.amd import ANSWERED_BY, MACHINE_VALUES
from ivrkit.outbound.arrival import first_route, keep_answered_by, prepared, starting, wait_for_row
from ivrkit.outbound.calling_hours import CallingHours
from ivrkit.outbound.campaign import Campaign, CampaignReport, CampaignSettings
from ivrkit.outbound.campaign_store import CampaignStore
from ivrkit.outbound.contacts import Contact, ContactsError, read_contacts, read_do_not_call
from ivrkit.outbound.credentials import client_from_env
from ivrkit.outbound.dialer import CallRequest, Dialer
from ivrkit.outbound.moves import AmdCallbacks
from ivrkit.outbound.outcome import CallOutcome, call_outcome
from ivrkit.outbound.place import ASYNC_MARK, PLACED_MARK, call_parameters, place_call
from ivrkit.outbound.twilio_dialer import TwilioDialer

__all__ = [
    "ANSWERED_BY",
    "ASYNC_MARK",
    "MACHINE_VALUES",
    "PLACED_MARK",
    "AmdCallbacks",
    "CallOutcome",
    "CallRequest",
    "CallingHours",
    "Campaign",
    "CampaignReport",
    "CampaignSettings",
    "CampaignStore",
    "Contact",
    "ContactsError",
    "Dialer",
    "TwilioDialer",
    "call_outcome",
    "call_parameters",
    "client_from_env",
    "first_route",
    "keep_answered_by",
    "place_call",
    "prepared",
    "read_contacts",
    "read_do_not_call",
    "starting",
    "wait_for_row",
]
