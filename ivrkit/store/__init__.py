"""Call state and event log in SQL, as one package with a module per job.

``contract`` says what every store promises, ``schema`` declares the tables, ``codec``
turns records into rows and back; ``sqlite`` and ``postgres`` are the two stores, and
``keeper``, ``pool`` and ``turns`` the parts PostgreSQL's and SQLite's sessions are made of.
Everything the app, the CLI and the tests import is re-exported here.
"""

from ivrkit.store.codec import (
    CALL_JSON,
    CALL_TIMES,
    DATA_TYPES,
    EVENT_JSON,
    EVENT_TIME,
    CallDataError,
    StoredRowError,
    call_fields,
    encode_json,
    event_fields,
    record_from_mapping,
    record_from_row,
)
from ivrkit.store.contract import (
    FINAL_STATUSES,
    CallSession,
    CallStore,
    CallTaken,
    StatusUpdate,
    StoreContract,
    StoreUnwritableError,
    create_store,
)
from ivrkit.store.schema import (
    CALL_COLUMNS,
    EVENT_COLUMNS,
    SCHEMA_LOCK,
    calls,
    events,
    health,
    metadata,
)

__all__ = [
    "CALL_COLUMNS",
    "CALL_JSON",
    "CALL_TIMES",
    "DATA_TYPES",
    "EVENT_COLUMNS",
    "EVENT_JSON",
    "EVENT_TIME",
    "FINAL_STATUSES",
    "SCHEMA_LOCK",
    "CallDataError",
    "CallSession",
    "CallStore",
    "CallTaken",
    "StatusUpdate",
    "StoreContract",
    "StoreUnwritableError",
    "StoredRowError",
    "call_fields",
    "calls",
    "create_store",
    "encode_json",
    "event_fields",
    "events",
    "health",
    "metadata",
    "record_from_mapping",
    "record_from_row",
]
