"""Two workflows: Gruffle's generic job, and a fork/join job. Run them on the local engine::

    python -m stream_app.examples.workflows local            # both, sequentially
    python -m stream_app.examples.workflows local --parallel 4

or on Kafka, where the workflow behaviour ``jobs`` runs both (its runs are cells, their tasks
are shared by every worker)::

    faust -A stream_app.examples.workflows worker -l info
    stream-app workflows run jobs generic --payload '{"input": 3}'

``generic``: ``stage1 → stage2 → stage3 → output``, each stage a node whose payload grows,
``{input}`` → ``{input, a}`` → ``{input, a, b}``, until the output node holds ``{c}`` and
traces the three stages before it.

``sources``: the root node names a topic; one action fetches it from three sources, each on a
fork of its own (``fetch`` nodes, processed in parallel by as many workers as there are); when
the three forks complete, the join node ``gathered`` holds the three fetched documents and its
action writes the ``summary``. The fetches are deterministic fakes (a hash of source and topic),
so every run of the same input gives the same nodes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence

from pydantic import BaseModel

from stream_app import (
    EdgeContext,
    Joined,
    LocalEngine,
    Node,
    RunRecord,
    Runtime,
    Workflow,
    WorkflowBehaviour,
)

__all__ = [
    "SOURCES",
    "Fetched",
    "Input",
    "Output",
    "Summary",
    "Topic",
    "WithA",
    "WithAB",
    "app",
    "fetch",
    "generic",
    "jobs",
    "main",
    "open_sources",
    "runtime",
    "sources",
    "stage1",
    "stage2",
    "stage3",
    "summarise",
]

# -- generic: stage1 -> stage2 -> stage3 -> output ------------------------------------------


class Input(BaseModel):
    """The generic job's input."""

    input: int


class WithA(Input):
    """The input and stage 1's result."""

    a: int


class WithAB(WithA):
    """The input and the results of stages 1 and 2."""

    b: int


class Output(BaseModel):
    """The generic job's result."""

    c: int


generic = Workflow("generic", root="stage1")
generic.node("stage1", payload=Input)
generic.node("stage2", payload=WithA)
generic.node("stage3", payload=WithAB)
generic.node("output", payload=Output, final=True)


@generic.action("stage1", to=["stage2"])
def stage1(node: Node, ctx: EdgeContext) -> None:
    """``a = input + 1``."""
    ctx.derive("stage2", payload={**node.payload, "a": node.payload["input"] + 1})


@generic.action("stage2", to=["stage3"])
def stage2(node: Node, ctx: EdgeContext) -> None:
    """``b = input * a``."""
    ctx.derive("stage3", payload={**node.payload, "b": node.payload["input"] * node.payload["a"]})


@generic.action("stage3", to=["output"])
def stage3(node: Node, ctx: EdgeContext) -> None:
    """``c = input + a + b``: the output keeps only ``c``."""
    p = node.payload
    ctx.derive("output", payload=Output(c=p["input"] + p["a"] + p["b"]))


generic.validate()

# -- sources: three fetches on forks, joined, summarised --------------------------------------

#: The sources the fork/join job fetches from.
SOURCES = ("archive", "news", "wiki")


class Topic(BaseModel):
    """The fork/join job's input: what to look up."""

    topic: str


class Source(BaseModel):
    """A fetch to make: one source, one topic."""

    source: str
    topic: str


class Fetched(BaseModel):
    """A fetched document (a fake: its size and digest are a hash of source and topic)."""

    source: str
    topic: str
    size: int
    digest: str


class Summary(BaseModel):
    """The fork/join job's result."""

    topic: str
    sources: list[str]
    total_size: int


sources = Workflow("sources", root="topic")
sources.node("topic", payload=Topic)
sources.node("fetch", payload=Source)
sources.node("fetched", payload=Fetched)
sources.node("gathered", payload=Joined)
sources.node("summary", payload=Summary, final=True)
sources.join("gathered", forks_of="topic")


@sources.action("topic", to=["fetch"], fork=True)
def open_sources(node: Node, ctx: EdgeContext) -> None:
    """One ``fetch`` node per source, each on a fork of its own."""
    for source in SOURCES:
        ctx.derive("fetch", payload=Source(source=source, topic=node.payload["topic"]))


@sources.action("fetch", to=["fetched"])
def fetch(node: Node, ctx: EdgeContext) -> None:
    """Fetch the topic from the source (a deterministic fake)."""
    source, topic = node.payload["source"], node.payload["topic"]
    digest = hashlib.sha256(f"{source}/{topic}".encode()).hexdigest()
    size = int(digest[:4], 16)
    ctx.derive("fetched", payload=Fetched(source=source, topic=topic, size=size, digest=digest))


@sources.action("gathered", to=["summary"])
def summarise(node: Node, ctx: EdgeContext) -> None:
    """Sum up the three documents."""
    docs = [Fetched.model_validate(doc) for doc in node.payload["forks"]]
    ctx.derive(
        "summary",
        payload=Summary(
            topic=docs[0].topic if docs else "",
            sources=[doc.source for doc in docs],
            total_size=sum(doc.size for doc in docs),
        ),
    )


sources.validate()

# -- on Kafka -------------------------------------------------------------------------------

#: Both workflows' runs, as cells of one workflow behaviour.
jobs = WorkflowBehaviour("jobs", workflows=[generic, sources])

if __name__ != "__main__":  # faust -A imports the module; the local engine needs no Faust app
    runtime = Runtime()
    app = runtime.app
    runtime.workflows(jobs)

# -- command line ---------------------------------------------------------------------------


def _report(record: RunRecord) -> dict[str, object]:
    return {
        "workflow": record.workflow,
        "run_id": record.run_id,
        "status": record.status.value,
        "finals": [
            {
                "name": node.name,
                "payload": node.payload,
                "trace": [record.nodes[i].name for i in node.trace],
            }
            for node in record.finals()
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``local [--parallel N]``: run both examples on the local engine, print JSON lines."""
    parser = argparse.ArgumentParser(prog="python -m stream_app.examples.workflows")
    parser.add_argument("engine", choices=["local"])
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--input", type=int, default=3)
    parser.add_argument("--topic", default="kafka")
    args = parser.parse_args(argv)
    runs = [(generic, {"input": args.input}), (sources, {"topic": args.topic})]
    for workflow, payload in runs:
        record = LocalEngine(workflow).run(payload, parallel=args.parallel)
        print(json.dumps(_report(record), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
