"""ChatAgent against a stand-in chat-completions server: a real HTTP server on a free port
that streams server-sent events the way OpenAI, llama.cpp, vLLM and Ollama do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ivrkit import Agent, Flow, Hangup, Say, Settings, create_app
from ivrkit.relay.chat import ChatAgent, ChatError, Handoff
from ivrkit.relay.protocol import Dtmf, Interrupt, Prompt
from ivrkit.relay.session import AgentSession, Transcript
from tests.conftest import OPEN_HOURS
from tests.driver import TOKEN, PhoneCall
from tests.relay_support import relay_of, twilio_side, uvicorn_serving


def chunk(delta: dict[str, Any]) -> str:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta}],
    }
    return f"data: {json.dumps(body)}\n\n"


class StandIn:
    """Answers from a script: each request pops the next list of SSE chunks."""

    def __init__(self, replies: list[list[str]], status: int = 200) -> None:
        self.replies = replies
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])]
        )

    async def complete(self, request: Request) -> Response:
        self.requests.append(await request.json())
        if self.status != 200:
            return JSONResponse({"error": {"message": "model not loaded"}}, self.status)
        chunks = self.replies.pop(0)

        async def events() -> AsyncIterator[str]:
            yield ": keep-alive\n\n"
            for item in chunks:
                yield item
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


BILLING_TOOL = [
    chunk({"role": "assistant", "content": "Let me pass you "}),
    chunk({"content": "to billing."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "handoff_billing", "arguments": '{"acc'},
                }
            ]
        }
    ),  # fmt: skip
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ount": "12345678"}'}}]}),
]


def agent_for(base: str, **kwargs: Any) -> ChatAgent:
    return ChatAgent(
        f"{base}/v1",
        model="tiny",
        system_prompt="You answer Acme's phone. Be brief.",
        handoffs=[
            Handoff("billing", "Billing questions, with the account.", {"account": "string"})
        ],
        api_key="local-key",
        **kwargs,
    )


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, text: str) -> None:
        self.messages.append(json.loads(text))


def session() -> tuple[AgentSession, Sent]:
    from ivrkit.call import Call
    from ivrkit.relay.protocol import Setup

    sent = Sent()
    call = Call.from_params(
        {"CallSid": "CA" + "0" * 32}, now=OPEN_HOURS, flow="f", state="s", data={}
    )
    setup = Setup(session_id="VX" + "0" * 32, call_sid=call.sid)
    return AgentSession(setup, call, sent, Transcript(masked=False), state_name="s"), sent


async def test_streams_tokens_and_hands_off_through_a_tool_call():
    server = StandIn(
        [[chunk({"role": "assistant", "content": "We open "}), chunk({"content": "at nine."})],
         BILLING_TOOL]
    )  # fmt: skip
    async with uvicorn_serving(server.app) as base:
        agent = agent_for(base)
        talk, sent = session()
        await agent.handle(talk, Prompt("When do you open?"))
        assert [m["token"] for m in sent.messages] == ["We open ", "at nine.", ""]
        assert [m["last"] for m in sent.messages] == [False, False, True]
        await agent.handle(talk, Dtmf("5"))
        assert json.loads(talk.handoff or "") == {"handoff": "billing", "account": "12345678"}
    first, second = server.requests
    assert first["stream"] is True
    assert first["messages"] == [
        {"role": "system", "content": "You answer Acme's phone. Be brief."},
        {"role": "user", "content": "When do you open?"},
    ]
    assert first["tools"][0]["function"]["name"] == "handoff_billing"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["account"]
    assert second["messages"][-2:] == [
        {"role": "assistant", "content": "We open at nine."},
        {"role": "user", "content": "(the caller pressed 5)"},
    ]


async def test_an_interrupt_shortens_what_the_model_remembers_saying():
    server = StandIn(
        [[chunk({"content": "A long answer about many things."})], [chunk({"content": "Ok."})]]
    )
    async with uvicorn_serving(server.app) as base:
        agent = agent_for(base)
        talk, _ = session()
        await agent.handle(talk, Prompt("Tell me everything"))
        await agent.handle(talk, Interrupt("A long answer"))
        await agent.handle(talk, Prompt("stop"))
    assert server.requests[1]["messages"][-2] == {"role": "assistant", "content": "A long answer"}


@pytest.mark.parametrize(
    ("status", "replies", "reason"),
    [
        (503, [], "answered 503"),
        (200, [["data: {not json\n\n"]], "not JSON"),
        (200, [['data: {"error": "overloaded"}\n\n']], "overloaded"),
        (
            200,
            [
                [
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "function": {"name": "handoff_billing", "arguments": "{"},
                                }
                            ]
                        }
                    )
                ]
            ],
            "arguments are not JSON",
        ),
    ],
)
async def test_endpoint_failures_raise_chat_error(status, replies, reason):
    server = StandIn(replies, status)
    async with uvicorn_serving(server.app) as base:
        agent = agent_for(base)
        talk, _ = session()
        with pytest.raises(ChatError, match=reason):
            await agent.handle(talk, Prompt("hello"))


async def test_a_flow_with_a_chat_agent_end_to_end(tmp_path):
    server = StandIn([BILLING_TOOL])
    async with uvicorn_serving(server.app) as llm:

        class Desk(Flow):
            hello = Say("Hi.", then="talk")
            talk = Agent(
                agent_for(llm),
                on={"billing": "billing", "*": "bye"},
                on_failure="bye",
                on_hangup=Hangup(),
            )
            billing = Hangup("Billing it is.")
            bye = Hangup("Bye.")

        config = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", auth_token=TOKEN)
        app = create_app([Desk], settings=config, clock=lambda: OPEN_HOURS)
        async with uvicorn_serving(app) as base, httpx.AsyncClient(timeout=30) as client:
            call = PhoneCall(client=client, flow="desk")
            url, action, _ = relay_of((await call.post(f"{base}/voice/desk")).body)
            async with twilio_side(url, call.sid) as twilio:
                await twilio.say("My bill is wrong, account 12345678")
                assert await twilio.utterance() == "Let me pass you to billing."
                await twilio.until_end()
            assert (await call.post(action, **twilio.action_params())).said() == ["Billing it is."]
            record = await app.ivr.store.load(call.sid)
            assert record.data["account"] == "12345678"  # not declared secret in this flow
        assert app.ivr.relay.active == 0
