"""ConversationRelay: hand a call to an agent (yours) and take it back with a typed hand-off.

- :mod:`~ivrkit.relay.node`: the ``Agent`` state and its ``Language``s
- :mod:`~ivrkit.relay.twiml`: ``<Connect><ConversationRelay>`` rendering
- :mod:`~ivrkit.relay.endpoint`: the WebSocket endpoint that runs the agent
- :mod:`~ivrkit.relay.session`: what an agent holds (``AgentSession``) and its transcript
- :mod:`~ivrkit.relay.protocol`: Twilio's messages as typed values
- :mod:`~ivrkit.relay.handoff`: the ``<Connect action>`` callback -> a transition
- :mod:`~ivrkit.relay.keywords`: ``KeywordAgent``, a deterministic agent of intents
- :mod:`~ivrkit.relay.chat`: ``ChatAgent`` for OpenAI-compatible endpoints (``ivrkit[llm]``)
"""
