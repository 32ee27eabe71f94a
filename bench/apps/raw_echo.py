"""The floor of the latency benchmark: a raw confluent-kafka consume -> produce loop.

``python -m bench.apps.raw_echo BOOTSTRAP INPUT OUTPUT GROUP`` copies every record of ``INPUT``
to the same partition of ``OUTPUT`` (key and value unchanged), with nothing in between: no
parsing, no state. It reads as the batched input of a worker does (wait up to 0.1 s for one
record, then take what else is already fetched, up to 500), produces with the workers' output
settings (``acks=all``, idempotence, ``linger.ms`` 5) and commits its offsets every 2.8 s (the
workers' default commit interval) without waiting. It runs until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

COMMIT_INTERVAL_S = 2.8


def main() -> None:
    """Run the loop until SIGTERM."""
    bootstrap, source, target, group = sys.argv[1:5]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    consumer.subscribe([source])
    pending: dict[int, int] = {}
    last_commit = time.monotonic()
    while not stopping:
        first = consumer.poll(0.1)
        messages = [first, *consumer.consume(499, 0)] if first is not None else []
        for message in messages:
            if message.error():
                continue
            partition = message.partition() or 0
            producer.produce(target, message.value(), message.key(), partition)
            pending[partition] = (message.offset() or 0) + 1
        producer.poll(0)
        if pending and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
            producer.flush(30)
            offsets = [TopicPartition(source, p, o) for p, o in pending.items()]
            consumer.commit(offsets=offsets, asynchronous=True)
            pending.clear()
            last_commit = time.monotonic()
    producer.flush(30)
    consumer.close()


if __name__ == "__main__":
    main()
