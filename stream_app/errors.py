"""The stream_app exception tree.

Every error stream_app raises on purpose derives from :class:`StreamAppError`. Whether retrying
can help is part of the type: ``retriable`` is ``True`` on errors caused by something outside the
caller's input (a broker that is not up yet), ``False`` on errors that will fail the same way
again (a malformed topic definition, a message that does not validate).

::

    StreamAppError
    ├── ConfigError                 settings or definitions that cannot be used
    │   ├── TopicDefinitionError    a file under topics/ is malformed (names file and field)
    │   ├── WorkflowDefinitionError a workflow that cannot run (unknown or unreachable node
    │   │                           types, a join on forks that cannot exist, ...)
    │   └── KafkaAuthError          the cluster refused the credentials or the TLS handshake
    ├── TopicPlanError              topics apply refuses a change (e.g. shrinking partitions)
    ├── FlushTimeoutError           produced records could not be sent before a commit (retriable)
    ├── ChangelogError              outputs of processed input were not acknowledged in time
    ├── TransactionError            an exactly_once transaction could not be started or committed
    ├── BrokerError                 the development broker could not be provided
    │   ├── ToolMissingError        java or mvn is not installed
    │   ├── PortInUseError          the broker port is taken by another process
    │   └── BrokerStartError        the broker process died or did not answer in time (retriable)
    ├── RejectMessage               raised by a handler: this message can never apply (dead letter)
    │   ├── QuestEventError         a quest event, add, remove or call that can never apply
    │   │   ├── UnknownQuestError       names a quest the context behaviour does not define
    │   │   ├── UnknownActionError      names an action the quest does not define or that
    │   │   │                           does not listen to the event
    │   │   ├── QuestNotActiveError     a selector event or call for a quest not active
    │   │   └── WrongContextError       event_context differs from the record key
    │   ├── RunMessageError         a workflow run's start, cancel or result that cannot apply
    │   │   ├── UnknownWorkflowError    a start names a workflow the behaviour does not run
    │   │   ├── RunInputError           a start's payload fails the root node type's model
    │   │   ├── RunConflictError        a start for a run id taken by another workflow's run
    │   │   └── UnknownRunError         a cancel or result for a run that does not exist
    │   └── AtomicMessageError      an atomic log's store or validation response that cannot
    │                               apply (the event fails the log's model, the scope is not
    │                               the key, a validator's answer is malformed)
    ├── DataVersionError            stored cell data the behaviour cannot read (parks the cell)
    ├── ReplyTimeoutError           a request/reply send got no reply in time (retriable)
    ├── RequestRejectedError        the entity refused a message sent with send
    ├── RunFailedError              a workflow run waited for ended failed or cancelled
    ├── WorkflowInputError          a run's input no workflow can take (unknown workflow,
    │                               a payload failing the root node type's model)
    └── InvalidMessageError         a record cannot become a cell message (goes to dead letters)
        ├── OversizedMessageError
        ├── MalformedJSONError
        ├── SchemaViolationError
        ├── UnknownMessageTypeError
        └── InvalidKeyError
"""

from __future__ import annotations

__all__ = [
    "AtomicMessageError",
    "BrokerError",
    "BrokerStartError",
    "ChangelogError",
    "ConfigError",
    "DataVersionError",
    "FlushTimeoutError",
    "InvalidKeyError",
    "InvalidMessageError",
    "KafkaAuthError",
    "MalformedJSONError",
    "OversizedMessageError",
    "PortInUseError",
    "QuestEventError",
    "QuestNotActiveError",
    "RejectMessage",
    "ReplyTimeoutError",
    "RequestRejectedError",
    "RunConflictError",
    "RunFailedError",
    "RunInputError",
    "RunMessageError",
    "SchemaViolationError",
    "StreamAppError",
    "ToolMissingError",
    "TopicDefinitionError",
    "TopicPlanError",
    "TransactionError",
    "UnknownActionError",
    "UnknownMessageTypeError",
    "UnknownQuestError",
    "UnknownRunError",
    "UnknownWorkflowError",
    "WorkflowDefinitionError",
    "WorkflowInputError",
    "WrongContextError",
]


class StreamAppError(Exception):
    """Root of every error raised by stream_app."""

    retriable: bool = False


class ConfigError(StreamAppError):
    """Settings or declarative definitions that cannot be used as given."""


class TopicDefinitionError(ConfigError):
    """A topic definition file is malformed.

    Attributes:
        path: The file that holds the bad definition.
        field: The dotted location of the offending field (``topics[2].partitions``).
    """

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        super().__init__(f"{path}: {field}: {problem}")


class WorkflowDefinitionError(ConfigError):
    """A workflow definition that cannot run, refused when it is validated (at registration).

    The message names every problem found: node types that are unknown, unreachable from the
    root or without a way on, joins on forks no action opens, actions on final node types.
    """


class KafkaAuthError(ConfigError):
    """The Kafka cluster refused this process: its SASL credentials (wrong user, password or
    mechanism) or its TLS handshake (a broker certificate no trusted authority signed, or a
    client certificate the broker refused).

    Not retriable: the same settings fail the same way. The message names the user, the
    mechanism and the settings to check; a worker stops with it at start instead of
    reconnecting for ever.
    """


class TopicPlanError(StreamAppError):
    """``topics apply`` refuses a change it cannot make safely (e.g. fewer partitions)."""


class FlushTimeoutError(StreamAppError):
    """Records a commit depends on could not be sent; the commit is refused.

    The worker stops instead of committing offsets ahead of their output; on restart the
    uncommitted input is processed again.
    """

    retriable = True


