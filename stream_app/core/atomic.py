"""The wire format of atomic logs: requests, validations, results and the stored scope.

An atomic log (Atomic Store's model) admits one event at a time to the canonical log of a
*scope* (an auction lot, an account), contingent on the events already there, and leaves the
decision to the event's *originator*, a validator. These are the JSON documents that cross
Kafka, all published as JSON Schemas (``stream-app schemas``):

- :class:`StoreRequest`: ``store`` message on ``<app_id>.<log>.in``, keyed by scope; the
  envelope's ``id`` is the request id and its ``reply_to`` where the :class:`AtomicResult`
  goes.
- :class:`ValidationRequest`: on ``<app_id>.<log>.validation``, keyed by scope: the prospective
  event, the past events (all of them, or the last K and the fold's summary) and the request
  id. A validator answers with a :class:`ValidationResponse`, sent as a
  ``validation-response`` message to the log's input (:func:`response_envelope`).
- :class:`AtomicEventRecord`: an accepted event on ``<app_id>.<log>.events`` (retained, not
  compacted), keyed by scope, with its sequence number.
- :class:`AtomicScope`: the scope's cell data: sequence number, summary, recent events, the
  validation in flight and the durable queue of requests behind it.

Events, summaries and reasons travel as JSON objects here; :class:`~stream_app.api.atomic.
AtomicLog` validates them with the user's models at the edges.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stream_app.core.envelope import envelope_bytes

__all__ = [
    "VALIDATION_RESPONSE",
    "AtomicEventRecord",
    "AtomicResult",
    "AtomicScope",
    "InFlight",
    "PendingStore",
    "StoreRequest",
    "ValidationRequest",
    "ValidationResponse",
    "response_envelope",
]

#: The message type of a validator's answer on the log's input topic.
VALIDATION_RESPONSE = "validation-response"


class StoreRequest(BaseModel):
    """``store_if_valid(event)``: the body of a ``store`` message.

    Attributes:
        event: The prospective event (validated against the log's event model on arrival; its
            scope must be the message key).
    """

    model_config = ConfigDict(extra="forbid")

    event: dict[str, Any]


class ValidationRequest(BaseModel):
    """What a validator is asked: may ``prospective_event`` join the scope's log?

    Attributes:
        request_id: The request's id (the ``store`` message's id). After a worker restart the
            same request may be asked again with the same id (and a higher ``attempt``):
            answer it again, the same way.
        log: The atomic log.
        scope: The scope (the log's key).
        attempt: 1 for the first time this request is asked, 2... after a worker restart.
        seq: How many events the scope's log holds (the sequence number of its last one).
        prospective_event: The event to decide on.
        past_events: The scope's events, oldest first: all of them, or, for a log declaring a
            fold, the last ``keep_last``.
        summary: The fold of all the scope's events (logs declaring a fold), else ``None``.
        reply_topic: Where the answer goes: the log's input topic, as a
            ``validation-response`` message keyed by scope (:func:`response_envelope`).
        deadline_ms: When the validation times out (milliseconds since the epoch).
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    log: str
    scope: str
    attempt: int = 1
    seq: int
    prospective_event: dict[str, Any]
    past_events: list[dict[str, Any]] = Field(default_factory=list)
    summary: dict[str, Any] | None = None
    reply_topic: str
    deadline_ms: int


class ValidationResponse(BaseModel):
    """A validator's answer (``ValidationResponse`` of Atomic Store).

    Attributes:
        request_id: The id of the request answered.
        scope: The request's scope (the message key must be the same).
        validation_did_pass: Whether the event may be stored.
        event: The event to store if it passed, e.g. normalised; ``None`` stores the
            prospective event as it came.
        reason: Why it failed (a JSON object of the log's reason model), if it failed.
        meta: Free-form JSON, given back to the caller on both outcomes.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    scope: str
    validation_did_pass: bool
    event: dict[str, Any] | None = None
    reason: dict[str, Any] | None = None
    meta: Any = None


class AtomicResult(BaseModel):
    """The outcome of one ``store_if_valid`` (``Result`` of Atomic Store).

    A rejection is a normal result, returned to the caller: never a dead letter.

    Attributes:
        request_id: The request's id.
        log: The atomic log.
        scope: The scope.
        was_accepted: Whether the event is now in the scope's log.
        prospective_event: The event as it was asked to be stored.
        stored_event: The event as stored (the validator may have normalised it), if accepted.
        seq: The scope's sequence number after the request (the stored event's, if accepted).
        stored_event_list: The scope's latest events after the request, oldest first: at
            most the log's ``result_events`` (100 by default), and at most ``keep_last`` for a
            log declaring a fold.
        reason: Why it was rejected: the validator's reason, or the log's ``timeout_reason``
            (no answer within ``validation_timeout``) or ``overflow_reason`` (too many
            requests waiting).
        meta: The validator's ``meta`` (``None`` after a timeout or an overflow).
        timed_out: Whether the rejection is a validation timeout.
        duplicate: Whether the request id had been accepted already (a caller's retry): nothing
            is stored again, and ``seq`` and ``stored_event`` are those of the first time (the
            event only while it is among the scope's recent events).
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    log: str
    scope: str
    was_accepted: bool
    prospective_event: dict[str, Any]
    stored_event: dict[str, Any] | None = None
    seq: int
    stored_event_list: list[dict[str, Any]] = Field(default_factory=list)
    reason: dict[str, Any] | None = None
    meta: Any = None
    timed_out: bool = False
    duplicate: bool = False


class AtomicEventRecord(BaseModel):
    """An accepted event as the log's event topic holds it (key = scope).

    Attributes:
        log: The atomic log.
        scope: The scope.
        seq: The event's number in the scope's log: 1, 2, 3... without gaps.
        event: The event as stored.
        request_id: The request that stored it.
        meta: The validator's ``meta``.
        at_ms: When it was accepted (the validator's answer's timestamp).
    """

    model_config = ConfigDict(extra="forbid")

    log: str
    scope: str
    seq: int
    event: dict[str, Any]
    request_id: str
    meta: Any = None
    at_ms: int


class PendingStore(BaseModel):
    """A request waiting in the scope's durable queue.

    Attributes:
        request_id: Its id.
        event: The prospective event.
        reply_to: Where its result goes, if the caller waits for one.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: str
    event: dict[str, Any]
    reply_to: str | None = None


class InFlight(PendingStore):
    """The request being validated.

    Attributes:
        attempt: How many times it was asked (a worker restart asks again).
        deadline_ms: When it times out.
    """

    attempt: int = 1
    deadline_ms: int


class AtomicScope(BaseModel):
    """A scope's cell data.

    Attributes:
        seq: How many events its log holds.
        summary: The fold of all its events (logs declaring a fold).
        recent: Its events, oldest first: all of them, or the last ``keep_last``.
        in_flight: The request being validated, if any.
        queue: The requests waiting behind it, in arrival order.
        accepted: Requests accepted.
        rejected: Requests rejected (timeouts and overflows included).
        timed_out: Validations that timed out.
        late: Validator answers that came for no request in flight (late or repeated), ignored.
        accepted_ids: The latest accepted requests, ``"<seq>:<request_id>"`` (their event's
            sequence number and their id; at most the log's ``remember_accepted``): a store
            repeating one is answered with its first result, not stored twice.
    """

    model_config = ConfigDict(extra="forbid")

    seq: int = 0
    summary: dict[str, Any] | None = None
    recent: list[dict[str, Any]] = Field(default_factory=list)
    in_flight: InFlight | None = None
    queue: list[PendingStore] = Field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    timed_out: int = 0
    late: int = 0
    accepted_ids: list[str] = Field(default_factory=list)


def response_envelope(response: ValidationResponse) -> bytes:
    """The record value a validator produces to the log's input topic (key = the scope)."""
    return envelope_bytes(VALIDATION_RESPONSE, response, id=f"response:{response.request_id}")
