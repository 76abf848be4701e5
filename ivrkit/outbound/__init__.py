"""Outbound calls: placing calls through Twilio's Calls API, and campaigns of them."""
