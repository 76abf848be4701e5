"""Acme's main number: menu, sales, support queue in business hours, voicemail, operator."""

from datetime import date

from ivrkit import (
    REPEAT,
    BusinessHours,
    Call,
    Dial,
    Enqueue,
    Flow,
    Hangup,
    Menu,
    Play,
    Record,
    Retries,
    Say,
    decision,
)

SUPPORT_HOURS = BusinessHours(
    "America/New_York",
    {"mon-fri": "09:00-17:00", "sat": "10:00-14:00"},
    holidays=[date(2026, 12, 25), date(2027, 1, 1)],
)
HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"


class SupportLine(Flow):
    """The number on Acme's website."""

    number = "+15005550006"
    global_keys = {"0": "operator", "*": REPEAT}
    fallback_number = "+15005550199"

    welcome = Say("Thanks for calling Acme.", then="main_menu")
    main_menu = Menu(
        "For sales press 1. For support press 2. To leave a message press 3. "
        "For an operator press 0. To hear this again press star.",
        short_prompt="Press 1 for sales, 2 for support, 3 for a message, 0 for an operator.",
        choices={"1": "sales", "2": "support_hours", "3": "voicemail"},
        words={"sales": "sales", "support": "support_hours", "message": "voicemail"},
        retries=Retries(no_input=3, no_match=3, give_up="operator"),
    )
    sales = Dial(
        "+15005550111",
        timeout=20,
        caller_id="+15005550006",
        on={"busy": "voicemail", "no-answer": "voicemail", "failed": "voicemail"},
    )
    support_queue = Enqueue(
        "support",
        prompt="All our agents are busy. Please hold.",
        hold=[Say("Your call is important to us."), Play(HOLD_MUSIC)],
        on={
            "leave": "voicemail",
            "queue-full": "voicemail",
            "error": "voicemail",
            "system-error": "voicemail",
        },
    )
    closed = Say("Support is open Monday to Friday 9 to 5, and Saturday 10 to 2.", then="voicemail")
    voicemail = Record(
        "Please leave a message after the beep. Press pound when you are done.",
        max_length=120,
        finish_on_key="#",
        save_as="voicemail",
        then="thanks",
        on_empty="no_message",
    )
    thanks = Say("Thank you, we will call you back.", then=Hangup())
    no_message = Say("We did not get a message.", then="goodbye")
    operator = Dial("+15005550199", on={"*": "voicemail"})
    goodbye = Hangup("Goodbye.")

    @decision("support_hours")
    def route_support(self, call: Call) -> str:
        return "support_queue" if SUPPORT_HOURS.is_open(call.now) else "closed"
