"""Atomic logs (Atomic Store's model) on the cell runtime: one event at a time per scope.

An :class:`AtomicLog` admits events to the canonical log of a *scope* (an auction lot, an
account) one at a time, each contingent on the events before it, and leaves the decision to
the event's originator, a *validator*::

    class Bid(BaseModel):
        lot: str
        bidder: str
        amount: int

    class Refusal(BaseModel):
        code: str

    bids = AtomicLog(
        "bids",
        event=Bid,
        reason=Refusal,
        scope=lambda bid: bid.lot,
        timeout_reason=Refusal(code="timeout"),
        validation_timeout=timedelta(seconds=5),
    )

    @bids.validator
    def beats_the_highest(v: Validation[Bid, BaseModel]) -> Accept[Bid] | Reject[Refusal]:
        highest = max((bid.amount for bid in v.past_events), default=0)
        if v.prospective_event.amount > highest:
            return Accept()
        return Reject(Refusal(code="too-low"), meta={"highest": highest})

    runtime.atomic(bids)

A scope is one cell of the log's behaviour, keyed by the scope id (taken from the event, as
Atomic Store's ``StoreIfValid(event)`` did). Its data (:class:`~stream_app.core.atomic.
AtomicScope`) holds the log's sequence number, its recent events (all of them, or the last
``keep_last`` and a fold's summary), the validation in flight and the durable queue of the
requests behind it. The protocol, with ``A`` the app id and ``L`` the log:

1. ``store_if_valid(event)`` is a ``store`` message on ``A.L.in`` keyed by the scope. If no
   validation is in flight, a :class:`~stream_app.core.atomic.ValidationRequest` goes to
   ``A.L.validation`` (keyed by the scope) and the durable timer ``validation`` is armed;
   otherwise the request waits in the queue. One validation is in flight per scope; other
   scopes proceed in parallel.
2. A validator answers with a ``validation-response`` message on ``A.L.in``: the in-worker
   validator (:meth:`AtomicLog.validator`, run by every worker on its share of
   ``A.L.validation``, in a thread, never on the worker's event loop), or a remote one: any
   Kafka client that reads ``A.L.validation`` and produces
   :func:`~stream_app.core.atomic.response_envelope` (:func:`~stream_app.clients.atomic.
   serve_validator` is one in Python).
3. The answer to the request in flight decides: an accepted event gets the next sequence
   number, is appended to the scope's events (and summary), and is published to ``A.L.events``;
   the :class:`~stream_app.core.atomic.AtomicResult` goes to the caller's reply address; the
   next queued request is sent for validation. All of it commits together with the answer.
4. No answer within ``validation_timeout``: the request is rejected with ``timeout_reason`` and
   the next one proceeds. An answer for a request that is no longer in flight (late, or
   repeated) is ignored and counted (``AtomicScope.late``).
5. After a worker restart (or a partition move) the request in flight is asked again, with the
   same request id and ``attempt`` + 1: validators must expect a request twice.

Atomic logs need fencing: :meth:`Runtime.atomic <stream_app.runtime.Runtime.atomic>` runs the
app ``exactly_once`` (and refuses an explicit ``at_least_once``), so an answer is applied once,
and a zombie worker cannot accept an event its successor also decides on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

from pydantic import BaseModel, ValidationError

from stream_app.api.behaviour import Behaviour
from stream_app.core.atomic import (
    VALIDATION_RESPONSE,
    AtomicEventRecord,
    AtomicResult,
    AtomicScope,
    InFlight,
    PendingStore,
    StoreRequest,
    ValidationRequest,
    ValidationResponse,
)
from stream_app.core.cell import CellState
from stream_app.core.replies import Reply, parse_reply_to
from stream_app.core.retry import RetryPolicy
from stream_app.errors import AtomicMessageError, ConfigError

__all__ = [
    "MAX_REQUEST_BYTES",
    "MAX_SCOPE_BYTES",
    "VALIDATION_TIMER",
    "Accept",
    "AtomicFold",
    "AtomicLog",
    "Reject",
    "Validation",
    "Validator",
    "Verdict",
]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)

#: The durable timer of the validation in flight.
VALIDATION_TIMER = "validation"

#: The largest scope record (JSON) a log keeps by default: under the 1 MiB a Kafka record may
#: have by default, with room for the cell record around it. A log without a fold keeps every
#: event in its scope's record, so this bounds such a log's length.
MAX_SCOPE_BYTES = 900_000

#: The largest validation request (JSON) sent: under the 1 MiB a topic accepts by default
#: (``max.message.bytes``). A request that would be larger is refused with the overflow reason.
MAX_REQUEST_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class AtomicFold(Generic[S]):
    """A summary of a scope's events, so that validators need not receive all of them.

    Args:
        state: The pydantic model of the summary.
        init: The summary of a scope without events.
        update: ``update(event, summary) -> summary``: applies one accepted event.
        keep_last: How many of the latest events validations (and results) still receive.
    """

    state: type[S]
    init: Callable[[], S]
    update: Callable[[Any, S], S]
    keep_last: int = 10


class Validation(Generic[E, S]):
    """What an in-worker validator is given: the request, with its events typed.

    The typed views are made when first read (a validator that needs only the summary does
    not pay for typing every past event, an inline validator nothing for the request).
    """

    __slots__ = ("_event", "_past", "_raw", "_request", "_summary", "_summary_model", "_typed")

    def __init__(
        self,
        request: ValidationRequest | Callable[[], ValidationRequest],
        event_model: type[E],
        summary_model: type[S] | None,
        prospective_event: E | None = None,
        raw: tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        """``request``, or a function that makes it when it is first read (then ``raw`` holds
        its prospective event, past events and summary as JSON objects)."""
        if raw is None:
            if not isinstance(request, ValidationRequest):
                request = request()
            raw = (request.prospective_event, request.past_events, request.summary)
        self._raw = raw
        self._request = request
        self._typed = event_model
        self._summary_model = summary_model
        self._event = prospective_event
        self._past: list[E] | None = None
        self._summary: S | None = None

    @property
    def request(self) -> ValidationRequest:
        """The request (ids, attempt, seq, deadline; the events as JSON objects)."""
        request = self._request
        if not isinstance(request, ValidationRequest):
            request = self._request = request()
        return request

    @property
    def prospective_event(self) -> E:
        """The event to decide on."""
        if self._event is None:
            self._event = self._typed.model_validate(self._raw[0])
        return self._event

    @property
    def past_events(self) -> list[E]:
        """The scope's events, oldest first (all, or the fold's last ``keep_last``)."""
        if self._past is None:
            self._past = [self._typed.model_validate(e) for e in self._raw[1]]
        return self._past

    @property
    def summary(self) -> S | None:
        """The fold of all of them (logs declaring a fold), else ``None``."""
        raw = self._raw[2]
        if self._summary is None and self._summary_model is not None and raw is not None:
            self._summary = self._summary_model.model_validate(raw)
        return self._summary

    def __repr__(self) -> str:
        return f"<Validation {self.request.log}/{self.request.scope} {self.request.request_id}>"


@dataclass(frozen=True, slots=True)
class Accept(Generic[E]):
    """A validator's "yes": store ``event`` (default: the prospective event as it came)."""

    event: E | None = None
    meta: Any = None


