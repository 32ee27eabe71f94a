"""The in-worker validator of an atomic log: a reactor handler of its validation topic.

Every worker reads its share of ``<app_id>.<log>.validation``
(:meth:`Runtime.atomic <stream_app.runtime.Runtime.atomic>`) and, for each
:class:`~stream_app.core.atomic.ValidationRequest`, runs the log's validator (a sync one in a
thread, so the worker's event loop keeps serving cells) and sends the
:class:`~stream_app.core.atomic.ValidationResponse` to the scope's cell as a
``validation-response`` message. As for every reactor handler, the request's offset is
committed only after the answer was flushed to Kafka: a crash in between asks the validator
again (the cell applies the first answer and counts the other as late).

A validator that raises is tried again under the handler's retry policy, then the request is
dead-lettered; the scope's validation then times out (``timeout_reason``), which is what a
caller would see of a remote validator that fails. A request record that is not a
``ValidationRequest`` is dead-lettered at once (reason ``schema``): no retry can help it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from stream_app.api.atomic import AtomicLog
from stream_app.core.atomic import ValidationRequest, response_envelope
from stream_app.engine.ports import DeadLetterPublisher
from stream_app.engine.reactor import ReactorRecord

__all__ = ["ResponseSender", "ValidatorRunner"]

logger = logging.getLogger(__name__)

#: Sends an answer to its scope: ``(scope, envelope)``, handed to the worker's producer.
ResponseSender = Callable[[str, bytes], Awaitable[None]]


class ValidatorRunner:
    """Runs an atomic log's in-worker validator on each record of its validation topic.

    Args:
        log: The atomic log (with :attr:`~stream_app.api.atomic.AtomicLog.validate_fn`).
        send: Hands an answer's envelope to the producer, for the scope's cell.
        dead_letters: Where a malformed request goes.
    """

    def __init__(
        self, log: AtomicLog[Any, Any], send: ResponseSender, dead_letters: DeadLetterPublisher
    ) -> None:
        self.log = log
        self._send = send
        self._dead_letters = dead_letters

    async def __call__(self, record: ReactorRecord) -> None:
        """Validate the request in ``record`` and send the answer to its scope."""
        try:
            request = ValidationRequest.model_validate_json(record.value or b"")
        except ValidationError as exc:
            logger.error(
                "%s: dead-lettering %s[%s]@%s, not a validation request: %s",
                self.log.name,
                record.topic,
                record.partition,
                record.offset,
                exc,
            )
            await self._dead_letters.publish_record(
                key=record.key,
                value=record.value,
                reason="schema",
                error=f"not a validation request: {exc}",
                behaviour=self.log.name,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return
        response = await self.log.run_validator(request)
        await self._send(request.scope, response_envelope(response))
