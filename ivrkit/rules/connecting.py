"""Rules for states that connect the caller to someone (Dial, Enqueue).

IVR005 / IVR012: every unsuccessful outcome needs a state. IVR018: a ``"*"`` written for
the old meaning, when an Enqueue's ``"*"`` (and ``then=``) also caught a finished bridge.
Now ``"*"`` means every unsuccessful outcome, and after a successful bridge the call ends
or goes to ``then=``.
"""

from __future__ import annotations

from ivrkit import nodes as n
from ivrkit.rules.findings import ERROR, WARNING, Reporter

SUCCESS_OUTCOMES = {
    n.Dial: ("completed", "answered"),
    n.Enqueue: ("bridged",),
}
"""The outcomes of a bridge that happened, by state kind."""

FAILURE_HANDLERS = (n.Record, n.Dial, n.Enqueue, n.Hangup, n.Reject)
"""Kinds of state only reached after a failed connection: a message, another number or
queue, a goodbye. A ``"*"`` going to one of these (after any prompts) was written for
failures, so it is fine."""


def check_connecting(report: Reporter, node: n.Node, states: dict[str, n.Node]) -> None:
    if isinstance(node, n.Dial):
        missing = node.unhandled_statuses()
        if missing:
            report.add(
                "IVR005",
                ERROR,
                node,
                f"no outcome for {', '.join(missing)}",
                'add on={"*": "voicemail"} or map each status to a state',
            )
    if isinstance(node, n.Enqueue):
        missing = [r for r in n.QUEUE_RESULTS if node.target_for(r) is None]
        if missing and node.then is not None:
            # then= follows a finished bridge; a flow written when it caught failures too
            # lands here, so say where its failures should go instead.
            then = node.then if isinstance(node.then, str) else node.then.name
            report.add(
                "IVR012",
                ERROR,
                node,
                f"no outcome for {', '.join(missing)}: then= only follows a finished bridge",
                f'add on={{"*": "{then}"}} for the failures, and drop then= unless callers '
                "should go there after talking to the agent too",
            )
        elif missing:
            report.add(
                "IVR012",
                ERROR,
                node,
                f"no outcome for {', '.join(missing)}",
                'add on={"*": "<state>"}, e.g. a voicemail',
            )
    if isinstance(node, n.Dial | n.Enqueue):
        _check_star_after_bridge(report, node, states)


def _check_star_after_bridge(
    report: Reporter, node: n.Dial | n.Enqueue, states: dict[str, n.Node]
) -> None:
    """IVR018, the precise rule: warn when all of these hold

    - ``on=`` maps ``"*"``,
    - there is no ``then=`` and no explicit success outcome (``"bridged"`` for Enqueue,
      ``"completed"`` / ``"answered"`` for Dial), so nothing says what follows a bridge,
    - the ``"*"`` target continues the call (a Menu, Collect, decision, sub-flow, redirect,
      possibly after prompts), rather than only following a failure: a Record (voicemail),
      another Dial or Enqueue, or a hang-up, possibly after prompts ("Nobody is free. Goodbye.").

    That is the shape of a flow written when ``"*"`` also caught the finished bridge, e.g. a
    survey after the agent: ``Enqueue("support", on={"*": "survey"})``. Today such a caller
    is hung up on after the agent leaves, and never reaches "survey".
    """
    star = node.on.get("*")
    if star is None or node.then is not None:
        return
    if any(outcome in node.on for outcome in SUCCESS_OUTCOMES[type(node)]):
        return
    target = states.get(star) if isinstance(star, str) else star
    if target is None or _handles_failure(target, states):
        return
    name = star if isinstance(star, str) else target.name
    what = "agent" if isinstance(node, n.Enqueue) else "callee"
    report.add(
        "IVR018",
        WARNING,
        node,
        f'on={{"*": "{name}"}} catches only unsuccessful outcomes: after a finished bridge the '
        f'call ends, so a caller who talked to the {what} never reaches "{name}"; an '
        'Enqueue\'s "*" used to catch "bridged" too',
        f'if callers should reach "{name}" after talking, add then="{name}"; if "*" is for '
        "failures only, add then=Hangup() to say so",
    )


def _handles_failure(node: n.Node, states: dict[str, n.Node]) -> bool:
    """Whether ``node``, after any prompts, leaves a message, tries elsewhere or hangs up."""
    seen: set[int] = set()
    while isinstance(node, n.Say | n.Play | n.Pause) and id(node) not in seen:
        seen.add(id(node))
        following = node.then
        nxt = states.get(following) if isinstance(following, str) else following
        if not isinstance(nxt, n.Node):
            return True
        node = nxt
    return isinstance(node, FAILURE_HANDLERS)
