"""stream_app: durable, stateful cells on Apache Kafka.

Users write plain Python behaviours; stream_app runs them as Faust agents with RocksDB-backed
state tables and changelog topics, validates every record at the edge, and sends what it cannot
process to a dead-letter topic with the reason. This module is the public contract: everything a
user imports comes from here, and ``__all__`` is pinned by a test.
"""

from __future__ import annotations

from stream_app.api.behaviour import Behaviour
from stream_app.api.culture import CellCulture, CellRun
from stream_app.api.entities import Entity, EntityEffect, EventRecord
from stream_app.clients.cells import CellClient
from stream_app.clients.entities import AsyncEntityClient, EntityClient
from stream_app.core.cell import CellState, Effect, FiredTimer
from stream_app.core.dead_letters import DeadLetter
from stream_app.core.envelope import CellMessage, Envelope, MessageTypes
from stream_app.core.parking import ParkedCell, ParkedItem
from stream_app.core.replies import Reply
from stream_app.core.timers import Misfire
from stream_app.engine.ports import RuntimeMetrics
from stream_app.engine.reactor import ReactorRecord
from stream_app.errors import (
    BrokerError,
    BrokerStartError,
    ChangelogError,
    ConfigError,
    DataVersionError,
    FlushTimeoutError,
    InvalidKeyError,
    InvalidMessageError,
    MalformedJSONError,
    OversizedMessageError,
    PortInUseError,
    RejectMessage,
    ReplyTimeoutError,
    RequestRejectedError,
    SchemaViolationError,
    StreamAppError,
    ToolMissingError,
    TopicDefinitionError,
    TopicPlanError,
    TransactionError,
    UnknownMessageTypeError,
)
from stream_app.kafka.app import DeadLetterSink, StreamApp, create_app
from stream_app.runtime import Runtime
from stream_app.settings import Settings, get_settings

__version__ = "0.1.0"

__all__ = [
    "AsyncEntityClient",
    "Behaviour",
    "BrokerError",
    "BrokerStartError",
    "CellClient",
    "CellCulture",
    "CellMessage",
    "CellRun",
    "CellState",
    "ChangelogError",
    "ConfigError",
    "DataVersionError",
    "DeadLetter",
    "DeadLetterSink",
    "Effect",
    "Entity",
    "EntityClient",
    "EntityEffect",
    "Envelope",
    "EventRecord",
    "FiredTimer",
    "FlushTimeoutError",
    "InvalidKeyError",
    "InvalidMessageError",
    "MalformedJSONError",
    "MessageTypes",
    "Misfire",
    "OversizedMessageError",
    "ParkedCell",
    "ParkedItem",
    "PortInUseError",
    "ReactorRecord",
    "RejectMessage",
    "Reply",
    "ReplyTimeoutError",
    "RequestRejectedError",
    "Runtime",
    "RuntimeMetrics",
    "SchemaViolationError",
    "Settings",
    "StreamApp",
    "StreamAppError",
    "ToolMissingError",
    "TopicDefinitionError",
    "TopicPlanError",
    "TransactionError",
    "UnknownMessageTypeError",
    "__version__",
    "create_app",
    "get_settings",
]
