"""A bidder process of the atomic tests: ``python -m tests.apps.atomic_bidder LOT BIDDER N``.

It bids ``N`` times on ``LOT`` of both ``lots`` and ``bids`` (:mod:`tests.apps.atomic_logs`),
alternately, each bid a little above the highest it knows of (from its last result, so bids of
several bidders race), and prints every :class:`~stream_app.core.atomic.AtomicResult` as a JSON
line. The settings come from the environment (``STREAM_APP_*``).
"""

from __future__ import annotations

import random
import sys

from stream_app.clients.atomic import AtomicClient
from tests.apps.atomic_logs import Bid, bids, lots


def main(lot: str, bidder: str, count: int) -> None:
    """Bid ``count`` times on ``lot`` of each log; print the results."""
    rng = random.Random(bidder)
    with AtomicClient(lots, timeout=120) as on_lots, AtomicClient(bids, timeout=120) as on_bids:
        known = {"lots": 0, "bids": 0}
        for _ in range(count):
            for name, client in (("lots", on_lots), ("bids", on_bids)):
                bid = Bid(lot=lot, bidder=bidder, amount=known[name] + rng.randint(1, 3))
                result = client.store_if_valid(bid)
                known[name] = max((e["amount"] for e in result.stored_event_list), default=0)
                print(result.model_dump_json(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