class ChangelogError(StreamAppError):
    """Changelog or output records of processed input were not acknowledged (or not in
    ``kafka_call_timeout_s``); the input they cover is not committed and the worker stops."""

    reason = "changelog"


class TransactionError(StreamAppError):
    """A partition's transaction could not be started or committed (``exactly_once``).

    The worker stops; nothing of the transaction is visible, and its input is read again by the
    next owner of the partition (which rebuilds the tables from the changelog first).
    """

    reason = "transaction"


class BrokerError(StreamAppError):
    """The development Kafka broker could not be provided."""


class ToolMissingError(BrokerError):
    """A program needed to run the development broker (java, mvn) is not installed."""


class PortInUseError(BrokerError):
    """The port the development broker should listen on is already taken."""


class BrokerStartError(BrokerError):
    """The broker process exited or did not answer before the deadline."""

    retriable = True


class RejectMessage(StreamAppError):
    """Raised by a behaviour to refuse the message it was given, for good.

    Unlike any other exception (which is retried and then parks the cell), a rejected message
    goes straight to the dead-letter topic with reason ``rejected`` and this error's text; the
    cell's data, timers and outputs stay as they were before the message, and the cell keeps
    being served.
    """

    reason = "rejected"


class QuestEventError(RejectMessage):
    """A quest message that can never apply to its context: dead-lettered with :attr:`reason`,
    the context unchanged."""

    reason = "quest"


class UnknownQuestError(QuestEventError):
    """The message names a quest the context behaviour does not define."""

    reason = "unknown-quest"


class UnknownActionError(QuestEventError):
    """The message names an action the quest does not define, or a selector event names an
    action that does not listen to the event's name."""

    reason = "unknown-action"


class QuestNotActiveError(QuestEventError):
    """A selector event or a call for a quest that is not active in the context (an
    *instance* event for an ended instance is ignored instead: see the quest layer)."""

    reason = "quest-not-active"


class WrongContextError(QuestEventError):
    """The event's ``event_context`` differs from the record key (the context it reached)."""

    reason = "wrong-context"


class RunMessageError(RejectMessage):
    """A message for a workflow run that can never apply: dead-lettered with :attr:`reason`,
    the run unchanged."""

    reason = "workflow"


class UnknownWorkflowError(RunMessageError):
    """A start names a workflow the workflow behaviour does not run."""

    reason = "unknown-workflow"


class RunInputError(RunMessageError):
    """A start's payload fails the payload model of the workflow's root node type (the
    message holds the validation errors)."""

    reason = "workflow-input"


class RunConflictError(RunMessageError):
    """A start for a run id that is already the id of a run of another workflow (a start
    repeated for the same workflow is ignored instead)."""

    reason = "run-exists"


class UnknownRunError(RunMessageError):
    """A cancel or a task result for a run id no run has."""

    reason = "unknown-run"


class AtomicMessageError(RejectMessage):
    """A message for an atomic log's scope that can never apply: a prospective event failing
    the log's event model or whose scope is not the record key, or a validator's answer whose
    event or reason fails the log's models. Dead-lettered with :attr:`reason`; the scope is
    unchanged (a validation waiting for a malformed answer times out)."""

    reason = "atomic"


class DataVersionError(StreamAppError):
    """A cell's stored data cannot be read by the behaviour: written by a newer version, or
    the behaviour's ``migrate`` hook failed. The cell is parked until the code is fixed."""


class InvalidMessageError(StreamAppError):
    """A Kafka record that cannot be turned into a message for a cell.

    The record goes to the dead-letter topic with :attr:`reason` (a short machine-readable code)
    and the error text; the worker keeps running.
    """

    reason: str = "invalid"


class OversizedMessageError(InvalidMessageError):
    """The record's value is larger than the configured maximum."""

    reason = "oversized"


class MalformedJSONError(InvalidMessageError):
    """The record's value is not valid UTF-8 JSON."""

    reason = "malformed-json"


class SchemaViolationError(InvalidMessageError):
    """The record is JSON but does not match the envelope or the body schema of its type."""

    reason = "schema"


class UnknownMessageTypeError(InvalidMessageError):
    """The envelope names a message type the behaviour does not handle."""

    reason = "unknown-type"


class InvalidKeyError(InvalidMessageError):
    """The record has no key, or a key that is not a UTF-8 cell id."""

    reason = "invalid-key"


class ReplyTimeoutError(StreamAppError):
    """A request/reply ``send`` got no reply in time.

    The message may still be handled later (it is durable once sent): a timeout says only that
    the answer did not arrive, not that the message was lost.
    """

    retriable = True


class RequestRejectedError(StreamAppError):
    """The entity refused the message sent with ``send`` (it is in the dead-letter topic).

    Attributes:
        reason: The dead letter's reason code (``rejected``, ...).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RunFailedError(StreamAppError):
    """A workflow run a client waited for ended without succeeding.

    Attributes:
        run_id: The run.
        status: ``failed`` or ``cancelled``.
        ended: The run's :class:`~stream_app.core.workflow_messages.RunEnded` record (its
            message, its nodes count, when it ended).
    """

    def __init__(self, message: str, *, run_id: str, status: str, ended: object) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.ended = ended


class WorkflowInputError(StreamAppError):
    """A run that cannot start: an unknown workflow, or an input that fails the payload model
    of the workflow's root node type (the message holds the validation errors)."""
