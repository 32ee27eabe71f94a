"""Pins the public API of the package root: ``stream_app.__all__`` and what it names."""

from __future__ import annotations

import inspect

import stream_app
from stream_app import errors

PUBLIC_API = [
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

#: Errors a user of the public API never catches: raised inside a worker (which then stops), by
#: the Faust plumbing, by topic administration or by the development broker. They stay in
#: :mod:`stream_app.errors` but not in the root.
INTERNAL_ERRORS = {
    "BrokerError",
    "BrokerStartError",
    "ChangelogError",
    "FlushTimeoutError",
    "PortInUseError",
    "ToolMissingError",
    "TopicDefinitionError",
    "TopicPlanError",
    "TransactionError",
}


def test_all_is_pinned() -> None:
    assert stream_app.__all__ == PUBLIC_API


def test_all_is_sorted_and_unique() -> None:
    assert list(stream_app.__all__) == sorted(stream_app.__all__)
    assert len(set(stream_app.__all__)) == len(stream_app.__all__)


def test_every_exported_name_exists() -> None:
    missing = [name for name in stream_app.__all__ if not hasattr(stream_app, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from stream_app import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC_API


def test_version_is_a_release_string() -> None:
    parts = stream_app.__version__.split(".")
    assert len(parts) == 3
    assert all(p.isdigit() for p in parts)


def test_every_error_class_is_a_stream_app_error() -> None:
    error_names = [name for name in stream_app.__all__ if name.endswith("Error")]
    assert len(error_names) == 26
    for name in error_names:
        cls = getattr(stream_app, name)
        assert inspect.isclass(cls), name
        assert issubclass(cls, stream_app.StreamAppError), name
        assert issubclass(cls, Exception), name


def test_root_exports_every_error_a_user_catches_and_no_internal_one() -> None:
    exported = {name for name in stream_app.__all__ if hasattr(errors, name)}
    assert exported | INTERNAL_ERRORS == set(errors.__all__)
    assert not exported & INTERNAL_ERRORS
    for name in exported:
        assert getattr(stream_app, name) is getattr(errors, name)


def test_the_plumbing_is_not_in_the_root() -> None:
    plumbing = {"StreamApp", "create_app", "DeadLetterSink", "RuntimeMetrics", "Envelope"}
    assert not plumbing & set(stream_app.__all__)


def test_every_public_name_is_documented() -> None:
    undocumented = [
        name
        for name in stream_app.__all__
        if name != "__version__" and not (inspect.getdoc(getattr(stream_app, name)) or "").strip()
    ]
    assert undocumented == []


def test_exported_names_are_defined_in_stream_app() -> None:
    foreign = [
        name
        for name in stream_app.__all__
        if name != "__version__"
        and not getattr(stream_app, name).__module__.startswith("stream_app")
    ]
    assert foreign == []


def test_every_public_member_of_an_exported_class_is_documented() -> None:
    undocumented = [
        f"{name}.{attribute}"
        for name in stream_app.__all__
        if inspect.isclass(cls := getattr(stream_app, name))
        for attribute, member in vars(cls).items()
        if not attribute.startswith("_")
        and (callable(member) or isinstance(member, property | classmethod | staticmethod))
        and not (inspect.getdoc(getattr(cls, attribute)) or "").strip()
    ]
    assert undocumented == []


def test_the_cells_api_is_importable_from_the_root() -> None:
    from stream_app.api.behaviour import Behaviour
    from stream_app.api.culture import CellCulture, CellRun
    from stream_app.core.cell import CellState, Effect, FiredTimer
    from stream_app.core.timers import Misfire

    assert stream_app.CellState is CellState
    assert stream_app.Effect is Effect
    assert stream_app.FiredTimer is FiredTimer
    assert stream_app.Behaviour is Behaviour
    assert stream_app.CellCulture is CellCulture
    assert stream_app.CellRun is CellRun
    assert stream_app.Misfire is Misfire
    assert issubclass(stream_app.RejectMessage, stream_app.StreamAppError)
    assert stream_app.RejectMessage.reason == "rejected"


def test_the_retry_policy_is_importable_from_the_root() -> None:
    from stream_app.core.retry import Exhausted, RetryPolicy

    assert stream_app.RetryPolicy is RetryPolicy
    assert stream_app.Exhausted is Exhausted