@dataclass(frozen=True, slots=True)
class Reject(Generic[R]):
    """A validator's "no", with the reason given back to the caller."""

    reason: R | None = None
    meta: Any = None


#: What a validator returns.
Verdict = Accept[Any] | Reject[Any]
#: An in-worker validator: sync (run in a thread) or async.
Validator = Callable[[Validation[Any, Any]], Verdict | Awaitable[Verdict]]


@dataclass(slots=True)
class _Decision:
    accepted: bool
    event: dict[str, Any] | None
    reason: dict[str, Any] | None
    meta: Any = None
    timed_out: bool = False
    at_ms: int = 0
    #: The stored event and the summary before it, as models, when the decision has them.
    typed_event: BaseModel | None = None
    typed_summary: BaseModel | None = None


class AtomicLog(Behaviour[AtomicScope], Generic[E, R]):
    """An atomic log: per-scope event logs, each admitting one validated event at a time.

    Args:
        name: The log's name: its scopes are cells of the behaviour ``name`` (input
            ``<app_id>.<name>.in``), validations go to ``<app_id>.<name>.validation`` and
            accepted events to ``<app_id>.<name>.events``.
        event: The pydantic model of the events.
        reason: The pydantic model of rejection reasons.
        scope: ``scope(event) -> str``: the scope an event belongs to.
        timeout_reason: The reason of a validation that did not answer in time.
        validation_timeout: How long a validation may take (seconds or a timedelta).
        fold: A summary validators get with the last ``keep_last`` events, instead of every
            event (see :class:`AtomicFold`); the full log stays on the event topic.
        max_pending: The most requests a scope queues behind the one in flight; more are
            rejected with ``overflow_reason``.
        overflow_reason: The reason of a request refused because the queue is full, or
            because the scope's record would outgrow ``max_scope_bytes`` (default:
            ``timeout_reason``).
        max_scope_bytes: The largest scope record kept (a log without a fold keeps all its
            events there, and every log its queue): a request that would grow it beyond is
            refused with ``overflow_reason``.
        result_events: How many of the latest events a result's ``stored_event_list`` holds
            (its ``seq`` says how many the log has).
        remember_accepted: How many of the latest accepted request ids a scope remembers: a
            store repeating one (a caller retrying after a lost reply) gets the first result
            back (``duplicate``) instead of being validated again.
        retry: How a failing engine callback is retried before the scope is parked.

    Raises:
        ValueError: A bad name, or a ``keep_last``, ``max_pending``, ``result_events`` or
            ``remember_accepted`` below 0.
    """

    def __init__(
        self,
        name: str,
        *,
        event: type[E],
        reason: type[R],
        scope: Callable[[E], str],
        timeout_reason: R,
        validation_timeout: float | timedelta,
        fold: AtomicFold[Any] | None = None,
        max_pending: int = 1000,
        overflow_reason: R | None = None,
        max_scope_bytes: int = MAX_SCOPE_BYTES,
        result_events: int = 100,
        remember_accepted: int = 8,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            name,
            messages={"store": StoreRequest, VALIDATION_RESPONSE: ValidationResponse},
            data=AtomicScope,
            retry=retry,
        )
        if fold is not None and fold.keep_last < 0:
            raise ValueError(f"atomic log {name!r}: keep_last must be >= 0")
        if max_pending < 0:
            raise ValueError(f"atomic log {name!r}: max_pending must be >= 0")
        if result_events < 0 or remember_accepted < 0:
            raise ValueError(
                f"atomic log {name!r}: result_events and remember_accepted must be >= 0"
            )
        self.event_model = event
        self.reason_model = reason
        self.scope_of = scope
        self.timeout_reason = timeout_reason
        self.overflow_reason = overflow_reason if overflow_reason is not None else timeout_reason
        seconds = (
            validation_timeout.total_seconds()
            if isinstance(validation_timeout, timedelta)
            else float(validation_timeout)
        )
        if seconds <= 0:
            raise ValueError(f"atomic log {name!r}: validation_timeout must be positive")
        self.timeout_ms = max(1, round(seconds * 1000))
        self.fold = fold
        self.max_pending = max_pending
        self.max_scope_bytes = max_scope_bytes
        self.result_events = result_events
        self.remember_accepted = remember_accepted
        #: The in-worker validator, if one is registered (:meth:`validator`).
        self.validate_fn: Validator | None = None
        #: Whether :attr:`validate_fn` runs in the scope's invocation (:meth:`validator`).
        self.inline = False
        self._input_topic: str | None = None
        self._validation_topic: str | None = None
        self._events_topic: str | None = None

    # -- declaration -------------------------------------------------------------------------

    @overload
    def validator(self, fn: Validator) -> Validator: ...

    @overload
    def validator(self, *, inline: bool = False) -> Callable[[Validator], Validator]: ...

    def validator(
        self, fn: Validator | None = None, *, inline: bool = False
    ) -> Validator | Callable[[Validator], Validator]:
        """Decorator: register ``fn`` as the in-worker validator of this log.

        ``fn(validation) -> Accept | Reject`` (or a coroutine function returning one). By
        default a validation is a request on the validation topic that every worker serves: a
        sync function runs in a thread, so a slow one never stalls the worker; an exception is
        retried (the reactor's retry policy) and the validation times out if it never
        answers. Without an in-worker validator the log's validations are for a remote
        validator (see the module docs).

        ``@log.validator(inline=True)`` is for a quick, pure, synchronous function (like an
        entity's ``handle``): it is called in the scope's own invocation, so a store is
        decided in the transaction that takes it, with no request, answer or timer (and no
        timeout: it must not block). An exception is retried and then parks the scope, like
        any cell callback's.

        Register it before the log is registered (``runtime.atomic(log)``): the runtime
        decides then whether its workers serve the log's validation topic.

        Raises:
            ValueError: ``inline`` with a coroutine function.
        """

        def register(validate: Validator) -> Validator:
            if inline and inspect.iscoroutinefunction(validate):
                raise ValueError(
                    f"atomic log {self.name!r}: an inline validator must be a plain function"
                )
            self.validate_fn = validate
            self.inline = inline
            return validate

        return register(fn) if fn is not None else register

    def bind(self, *, input_topic: str, validation_topic: str, events_topic: str) -> None:
        """Name the log's topics (the runtime does, from the app id)."""
        self._input_topic = input_topic
        self._validation_topic = validation_topic
        self._events_topic = events_topic

    def _bound(self, topic: str | None) -> str:
        if topic is None:
            raise ConfigError(f"atomic log {self.name!r}: register it with runtime.atomic")
        return topic

    @property
    def input_topic(self) -> str:
        """``<app_id>.<name>.in``: stores and validators' answers.

        Raises:
            ConfigError: The log was not registered on a runtime.
        """
        return self._bound(self._input_topic)

    @property
    def validation_topic(self) -> str:
        """``<app_id>.<name>.validation``: the validation requests, keyed by scope.

        Raises:
            ConfigError: The log was not registered on a runtime.
        """
        return self._bound(self._validation_topic)

    @property
    def events_topic(self) -> str:
        """``<app_id>.<name>.events``: the accepted events, keyed by scope.

        Raises:
            ConfigError: The log was not registered on a runtime.
        """
        return self._bound(self._events_topic)

    # -- typed views -------------------------------------------------------------------------

    def parse_event(self, raw: dict[str, Any], what: str) -> E:
        """``raw`` validated by the event model.

        Raises:
            AtomicMessageError: It does not validate.
        """
        try:
            return self.event_model.model_validate(raw)
        except ValidationError as exc:
            raise AtomicMessageError(f"{self.name}: {what} is not a valid event: {exc}") from exc

    def validation(
        self,
        request: ValidationRequest | Callable[[], ValidationRequest],
        prospective_event: E | None = None,
        raw: tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> Validation[E, Any]:
        """The typed :class:`Validation` of a request (what an in-worker validator gets); see
        :class:`Validation` for ``raw``."""
        summary_model = self.fold.state if self.fold is not None else None
        return Validation(request, self.event_model, summary_model, prospective_event, raw)

    def response(self, request: ValidationRequest, verdict: Verdict) -> ValidationResponse:
        """The wire answer to ``request`` for a validator's ``verdict``.

        Raises:
            TypeError: ``verdict`` is neither :class:`Accept` nor :class:`Reject`.
        """
        if isinstance(verdict, Accept):
            event = verdict.event
            return ValidationResponse(
                request_id=request.request_id,
                scope=request.scope,
                validation_did_pass=True,
                event=event.model_dump(mode="json") if event is not None else None,
                meta=verdict.meta,
            )
        if isinstance(verdict, Reject):
            reason = verdict.reason
            return ValidationResponse(
                request_id=request.request_id,
                scope=request.scope,
                validation_did_pass=False,
                reason=reason.model_dump(mode="json") if reason is not None else None,
                meta=verdict.meta,
            )
        raise TypeError(
            f"atomic log {self.name!r}: a validator returned {verdict!r}, "
            "not Accept(...) or Reject(...)"
        )

    async def run_validator(self, request: ValidationRequest) -> ValidationResponse:
        """Run the in-worker validator on ``request`` (sync ones in a thread).

        Raises:
            ConfigError: The log has no in-worker validator.
        """
        fn = self.validate_fn
        if fn is None:
            raise ConfigError(f"atomic log {self.name!r} has no in-worker validator")
        validation = self.validation(request)
        if inspect.iscoroutinefunction(fn):
            verdict = await fn(validation)
        else:
            verdict = await asyncio.to_thread(fn, validation)
            if inspect.isawaitable(verdict):
                verdict = await verdict
        return self.response(request, verdict)

    # -- the scope's cell --------------------------------------------------------------------

    def empty_scope(self) -> AtomicScope:
        """The data of a scope without events."""
        summary = self.fold.init().model_dump(mode="json") if self.fold is not None else None
        return AtomicScope(summary=summary)

    def handle_message(self, state: CellState[AtomicScope]) -> None:
        """A ``store`` joins the queue (or starts validating); a ``validation-response``
        decides the request in flight (see the module docs)."""
        message = state.message
        assert message is not None
        body = message.body
        if isinstance(body, StoreRequest):
            self._store(state, body, message.id or state.origin, message.reply_to)
        elif isinstance(body, ValidationResponse):
            self._answer(state, body)

    def on_timeout(self, state: CellState[AtomicScope]) -> None:
        """The validation in flight did not answer in time: reject it, start the next."""
        fired = state.timer
        data = state.data
        assert fired is not None and data is not None
        payload = fired.payload if isinstance(fired.payload, dict) else {}
        flight = data.in_flight
        if (
            fired.name != VALIDATION_TIMER
            or flight is None
            or payload.get("request_id") != flight.request_id
        ):
            logger.info("%s/%s: ignoring timer %s", self.name, state.cell_id, fired.name)
            return
        logger.info(
            "%s/%s: validation of %s timed out", self.name, state.cell_id, flight.request_id
        )
        decision = _Decision(
            accepted=False,
            event=None,
            reason=self.timeout_reason.model_dump(mode="json"),
            timed_out=True,
            at_ms=state.now_ms,
        )
        self._decide(state, data, flight, decision)
        self._ask_next(state, data, None)
        state.data = data

    def on_boot(self, state: CellState[AtomicScope]) -> None:
        """Ask the validation in flight again (same request id, ``attempt`` + 1): its answer
        may have been lost with the worker that asked."""
        data = state.data
        if data is None or data.in_flight is None:
            return
        flight = data.in_flight
        data.in_flight = None
        self._ask_next(state, data, flight, attempt=flight.attempt + 1)
        state.data = data

    def _store(
        self,
        state: CellState[AtomicScope],
        body: StoreRequest,
        request_id: str,
        reply_to: str | None,
    ) -> None:
        event = self.parse_event(body.event, "the prospective event")
        scope = self.scope_of(event)
        if scope != state.cell_id:
            raise AtomicMessageError(
                f"{self.name}: the event's scope is {scope!r}, but it was sent to scope "
                f"{state.cell_id!r} (the record key must be the scope)"
            )
        # A fresh model each invocation (the engine decodes the record for every try).
        data = state.data if state.data is not None else self.empty_scope()
        pending = PendingStore(
            request_id=request_id, event=event.model_dump(mode="json"), reply_to=reply_to
        )
        suffix = ":" + request_id
        for accepted in data.accepted_ids:
            if accepted.endswith(suffix) and accepted.partition(":")[2] == request_id:
                logger.info("%s/%s: %s was accepted already", self.name, state.cell_id, request_id)
                self._repeat(state, data, pending, int(accepted.partition(":")[0]))
                return
        flight = data.in_flight
        if (flight is not None and flight.request_id == request_id) or any(
            queued.request_id == request_id for queued in data.queue
        ):
            logger.info("%s/%s: %s is already pending", self.name, state.cell_id, request_id)
            return
        if flight is None:
            self._ask_next(state, data, pending, attempt=1, typed=event)
        elif len(data.queue) >= self.max_pending:
            self._refuse(state, data, pending, f"{self.max_pending} requests are waiting")
        else:
            queued = data.model_copy(update={"queue": [*data.queue, pending]})
            size = len(queued.model_dump_json())
            if size > self.max_scope_bytes:
                why = f"queueing it would grow the scope's record to {size} bytes"
                self._refuse(state, data, pending, why)
            else:
                data = queued
        state.data = data

    def _answer(self, state: CellState[AtomicScope], response: ValidationResponse) -> None:
        if response.scope != state.cell_id:
            raise AtomicMessageError(
                f"{self.name}: an answer for scope {response.scope!r} reached scope "
                f"{state.cell_id!r} (the record key must be the scope)"
            )
        data = state.data
        flight = data.in_flight if data is not None else None
        if data is None or flight is None or flight.request_id != response.request_id:
            logger.info(
                "%s/%s: ignoring an answer to %s, which is not in flight",
                self.name,
                state.cell_id,
                response.request_id,
            )
            if data is not None:
                data.late += 1
                state.data = data
            return
        self._decide(state, data, flight, self._decision(state, flight, response))
        self._ask_next(state, data, None)
        state.data = data

    def _decision(
        self, state: CellState[AtomicScope], pending: PendingStore, response: ValidationResponse
    ) -> _Decision:
        """What a validator's ``response`` to ``pending`` decides (its event and reason checked
        against the log's models).

        Raises:
            AtomicMessageError: The event or reason does not validate, or the event belongs
                to another scope.
        """
        stored: dict[str, Any] | None = None
        reason: dict[str, Any] | None = None
        if response.validation_did_pass:
            if response.event is None:
                stored = pending.event  # validated when it was stored
            else:
                event = self.parse_event(response.event, "the validator's event")
                if self.scope_of(event) != state.cell_id:
                    raise AtomicMessageError(
                        f"{self.name}: the validator's event belongs to scope "
                        f"{self.scope_of(event)!r}, not {state.cell_id!r}"
                    )
                stored = event.model_dump(mode="json")
        elif response.reason is not None:
            try:
                reason = self.reason_model.model_validate(response.reason).model_dump(mode="json")
            except ValidationError as exc:
                raise AtomicMessageError(
                    f"{self.name}: the validator's reason is not a valid reason: {exc}"
                ) from exc
        return _Decision(
            accepted=response.validation_did_pass,
            event=stored,
            reason=reason,
            meta=response.meta,
            at_ms=state.now_ms,
        )

    def _ask_next(
        self,
        state: CellState[AtomicScope],
        data: AtomicScope,
        pending: PendingStore | None,
        attempt: int = 1,
        typed: E | None = None,
    ) -> None:
        """Ask for ``pending``'s validation, or else (no ``pending``) the first queued one's;
        a request too large to send is refused and the next one asked. An inline validator
        decides each at once, so none stays in flight."""
        while True:
            if pending is None:
                if not data.queue:
                    return
                pending, *rest = data.queue
                data.queue = rest
                attempt = 1
                typed = None
            if self.inline:
                self._validate_inline(state, data, pending, typed)
                pending = typed = None
                continue
            if self._ask(state, data, pending, attempt):
                return
            why = f"its validation request would exceed {MAX_REQUEST_BYTES} bytes"
            self._refuse(state, data, pending, why)
            pending = None

    def _validate_inline(
        self,
        state: CellState[AtomicScope],
        data: AtomicScope,
        pending: PendingStore,
        typed: E | None,
    ) -> None:
        """Decide ``pending`` with the inline validator, in this invocation."""
        fn = self.validate_fn
        assert fn is not None

        def request() -> ValidationRequest:
            # Built from data this log validated already, and only if the validator reads it.
            return ValidationRequest.model_construct(
                request_id=pending.request_id,
                log=self.name,
                scope=state.cell_id,
                attempt=1,
                seq=data.seq,
                prospective_event=pending.event,
                past_events=data.recent,
                summary=data.summary,
                reply_topic=self.input_topic,
                deadline_ms=state.now_ms,
            )

        validation = self.validation(request, typed, (pending.event, data.recent, data.summary))
        verdict = fn(validation)
        if isinstance(verdict, Accept) and verdict.event is None:
            decision = _Decision(
                accepted=True,
                event=pending.event,
                reason=None,
                meta=verdict.meta,
                at_ms=state.now_ms,
                typed_event=typed,
                typed_summary=validation._summary,
            )
        else:
            answer = self.response(validation.request, verdict)  # type: ignore[arg-type]
            decision = self._decision(state, pending, answer)
        self._decide(state, data, pending, decision)

    def _ask(
        self, state: CellState[AtomicScope], data: AtomicScope, pending: PendingStore, attempt: int
    ) -> bool:
        """Send ``pending`` for validation and arm its timer; it becomes the one in flight.
        False: its request would be too large to send (nothing done).

        The deadline counts from the worker's clock, not the store's timestamp: a store read
        from a backlog (or after a restart) gets its whole ``validation_timeout``."""
        deadline = max(state.now_ms, state.clock_ms) + self.timeout_ms
        request = ValidationRequest(
            request_id=pending.request_id,
            log=self.name,
            scope=state.cell_id,
            attempt=attempt,
            seq=data.seq,
            prospective_event=pending.event,
            past_events=data.recent,
            summary=data.summary,
            reply_topic=self.input_topic,
            deadline_ms=deadline,
        )
        value = request.model_dump_json().encode()
        if len(value) > MAX_REQUEST_BYTES:
            return False
        state.publish(self.validation_topic, value)
        state.set_timer(
            VALIDATION_TIMER,
            at=deadline,
            payload={"request_id": pending.request_id, "attempt": attempt},
        )
        data.in_flight = InFlight(
            request_id=pending.request_id,
            event=pending.event,
            reply_to=pending.reply_to,
            attempt=attempt,
            deadline_ms=deadline,
        )
        return True

    def _repeat(
        self, state: CellState[AtomicScope], data: AtomicScope, pending: PendingStore, seq: int
    ) -> None:
        """Answer a store repeating an accepted request with that request's result."""
        index = len(data.recent) - (data.seq - seq) - 1
        stored = data.recent[index] if 0 <= index < len(data.recent) else None
        self._reply(
            state, data, pending, was_accepted=True, stored_event=stored, seq=seq, duplicate=True
        )

    def _refuse(
        self, state: CellState[AtomicScope], data: AtomicScope, pending: PendingStore, why: str
    ) -> None:
        logger.warning("%s/%s: refusing %s: %s", self.name, state.cell_id, pending.request_id, why)
        data.rejected += 1
        self._reply(
            state,
            data,
            pending,
            was_accepted=False,
            reason=self.overflow_reason.model_dump(mode="json"),
        )

    def _decide(
        self,
        state: CellState[AtomicScope],
        data: AtomicScope,
        flight: PendingStore,
        decision: _Decision,
    ) -> None:
        """Apply the decision on ``flight`` (the request in flight, or one an inline validator
        decided) to ``data`` and answer its caller."""
        if decision.accepted and not self._append(state, data, flight, decision):
            decision = _Decision(
                accepted=False,
                event=None,
                reason=self.overflow_reason.model_dump(mode="json"),
                meta=decision.meta,
                at_ms=decision.at_ms,
            )
        if decision.accepted:
            data.accepted += 1
        else:
            data.rejected += 1
            data.timed_out += decision.timed_out
        self._reply(
            state,
            data,
            flight,
            was_accepted=decision.accepted,
            stored_event=decision.event if decision.accepted else None,
            reason=decision.reason,
            meta=decision.meta,
            timed_out=decision.timed_out,
        )
        if VALIDATION_TIMER in state.timers:
            state.cancel_timer(VALIDATION_TIMER)
        data.in_flight = None

    def _append(
        self,
        state: CellState[AtomicScope],
        data: AtomicScope,
        flight: PendingStore,
        decision: _Decision,
    ) -> bool:
        """Append the accepted event to the scope (False: it would outgrow the scope record)."""
        assert decision.event is not None
        event = decision.event
        recent = [*data.recent, event]
        summary = data.summary
        fold = self.fold
        if fold is not None:
            typed_event = decision.typed_event
            if typed_event is None:
                typed_event = self.event_model.model_validate(event)
            before = decision.typed_summary
            if before is None:
                before = fold.state.model_validate(summary if summary is not None else {})
            summary = fold.update(typed_event, before).model_dump(mode="json")
            recent = recent[-fold.keep_last :] if fold.keep_last else []
        record = AtomicEventRecord(
            log=self.name,
            scope=state.cell_id,
            seq=data.seq + 1,
            event=event,
            request_id=flight.request_id,
            meta=decision.meta,
            at_ms=decision.at_ms,
        )
        value = record.model_dump_json().encode()
        keep = fold.keep_last if fold is not None else 0
        # A log without a fold grows with every event: its record is measured each time. With
        # a fold it holds at most keep_last events: measured only when they could be large.
        if fold is None or len(value) * (keep + 1 + len(data.queue)) > self.max_scope_bytes // 4:
            grown = data.model_copy(update={"recent": recent, "summary": summary})
            size = len(grown.model_dump_json())
            if size > self.max_scope_bytes:
                logger.error(
                    "%s/%s: refusing %s: the scope's record would grow to %d bytes, over the "
                    "%d it may keep (declare a fold, or raise max_scope_bytes)",
                    self.name,
                    state.cell_id,
                    flight.request_id,
                    size,
                    self.max_scope_bytes,
                )
                return False
        data.seq, data.recent, data.summary = data.seq + 1, recent, summary
        if self.remember_accepted:
            kept = (
                data.accepted_ids[-(self.remember_accepted - 1) :]
                if self.remember_accepted > 1
                else []
            )
            data.accepted_ids = [*kept, f"{data.seq}:{flight.request_id}"]
        state.publish(self.events_topic, value)
        return True

    def _latest(self, data: AtomicScope) -> list[dict[str, Any]]:
        if len(data.recent) <= self.result_events:
            return data.recent
        return data.recent[-self.result_events :] if self.result_events else []

    def _reply(
        self,
        state: CellState[AtomicScope],
        data: AtomicScope,
        pending: PendingStore,
        *,
        was_accepted: bool,
        seq: int | None = None,
        **outcome: Any,
    ) -> None:
        """Send ``pending``'s caller (if one waits) its :class:`AtomicResult`: the request, the
        scope as ``data`` now holds it (``seq`` unless given, the latest events) and
        ``outcome`` (the result's other fields)."""
        if pending.reply_to is None:
            return  # nobody waits: the result is not even built
        result = AtomicResult(
            request_id=pending.request_id,
            log=self.name,
            scope=state.cell_id,
            was_accepted=was_accepted,
            prospective_event=pending.event,
            seq=data.seq if seq is None else seq,
            stored_event_list=self._latest(data),
            **outcome,
        )
        # The engine checked the address when the store message arrived.
        topic, partition = parse_reply_to(pending.reply_to)
        reply = Reply(
            correlation_id=pending.request_id,
            behaviour=self.name,
            cell_id=state.cell_id,
            ok=True,
            seq=result.seq,
            events=int(result.was_accepted and not result.duplicate),  # appended now
            state=result.model_dump(mode="json"),
        )
        state.publish(topic, reply.model_dump_json().encode(), partition=partition)

    def __repr__(self) -> str:
        fold = "fold" if self.fold is not None else "full history"
        return f"<AtomicLog {self.name} event={self.event_model.__name__} {fold}>"
