"""``ChatAgent``: an agent backed by any OpenAI-compatible chat-completions endpoint.

Works with OpenAI and with local servers that speak the same API (llama.cpp's
``llama-server``, vLLM, Ollama's ``/v1``). Replies are streamed (server-sent events) and
spoken token by token as they arrive; each hand-off key becomes a tool
(``handoff_<key>``) whose arguments are the hand-off's fields, so the model ends the
session by calling it. Installed with ``pip install 'ivrkit[llm]'`` (httpx, which ivrkit
already needs, is all it uses).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ivrkit.relay.protocol import Dtmf, Interrupt, Message, Prompt
from ivrkit.relay.session import AgentSession

TOOL_PREFIX = "handoff_"


class ChatError(RuntimeError):
    """The endpoint answered with an error or something that is not a completion stream."""


@dataclass(frozen=True)
class Handoff:
    """A hand-off the model may choose: ``key`` (a key of the Agent's ``on=``), when to use
    it, and its fields as ``{name: JSON type}`` ("string", "integer", "number", "boolean").

        Handoff("billing", "The caller has a billing question and gave an account number.",
                fields={"account": "string"})
    """

    key: str
    description: str
    fields: Mapping[str, str] = field(default_factory=dict)

    def tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": TOOL_PREFIX + self.key,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {name: {"type": kind} for name, kind in self.fields.items()},
                    "required": list(self.fields),
                },
            },
        }


class ChatAgent:
    """Talks through a chat-completions model; one history per session.

        ChatAgent("http://127.0.0.1:8080/v1", model="qwen2.5-1.5b-instruct",
                  system_prompt="You answer calls for Acme. Be brief.",
                  handoffs=[Handoff("billing", "billing questions", {"account": "string"})])

    ``api_key`` is sent as a bearer token (local servers need none); ``transport`` lets
    tests or proxies replace httpx's. A failing endpoint raises :class:`ChatError`, which
    ends the session as failed (the Agent's ``on_failure``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        system_prompt: str,
        handoffs: Sequence[Handoff] = (),
        api_key: str | None = None,
        temperature: float | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.system_prompt = system_prompt
        self.handoffs = {handoff.key: handoff for handoff in handoffs}
        self.api_key = api_key
        self.temperature = temperature
        self.timeout = timeout
        self.transport = transport

    def handoff_keys(self) -> tuple[str, ...]:
        return tuple(self.handoffs)

    async def handle(self, session: AgentSession, message: Message) -> None:
        history: list[dict[str, Any]] = session.state.setdefault("history", [])
        if isinstance(message, Prompt) and message.last:
            history.append({"role": "user", "content": message.text})
        elif isinstance(message, Dtmf):
            history.append({"role": "user", "content": f"(the caller pressed {message.digit})"})
        elif isinstance(message, Interrupt):
            # The model should know the caller only heard part of its last answer.
            if history and history[-1].get("role") == "assistant":
                history[-1]["content"] = message.heard
            return
        else:
            return
        await self._complete(session, history)

    def _body(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "messages": [{"role": "system", "content": self.system_prompt}, *history],
        }
        if self.handoffs:
            body["tools"] = [handoff.tool() for handoff in self.handoffs.values()]
        if self.temperature is not None:
            body["temperature"] = self.temperature
        return body

    async def _complete(self, session: AgentSession, history: list[dict[str, Any]]) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        spoken: list[str] = []
        calls: dict[int, dict[str, str]] = {}
        async with (
            httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client,
            client.stream("POST", self.url, json=self._body(history), headers=headers) as reply,
        ):
            if reply.status_code != 200:
                await reply.aread()
                raise ChatError(f"{self.url} answered {reply.status_code}: {reply.text[:200]}")
            async for line in reply.aiter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names, keep-alives
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                for token, tool_calls in _deltas(data):
                    if token:
                        spoken.append(token)
                        await session.say(token, last=False)
                    for call in tool_calls:
                        index = int(call.get("index") or 0)
                        slot = calls.setdefault(index, {"name": "", "args": ""})
                        function = call.get("function") or {}
                        slot["name"] += function.get("name") or ""
                        slot["args"] += function.get("arguments") or ""
        if spoken:
            await session.say("", last=True)
        history.append({"role": "assistant", "content": "".join(spoken)})
        for call in calls.values():
            key = call["name"].removeprefix(TOOL_PREFIX)
            if call["name"].startswith(TOOL_PREFIX) and key in self.handoffs:
                try:
                    fields = json.loads(call["args"] or "{}")
                except ValueError:
                    raise ChatError(f"tool {call['name']} arguments are not JSON") from None
                if not isinstance(fields, dict):
                    raise ChatError(f"tool {call['name']} arguments are not an object")
                session.end(key, **fields)
                return


def _deltas(data: str) -> list[tuple[str, list[dict[str, Any]]]]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ChatError("a streamed chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise ChatError("a streamed chunk is not a JSON object")
    if "error" in chunk:
        raise ChatError(f"the endpoint reported: {str(chunk['error'])[:200]}")
    found = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        tool_calls = delta.get("tool_calls") or []
        found.append((content if isinstance(content, str) else "", list(tool_calls)))
    return found
