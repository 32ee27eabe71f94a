"""Pins the public API of the package root: ``stream_app.__all__`` and what it names."""

from __future__ import annotations

import inspect

import stream_app
from stream_app import errors

PUBLIC_API = [
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
    assert len(error_names) == 20
    for name in error_names:
        cls = getattr(stream_app, name)
        assert inspect.isclass(cls), name
        assert issubclass(cls, stream_app.StreamAppError), name
        assert issubclass(cls, Exception), name


def test_root_exports_every_error_of_the_errors_module() -> None:
    assert set(errors.__all__) <= set(stream_app.__all__)
    for name in errors.__all__:
        assert getattr(stream_app, name) is getattr(errors, name)


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
