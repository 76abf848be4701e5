"""Acme's bill payment line: the caller hears the balance and pays it by card with <Pay>.

Twilio collects the card; this app keeps only the confirmation code, the card type and the
masked number (``call.data["payment"]``), and the event log shows the card fields masked.
Pressing star during the payment cancels it.
"""

from ivrkit import Call, Flow, Hangup, Pay, PayPrompt, Say

DEMO_BALANCE = "42.50"
"""A real line would look the balance up (a decision before the Pay); the demo has one bill."""


def confirmation(call: Call) -> str:
    code = "".join(c for c in call.data["payment"].get("confirmation_code", "") if c.isalnum())
    # The last six, letter by letter, so the caller can write them down.
    return (
        "Thank you, your payment is complete. Your confirmation code ends in "
        f"{', '.join(code[-6:])}."
    )


class PayBill(Flow):
    """Pay the current bill by card."""

    welcome = Say(
        "Welcome to Acme bill payment. Your balance is 42 dollars and 50 cents. "
        "Press star at any time to cancel.",
        then="payment",
    )
    payment = Pay(
        charge_amount=DEMO_BALANCE,
        description="Acme bill",
        max_attempts=2,
        prompts=[
            PayPrompt("payment-card-number", "Please enter your card number."),
            PayPrompt(
                "payment-card-number",
                "That card number is not valid. Please enter it again.",
                error_type=["invalid-card-number"],
                attempt=[2],
            ),
            PayPrompt(
                "payment-card-number",
                "We accept Visa, Mastercard and American Express. Please enter another card.",
                error_type=["invalid-card-type"],
                attempt=[2],
            ),
            PayPrompt("expiration-date", "Enter the expiry date: two digits for the month, "
                      "then two for the year."),  # fmt: skip
            PayPrompt("security-code", "Enter the security code on the back of the card."),
            PayPrompt("security-code", "Enter the four digit code on the front of the card.",
                      card_type=["amex"]),  # fmt: skip
            PayPrompt("postal-code", "Enter your billing zip code."),
            PayPrompt("payment-processing", "Please wait while we process your payment."),
        ],
        on={
            "success": "paid",
            "caller-interrupted-with-star": "cancelled",
            "*": "not_paid",
        },
    )
    paid = Say(confirmation, then=Hangup("Goodbye."))
    cancelled = Say("Your payment was cancelled; nothing was charged.", then=Hangup("Goodbye."))
    not_paid = Say(
        "Sorry, we could not take your payment. Please try again later, or pay at acme dot com.",
        then=Hangup("Goodbye."),
    )
