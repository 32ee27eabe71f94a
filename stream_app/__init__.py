"""stream_app: durable, stateful cells on Apache Kafka.

Users write plain Python behaviours; stream_app runs them as Faust agents with RocksDB-backed
state tables and changelog topics, validates every record at the edge, and sends what it cannot
process to a dead-letter topic with the reason.

This module is the public contract: ``__all__`` holds what a user of stream_app writes, calls,
receives in a callback, or catches, and a test pins it. The plumbing under it (the Faust app
and its patches, the engines, the dev broker and their errors) stays importable from its own
module, :mod:`stream_app.kafka.app` or :mod:`stream_app.errors` for instance; see
``docs/architecture.md`` for the packages.
"""

from __future__ import annotations

from stream_app.api.atomic import Accept, AtomicFold, AtomicLog, Reject, Validation
from stream_app.api.behaviour import Behaviour
from stream_app.api.culture import CellCulture, CellRun
from stream_app.api.entities import (
    CancelEntityTimer,
    Entity,
    EntityEffect,
    EntityTimer,
    EventRecord,
)
from stream_app.api.quests import ActionContext, NoVariables, Quest, QuestBehaviour
from stream_app.api.workflows import EdgeContext, Failure, Joined, Workflow
from stream_app.clients.atomic import AsyncAtomicClient, AtomicClient, serve_validator
from stream_app.clients.cells import CellClient
from stream_app.clients.entities import AsyncEntityClient, EntityClient
from stream_app.clients.quests import QuestClient
from stream_app.clients.workflows import AsyncWorkflowClient, WorkflowClient
from stream_app.core.atomic import (
    AtomicEventRecord,
    AtomicResult,
    ValidationRequest,
    ValidationResponse,
)
from stream_app.core.cell import CellState, Effect, FiredTimer
from stream_app.core.dead_letters import DeadLetter
from stream_app.core.envelope import CellMessage, MessageTypes
from stream_app.core.replies import Reply
from stream_app.core.retry import Exhausted, RetryPolicy
from stream_app.core.timers import Misfire
from stream_app.core.workflow_messages import RunEnded
from stream_app.core.workflows import Node, NodeStatus, RunRecord, RunStatus
from stream_app.engine.reactor import ReactorRecord
from stream_app.engine.workflow_runs import WorkflowBehaviour
from stream_app.engine.workflows import LocalEngine
from stream_app.errors import (
    AtomicMessageError,
    ConfigError,
    DataVersionError,
    InvalidKeyError,
    InvalidMessageError,
    KafkaAuthError,
    MalformedJSONError,
    OversizedMessageError,
    QuestEventError,
    QuestNotActiveError,
    RejectMessage,
    ReplyTimeoutError,
    RequestRejectedError,
    RunConflictError,
    RunFailedError,
    RunInputError,
    RunMessageError,
    SchemaViolationError,
    StreamAppError,
    UnknownActionError,
    UnknownMessageTypeError,
    UnknownQuestError,
    UnknownRunError,
    UnknownWorkflowError,
    WorkflowDefinitionError,
    WorkflowInputError,
    WrongContextError,
)
from stream_app.runtime import Runtime
from stream_app.settings import Settings, get_settings

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "ActionContext",
    "AsyncAtomicClient",
    "AsyncEntityClient",
    "AsyncWorkflowClient",
    "AtomicClient",
    "AtomicEventRecord",
    "AtomicFold",
    "AtomicLog",
    "AtomicMessageError",
    "AtomicResult",
    "Behaviour",
    "CancelEntityTimer",
    "CellClient",
    "CellCulture",
    "CellMessage",
    "CellRun",
    "CellState",
    "ConfigError",
    "DataVersionError",
    "DeadLetter",
    "EdgeContext",
    "Effect",
    "Entity",
    "EntityClient",
    "EntityEffect",
    "EntityTimer",
    "EventRecord",
    "Exhausted",
    "Failure",
    "FiredTimer",
    "InvalidKeyError",
    "InvalidMessageError",
    "Joined",
    "KafkaAuthError",
    "LocalEngine",
    "MalformedJSONError",
    "MessageTypes",
    "Misfire",
    "NoVariables",
    "Node",
    "NodeStatus",
    "OversizedMessageError",
    "Quest",
    "QuestBehaviour",
    "QuestClient",
    "QuestEventError",
    "QuestNotActiveError",
    "ReactorRecord",
    "Reject",
    "RejectMessage",
    "Reply",
    "ReplyTimeoutError",
    "RequestRejectedError",
    "RetryPolicy",
    "RunConflictError",
    "RunEnded",
    "RunFailedError",
    "RunInputError",
    "RunMessageError",
    "RunRecord",
    "RunStatus",
    "Runtime",
    "SchemaViolationError",
    "Settings",
    "StreamAppError",
    "UnknownActionError",
    "UnknownMessageTypeError",
    "UnknownQuestError",
    "UnknownRunError",
    "UnknownWorkflowError",
    "Validation",
    "ValidationRequest",
    "ValidationResponse",
    "Workflow",
    "WorkflowBehaviour",
    "WorkflowClient",
    "WorkflowDefinitionError",
    "WorkflowInputError",
    "WrongContextError",
    "__version__",
    "get_settings",
    "serve_validator",
]
