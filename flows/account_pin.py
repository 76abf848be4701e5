"""Account look-up: account number then PIN, by keypad or voice, with a lock-out.

Both entries are caller secrets: they are never logged or stored in clear. The account
number is kept encrypted (a parent flow may read it back with ``reveal``), the PIN only as
the verdict that it was right. Serving this flow needs IVRKIT_SECRET_KEY.
"""

from ivrkit import Call, Collect, Flow, Hangup, Retries, Return, Say, reveal

# A real line would ask the billing system; the demo keeps two accounts in code.
DEMO_ACCOUNTS = {"12345678": "4321", "87654321": "1111"}


def known_account(value: str, call: Call) -> bool:
    return value in DEMO_ACCOUNTS


def pin_matches(value: str, call: Call) -> bool:
    return DEMO_ACCOUNTS.get(reveal(call.data["account"])) == value


class AccountPin(Flow):
    """Verifies the caller; used alone or as a sub-flow of another line."""

    sensitive = ("account", "pin")

    account = Collect(
        "Please enter or say your eight digit account number, then press pound.",
        short_prompt="Your eight digit account number, please.",
        input="dtmf speech",
        digits=8,
        validate=known_account,
        confirm="You entered {value}. Press 1 if that is right, or 2 to enter it again.",
        save_as="account",
        keep="encrypted",
        retries=Retries(
            no_input=3,
            no_match=3,
            give_up="transfer_help",
            no_match_prompt="Sorry, I could not find that account.",
        ),
        then="pin",
    )
    pin = Collect(
        "Please enter your four digit PIN.",
        digits=4,
        validate=pin_matches,
        save_as="pin_ok",
        retries=Retries(
            no_input=3, no_match=3, give_up="locked", no_match_prompt="That PIN is not right."
        ),
        then="verified",
    )
    verified = Say("Thank you, you are verified.", then="done")
    done = Return()
    locked = Say(
        "For your security this account is now locked. Please visit acme dot com to unlock it.",
        then=Hangup("Goodbye."),
    )
    transfer_help = Say("Let me get someone to help you.", then=Hangup())
