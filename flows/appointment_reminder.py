"""An outbound reminder: confirm, cancel, or reschedule by entering a date, read back."""

from datetime import date

from ivrkit import Call, Collect, Flow, Hangup, Menu, Retries, Say


def _appointment(call: Call) -> str:
    return call.data.get("appointment", "your appointment tomorrow at 10 in the morning")


def valid_date(value: str, call: Call) -> bool:
    """MMDD in the future (this year or next)."""
    month, day = int(value[:2]), int(value[2:])
    for year in (call.now.year, call.now.year + 1):
        try:
            candidate = date(year, month, day)
        except ValueError:
            return False
        if candidate > call.now.date():
            return True
    return False


class AppointmentReminder(Flow):
    """Place it with ``ivrkit call flows/appointment_reminder.py --to ... --data appointment=...``
    (or ``ivrkit.outbound.place_call``): a person hears the menu; an answering machine gets
    a short message, left after the beep (Twilio's DetectMessageEnd)."""

    give_up = "no_answer_goodbye"
    on_machine = "leave_message"

    reminder = Menu(
        [
            Say(lambda call: f"Hello, this is Acme Dental reminding you of {_appointment(call)}."),
            Say("To confirm press 1. To cancel press 2. To pick another day press 3."),
        ],
        short_prompt="Press 1 to confirm, 2 to cancel, 3 for another day.",
        choices={"1": "confirmed", "2": "cancelled", "3": "new_date"},
        words={"confirm": "confirmed", "yes": "confirmed", "cancel": "cancelled"},
    )
    new_date = Collect(
        "Enter the new date as four digits, month then day. For March 5th, enter 0 3 0 5.",
        digits=4,
        validate=valid_date,
        confirm="You entered {value}. Press 1 to confirm that date, or 2 to enter another.",
        save_as="requested_date",
        retries=Retries(no_match_prompt="That is not a date in the future."),
        then="rescheduled",
    )
    confirmed = Say("Thank you, your appointment is confirmed.", then=Hangup("Goodbye."))
    cancelled = Say(
        "Your appointment is cancelled. Call us any time to book again.", then=Hangup("Goodbye.")
    )
    rescheduled = Say(
        "Thank you. We will call you to confirm a time on that day.", then=Hangup("Goodbye.")
    )
    no_answer_goodbye = Hangup("We will try again later. Goodbye.")
    leave_message = Say(
        lambda call: (
            f"Hello, this is Acme Dental reminding you of {_appointment(call)}. "
            "To confirm, cancel or change it, please call us back. Thank you."
        ),
        then=Hangup(),
    )
