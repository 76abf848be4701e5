"""Acme's main number: menu, sales, support queue in business hours, voicemail, operator,
and an assistant (a ConversationRelay agent) that answers simple questions and hands
billing questions to the billing menu with the account number it heard."""

from dataclasses import dataclass
from datetime import date

from ivrkit import (
    REPEAT,
    Agent,
    BusinessHours,
    Call,
    Dial,
    Enqueue,
    Flow,
    Hangup,
    Intent,
    KeywordAgent,
    Menu,
    Play,
    Record,
    Retries,
    Say,
    decision,
    reveal,
)

SUPPORT_HOURS = BusinessHours(
    "America/New_York",
    {"mon-fri": "09:00-17:00", "sat": "10:00-14:00"},
    holidays=[date(2026, 12, 25), date(2027, 1, 1)],
)
HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"

ASSISTANT = KeywordAgent(
    [
        Intent(
            "billing",
            words=("bill", "billing", "invoice", "charge", "charged"),
            answer="I can help with your bill.",
            ask="What is your eight digit account number?",
            collect="account",
            digits=(8, 8),
            handoff="billing",
        ),
        Intent(
            "hours",
            words=("hours", "open", "opening", "closed", "close"),
            answer="Support is open Monday to Friday 9 to 5, and Saturday 10 to 2.",
        ),
        Intent(
            "person",
            words=("person", "human", "agent", "operator", "someone"),
            answer="Sure, let me put you through.",
            handoff="operator",
        ),
    ],
    keys={"0": "operator"},
    give_up="operator",
    opening="Say what you need, or press 0 for an operator.",
)


@dataclass
class BillingHandoff:
    """What the assistant hands to the billing menu: the account number it heard."""

    account: str

    def __post_init__(self) -> None:
        if not (self.account.isascii() and self.account.isdigit() and len(self.account) == 8):
            raise ValueError("account is 8 digits")


def balance_text(call: Call) -> str:
    # The account is kept encrypted; only its last two digits are ever said (or stored).
    ending = ", ".join(reveal(call.data["account"])[-2:])
    return f"The balance of the account ending in {ending} is 42 dollars."


class SupportLine(Flow):
    """The number on Acme's website."""

    number = "+15005550006"
    global_keys = {"0": "operator", "*": REPEAT}
    fallback_number = "+15005550199"

    welcome = Say("Thanks for calling Acme.", then="main_menu")
    main_menu = Menu(
        "For sales press 1. For support press 2. To leave a message press 3. "
        "Or just say what you need. For an operator press 0. To hear this again press star.",
        short_prompt="Press 1 for sales, 2 for support, 3 for a message, 0 for an operator.",
        choices={"1": "sales", "2": "support_hours", "3": "voicemail"},
        words={
            "sales": "sales",
            "support": "support_hours",
            "message": "voicemail",
            "question": "assistant",
            "bill": "assistant",
        },
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
    assistant = Agent(
        ASSISTANT,
        welcome="Sure.",
        pass_speech=True,
        on={"billing": "billing_menu", "operator": "operator", "*": "main_menu"},
        on_failure="operator",
        on_hangup=Hangup(),
        handoff={"billing": BillingHandoff},
        secrets=("account",),
        keep="encrypted",
        dtmf_detection=True,
        hints=("bill", "invoice", "opening hours"),
    )
    billing_menu = Menu(
        "Billing. To hear your balance press 1. For an operator press 0.",
        choices={"1": "balance"},
        retries=Retries(no_input=2, no_match=2, give_up="operator"),
    )
    balance = Say(balance_text, then="billing_menu")
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
