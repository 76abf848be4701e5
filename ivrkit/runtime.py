"""One webhook's work on one call: fire the trigger, walk pass-through states, render TwiML.

Pure with respect to storage: it reads and changes a :class:`CallRecord` in memory and the
caller (the web app) saves it only when everything succeeded, so a failure saves nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from ivrkit import nodes as n
from ivrkit import observers, sensitive, twiml
from ivrkit.call import Call
from ivrkit.errors import FlowRuntimeError
from ivrkit.flow import Flow
from ivrkit.inputs import Selection, select
from ivrkit.memo import BoundedMemo
from ivrkit.outbound import amd
from ivrkit.records import CallRecord
from ivrkit.rules import check_subflows

log = logging.getLogger("ivrkit.runtime")

MAX_HOPS = 64
RENDER_CACHE_SIZE = 4096


@dataclass
class TurnResult:
    """What one webhook produced: the TwiML answer and the transitions fired.

    ``stored`` is the answer as it may be stored and logged: ``twiml`` itself, or with a
    caller secret read back masked (then ``twiml`` goes to Twilio only).
    """

    twiml: str
    fired: list[str] = field(default_factory=list)
    stored: str = ""

    def __post_init__(self) -> None:
        self.stored = self.stored or self.twiml


class FlowRegistry:
    """The loaded flows, by name and by the phone numbers they answer."""

    def __init__(self, flows: list[type[Flow]]) -> None:
        self.by_name: dict[str, type[Flow]] = {}
        self.by_number: dict[str, type[Flow]] = {}
        for flow in flows:
            if flow.name in self.by_name and self.by_name[flow.name] is not flow:
                raise FlowRuntimeError(f"two flows are named {flow.name!r}; set name = ... on one")
            self.by_name[flow.name] = flow
            numbers = [flow.number] if isinstance(flow.number, str) else list(flow.number or ())
            for number in numbers:
                self.by_number[number] = flow
        missing = check_subflows(self.by_name.values())
        if missing:  # the same IVR010 findings `ivrkit check` reports, every one of them
            raise FlowRuntimeError("; ".join(finding.format() for finding in missing))
        if observers.ACTIVE:
            observers.flows_loaded(flows)
        self.secret_states = sensitive.check_flows(self.by_name.values())
        """State names whose input (Digits, SpeechResult) is masked in the event log."""

    def get(self, name: str) -> type[Flow]:
        try:
            return self.by_name[name]
        except KeyError:
            raise FlowRuntimeError(f"no flow named {name!r}") from None

    def for_number(self, number: str) -> type[Flow] | None:
        return self.by_number.get(number)


class Runtime:
    """Runs flows over call records; shared by every request of the app."""

    def __init__(self, registry: FlowRegistry, *, clock: Callable[[], datetime]) -> None:
        # Here, so a missing IVRKIT_SECRET_KEY stops the app at start-up, not a caller.
        sensitive.require_keys(registry.by_name.values())
        self.registry = registry
        self.clock = clock
        # Rendered documents of static states, by what was rendered: most webhooks answer
        # with one of a few hundred documents that differ only in the step number.
        self.rendered: BoundedMemo[tuple[Any, ...], str] = BoundedMemo(RENDER_CACHE_SIZE)

    async def begin(
        self,
        record: CallRecord,
        params: Mapping[str, str],
        base_url: str,
        *,
        start: str | None = None,
        why: str = "",
    ) -> TurnResult:
        """The first webhook of a call: run from the flow's initial state, or from
        ``start``, a state the call was sent to by ``why`` (who answered an outbound call)."""
        flow = self.registry.get(record.flow)
        turn = _Turn(self, record, params, base_url)
        record.step += 1
        if start is not None:
            if observers.ACTIVE:
                observers.trigger_taken(flow, amd.ANSWERED_SOURCE, why, start, record.call_sid)
            turn.fired.append(f"{flow.name}:{amd.ANSWERED_SOURCE} -{why}-> {start}")
        await turn.advance(flow, start or flow.initial_state())
        return turn.finish()

    async def resume(
        self, record: CallRecord, params: Mapping[str, str], *, base_url: str, no_input: bool
    ) -> TurnResult:
        """A callback for the state the call waits in: select the trigger and move on."""
        flow = self._current_flow(record)
        node = flow.state(record.state)
        keep = sensitive.keep_mode(flow, node)
        if keep is None:
            return await self._resume(flow, node, record, params, base_url, no_input)
        # A secret awaiting confirmation is clear only in memory, for this webhook's work:
        # sealed again on every way out, so neither the store nor a cache sees it in clear.
        sensitive.open_pending(record.counters)
        try:
            return await self._resume(flow, node, record, params, base_url, no_input, keep)
        finally:
            sensitive.seal_pending(record.counters)

    async def _resume(
        self,
        flow: type[Flow],
        node: n.Node,
        record: CallRecord,
        params: Mapping[str, str],
        base_url: str,
        no_input: bool,
        keep: str | None = None,
    ) -> TurnResult:
        turn = _Turn(self, record, params, base_url)
        call = turn.call_for(flow, record.state)
        selection: Selection = await select(
            flow, node, params, no_input=no_input, counters=record.counters, call=call
        )
        if keep is not None:
            selection.data = {key: sensitive.kept(keep, v) for key, v in selection.data.items()}
        record.data.update(selection.data)
        turn.notice = selection.notice
        turn.full_prompt = selection.trigger in ("repeat", "reenter")
        record.step += 1
        state = turn.fire(flow, record.state, selection.trigger)
        await turn.advance(flow, state)
        return turn.finish()

    def replay_answer(self, record: CallRecord) -> str:
        """The answer for a webhook handled already: the stored one, secrets filled in again.

        The stored answer has a read-back of a caller secret masked; while the call still
        waits for that confirmation, the read-back is rebuilt from the encrypted entry so
        a retried webhook gets what the caller heard the first time.
        """
        stored = record.last_twiml
        pending = record.counters.get("pending")
        if not isinstance(pending, str) or sensitive.MASK not in stored:
            return stored
        flow = self.registry.by_name.get(record.flow)
        node = flow.states().get(record.state) if flow is not None else None
        if not isinstance(node, n.Collect) or node.confirm is None:
            return stored
        if sensitive.keep_mode(flow, node) is None:
            return stored
        return sensitive.unmask_readback(stored, node.confirm, pending)

    def _current_flow(self, record: CallRecord) -> type[Flow]:
        """The flow the call is in, moving it off a state a redeploy removed."""
        flow = self.registry.get(record.flow)
        if record.flow_version != flow.version():
            if record.state not in flow.states():
                moved = flow.migrations.get(record.state)
                if moved is None or moved not in flow.states():
                    raise FlowRuntimeError(
                        f"{flow.__name__}: state {record.state!r} of version "
                        f"{record.flow_version} no longer exists; add it to migrations"
                    )
                log.info(
                    "call %s migrated %s -> %s (flow %s %s -> %s)",
                    record.call_sid,
                    record.state,
                    moved,
                    flow.name,
                    record.flow_version,
                    flow.version(),
                )
                record.state = moved
                record.counters = {}
            record.flow_version = flow.version()
        return flow


class _Turn:
    def __init__(
        self, runtime: Runtime, record: CallRecord, params: Mapping[str, str], base_url: str
    ) -> None:
        self.runtime = runtime
        self.record = record
        self.params = params
        self.base_url = base_url
        self.ops: list[Callable[[VoiceResponse], None]] = []
        # The same verbs with caller secrets masked, when any were read back: what is stored.
        self.stored_ops: list[Callable[[VoiceResponse], None]] | None = None
        self.key: list[tuple[Any, ...]] = []
        self.static = True
        self.fired: list[str] = []
        self.notice: str | None = None
        self.full_prompt = False
        self.spoke = False

    def call_for(self, flow: type[Flow], state: str) -> Call:
        return Call.from_params(
            self.params,
            now=self.runtime.clock(),
            flow=flow.name,
            state=state,
            data=self.record.data,
        )

    def fire(self, flow: type[Flow], state: str, trigger: str) -> str:
        dest = flow.machine().fire(state, trigger)
        if observers.ACTIVE:
            observers.trigger_taken(flow, state, trigger, dest, self.record.call_sid)
        self.fired.append(f"{flow.name}:{state} -{trigger}-> {dest}")
        if dest != state:
            self.record.counters = {}
        return dest

    def emit(
        self,
        key: tuple[Any, ...],
        op: Callable[[VoiceResponse], None],
        *,
        static: bool = True,
        stored: Callable[[VoiceResponse], None] | None = None,
    ) -> None:
        """Queue verbs for the answer; ``static`` ones may come from the render cache.

        ``stored`` renders the same verbs with caller secrets masked, for the record.
        """
        self.key.append(key)
        if stored is not None and self.stored_ops is None:
            self.stored_ops = list(self.ops)
        if self.stored_ops is not None:
            self.stored_ops.append(stored or op)
        self.ops.append(op)
        self.static = self.static and static

    def finish(self) -> TurnResult:
        if self.stored_ops is not None:
            step = str(self.record.step)
            answer = _render(self.ops).replace(twiml.STEP_SLOT, step)
            self.record.last_twiml = _render(self.stored_ops).replace(twiml.STEP_SLOT, step)
            return TurnResult(answer, self.fired, stored=self.record.last_twiml)
        cache = self.runtime.rendered
        key = (self.base_url, *self.key) if self.static else None
        template = cache.get(key) if key is not None else None
        if template is None:
            template = _render(self.ops)
            if key is not None:
                cache.keep(key, template)
        self.record.last_twiml = template.replace(twiml.STEP_SLOT, str(self.record.step))
        return TurnResult(self.record.last_twiml, self.fired)

    async def advance(self, flow: type[Flow], state: str) -> None:
        """Walk states that need no caller input until one waits or ends the call."""
        for _ in range(MAX_HOPS):
            node = flow.state(state)
            if observers.ACTIVE:
                observers.state_entered(flow, state, self.record.call_sid)
            self.record.flow = flow.name
            self.record.state = state
            if isinstance(node, n.Say | n.Play | n.Pause):
                self._emit_prompt(flow, state, (node,), ("prompt", flow.name, state))
                self.spoke = True
                state = self.fire(flow, state, "next")
            elif isinstance(node, n.Decision):
                state = self.fire(flow, state, f"goto:{await self._decide(flow, node)}")
            elif isinstance(node, n.SubFlow):
                self.record.stack.append([flow.name, state])
                self.record.counters = {}
                parent, flow = flow, self.runtime.registry.get(node.flow)
                if observers.ACTIVE:
                    observers.trigger_taken(
                        parent, state, observers.SUBFLOW_TRIGGER, flow.name, self.record.call_sid
                    )
                self.fired.append(
                    f"{self.record.stack[-1][0]}:{state} -enter-> "
                    f"{flow.name}:{flow.initial_state()}"
                )
                state = flow.initial_state()
            elif isinstance(node, n.Return) and self.record.stack:
                parent_name, parent_state = self.record.stack.pop()
                flow = self.runtime.registry.get(parent_name)
                state = self.fire(flow, parent_state, "returned")
            elif node.ends_call:
                self._render_end(flow, node, state)
                return
            else:
                self._render_wait(flow, node, state)
                return
        raise FlowRuntimeError(f"{flow.__name__}: more than {MAX_HOPS} states without input")

    async def _decide(self, flow: type[Flow], node: n.Decision) -> str:
        result: Any = node.function(flow(), self.call_for(flow, node.name))
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str) or result not in flow.states():
            raise FlowRuntimeError(
                f"{flow.__name__}.{node.name}: {node.function.__name__}() returned {result!r}, "
                f"which is not a state of the flow"
            )
        return result

    def _emit_prompt(
        self, flow: type[Flow], state: str, parts: tuple[n.PromptPart, ...], key: tuple[Any, ...]
    ) -> None:
        dynamic = any(isinstance(p, n.Say) and callable(p.text) for p in parts)
        call = self.call_for(flow, state) if dynamic else None
        voice = _voice(flow)

        def op(response: VoiceResponse) -> None:
            twiml.add_prompt(response, parts, call or self.call_for(flow, state), voice)

        self.emit(key, op, static=not dynamic)

    def _render_end(self, flow: type[Flow], node: n.Node, state: str) -> None:
        if isinstance(node, n.Hangup):
            self._emit_prompt(flow, state, node.prompt, ("end-prompt", flow.name, state))
            self.emit(("hangup",), lambda response: response.hangup())
        elif isinstance(node, n.Reject):
            self.emit(("reject", node.reason), lambda r: r.reject(reason=node.reason))
        elif isinstance(node, n.Redirect):
            self.emit(("redirect", node.url), lambda r: r.redirect(node.url, method=node.method))
        else:  # Return from the top flow: nothing to go back to
            self.emit(("hangup",), lambda response: response.hangup())

    def _links(self, flow: type[Flow]) -> twiml.Links:
        return twiml.Links(self.base_url, flow.name, twiml.STEP_SLOT)

    def _render_wait(self, flow: type[Flow], node: n.Node, state: str) -> None:
        voice = _voice(flow)
        notice = (n.Say(self.notice),) if self.notice else ()
        retried = bool(self.record.counters) and not self.full_prompt
        key: tuple[Any, ...] = (node.kind, flow.name, state, self.notice, retried)
        if isinstance(node, n.Menu | n.Collect):
            pending = self.record.counters.get("pending") if isinstance(node, n.Collect) else None
            masked: tuple[n.PromptPart, ...] | None = None
            if pending is not None:
                confirm: str = node.confirm  # type: ignore[union-attr,assignment]
                readback = confirm.format(value=sensitive.spoken(pending))
                parts: tuple[n.PromptPart, ...] = (*notice, n.Say(readback))
                digits: int | None = 1
                hints: tuple[str, ...] | None = node.confirm_hints()  # type: ignore[union-attr]
                if sensitive.keep_mode(flow, node) is not None:
                    masked = (*notice, n.Say(confirm.format(value=sensitive.MASK)))
                else:
                    key = (*key, readback)
            else:
                parts = notice + (node.short_prompt if retried else node.prompt)
                digits = _menu_digits(flow, node) if isinstance(node, n.Menu) else _fixed(node)
                hints = None
            dynamic = any(isinstance(p, n.Say) and callable(p.text) for p in parts)

            def ask(response: VoiceResponse, parts: tuple[n.PromptPart, ...] = parts) -> None:
                twiml.gather(
                    response,
                    node,
                    parts=parts,
                    call=self.call_for(flow, state),
                    voice=voice,
                    links=self._links(flow),
                    num_digits=digits,
                    hints=hints,
                )

            if masked is not None:
                # Never cached: the read-back holds the secret. Stored: the masked twin.
                self.emit(key, ask, static=False, stored=lambda r: ask(r, masked))
                return
            self.emit(key, ask, static=not dynamic)
            return
        if isinstance(node, n.Dial):
            render: Callable[..., None] = twiml.dial
        elif isinstance(node, n.Record):
            render = twiml.record
        elif isinstance(node, n.Enqueue):
            render = twiml.enqueue
        else:
            raise FlowRuntimeError(f"{flow.__name__}.{state}: cannot render {node!r}")
        parts = getattr(node, "prompt", ())
        dynamic = any(isinstance(p, n.Say) and callable(p.text) for p in parts)
        self.emit(
            key,
            lambda r: render(
                r, node, call=self.call_for(flow, state), voice=voice, links=self._links(flow)
            ),
            static=not dynamic,
        )


def _render(ops: list[Callable[[VoiceResponse], None]]) -> str:
    response = VoiceResponse()
    for op in ops:
        op(response)
    return str(response)


def _fixed(node: n.Collect) -> int | None:
    return node.digits[1] if node.digits and node.digits[0] == node.digits[1] else None


_voices: dict[type[Flow], twiml.Voice] = {}
_digits: dict[tuple[type[Flow], str], int | None] = {}


def _voice(flow: type[Flow]) -> twiml.Voice:
    voice = _voices.get(flow)
    if voice is None:
        voice = _voices[flow] = twiml.Voice(voice=flow.voice, language=flow.language)
    return voice


def _menu_digits(flow: type[Flow], node: n.Menu) -> int | None:
    """numDigits when every key has the same length (a fixed fact of the flow, so kept)."""
    if (flow, node.name) not in _digits:
        _digits[flow, node.name] = _count_digits(flow, node)
    return _digits[flow, node.name]


def _count_digits(flow: type[Flow], node: n.Menu) -> int | None:
    keys = list(node.choices) + list(flow.global_keys_for(node))
    lengths = {len(key) for key in keys}
    return lengths.pop() if len(lengths) == 1 else None
