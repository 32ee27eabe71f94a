"""A client process for the request/reply concurrency test (run as ``python -m``).

Usage: ``python -m tests.apps.entity_sender <name> <count> <account>...``, with the
app's STREAM_APP_* settings in the environment. It deposits ``1..count`` cents into the
accounts in turn with the blocking :class:`EntityClient` (``send``, waiting for each reply) and
prints one JSON line: ``{"name", "replies": [[account, amount, seq, balance], ...]}``.
"""

from __future__ import annotations

import json
import sys

from stream_app.clients.entities import EntityClient


def main(argv: list[str]) -> None:
    name, count, accounts = argv[0], int(argv[1]), argv[2:]
    replies = []
    with EntityClient(timeout=60) as client:
        for n in range(1, count + 1):
            account = accounts[n % len(accounts)]
            reply = client.request(("account", account), "deposit", {"amount": n})
            replies.append([account, n, reply.seq, reply.state["balance"]])
    print(json.dumps({"name": name, "replies": replies}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
