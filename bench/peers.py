"""The stateful counter cell against its peers: Quix Streams, plain Faust and the careful loop,
under at-least-once and exactly-once, timed to durability.

Quix Streams is the Python library a user would pick instead of stream_app (confluent-kafka,
RocksDB state with changelog topics, both guarantees), so it is the peer the cell is measured
against (``R_quix``, goal >= 1.5 under each guarantee). One run measures, for each guarantee of
``--guarantees``, four subjects on one broker, each on its own app id (input topic, changelog,
consumer group), all with ``--partitions`` partitions and the same records (``--records``
increments of 1 over ``--cells`` cells, keys partitioned with murmur2):

1. **careful**: the careful hand-written loop (:func:`bench._common.run_careful_loop`, the same
   pydantic envelope and data model as the cell), at-least-once, and its exactly-once variant
   (a transactional producer, the offsets sent into the transaction of each commit interval).
2. **quix**: the counter in Quix Streams (:mod:`bench.apps.quix_counter`, ``Application`` with a
   stateful ``apply``), ``processing_guarantee`` ``at-least-once`` / ``exactly-once``. Quix
   pins a confluent-kafka older than the project's, so it runs with its own virtualenv,
   ``bench/.venv-quix``, made on first use (or by ``--setup``) with ``python3.11 -m venv`` and
   ``pip install quixstreams==`` :data:`QUIX_VERSION`, as a subprocess whose CPU is measured.
3. **faust**: the plain Faust agent + Table (``bench.apps.faust_counter``), Faust's
   ``at_least_once`` / ``exactly_once``.
4. **cell**: the counter as a stream_app cell (``bench.apps.cell_counter``), ``at_least_once``
   / ``exactly_once``.

Every subject validates each record with the same envelope model
(:data:`bench.apps.model.MESSAGES`) and keeps the cell's :class:`~bench.apps.model.Count`; every
subject commits on the cell's commit interval (``Settings.commit_interval_s``); every producer
has ``linger.ms`` 5 (the plain Faust subject gets ``producer_linger_ms`` 5, which the cell's Faust
producer has already) and idempotence, except Faust's aiokafka producer at at-least-once (Faust
enables idempotence only for its transactional producers), which the report states.

**What is timed: durability**, as :mod:`bench.cells_throughput` does it: from the subject taking
its first record to the commit that covers the last one (everything produced for the records
acknowledged first). For the loop, the return of its final commit; for the workers and Quix,
the moment their group's committed offsets are seen at the end of the input (polled every
50 ms). ``applied_s`` is the time to the last record applied to state. CPU is the processing
process's user + system time (every thread) over the durable interval. Before the timed rounds
every subject runs once on ``--warmup`` records (not reported).

**Correctness and changelog volume.** After each run the subject's changelog topic is read to
its end (``read_committed``): the records in it are counted (``changelog_records``: Quix writes
one record per key changed per commit, the loop one per key per batch, the cell and Faust one
per update) and the last count of every cell must equal the increments sent to it, so that a
fast but wrong subject is caught (``counts_correct``; the run exits with status 1 if any is
not).

Prints one JSON object: each subject's figures per guarantee (medians over ``--rounds``), and
the ratios: ``R_quix_alo``/``R_quix_eos`` = cell / Quix, ``R_faust_*`` = cell / Faust,
``R_state_*`` = cell / careful (events per second to durability), ``R_eos`` = cell exactly-once
/ cell at-least-once (goal >= 0.75), ``R_eos_careful`` and ``R_eos_quix`` for reference;
``R_<peer>_applied_<g>``: the same ratios to the last record applied, and the CPU per event
ratios.

**How Quix commits** (3.28.1, ``Application._run_dataframe``): one message per ``poll``; after
each poll (``consumer_poll_timeout`` 1 s when idle) it checks its checkpoint, which expires
``commit_interval`` after it was opened (at start, then after each commit), not after its first
record. A commit writes the checkpoint's state to RocksDB and produces one changelog record
per key changed in it, flushes the producer, then commits the offsets (or, exactly-once, sends
them into the transaction and commits it). Like the cell's, its durable time for a run of a few
seconds depends on where the commit timer stands when the input starts: ``applied_s`` and CPU
per event are the steadier figures there.

Run: ``.venv/bin/python -m bench.peers [--records N] [--cells N] [--partitions N] [--rounds N]
[--guarantees G ...] [--save]``; ``--setup`` only makes the Quix virtualenv.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from bench._common import (
    PARTITIONS,
    DurableMeasurement,
    MachineLoad,
    Measurement,
    WorkerOptions,
    add_worker_arguments,
    check_worker_arguments,
    make_records,
    median_of,
    process_cpu_seconds,
    produce_all,
    run_careful_loop,
    save_result,
    setup_app,
    wait_committed,
)
from bench.apps.model import BEHAVIOUR
from bench.cells_throughput import PYDANTIC_CODEC, parse_pydantic, run_worker
from stream_app.settings import Settings
from stream_app.testing import ConditionTimeout, ProbeFailed, wait_for
from stream_app.testing.dev_broker import kafka_broker, project_root

#: The Quix Streams release measured (the latest on PyPI when this benchmark was written).
QUIX_VERSION = "3.28.1"
#: The Quix subject's own virtualenv (Quix pins ``confluent-kafka<2.13``; the project has 2.16).
QUIX_VENV = project_root() / "bench" / ".venv-quix"
#: The interpreter the Quix virtualenv is made with.
QUIX_BASE_PYTHON = "python3.11"
GUARANTEES = ("at_least_once", "exactly_once")
SUFFIX = {"at_least_once": "alo", "exactly_once": "eos"}
SUBJECTS = ("careful", "cell", "quix", "faust")
GOALS = {"R_quix": 1.5, "R_state": 0.6, "R_faust": 1.0, "R_eos": 0.75}
#: Longest a subject may take to process the records before the run fails.
PROCESS_TIMEOUT_S = 1800.0
#: Longest the Quix process may take to stop after SIGTERM before it is killed.
QUIX_STOP_S = 30.0

#: ``decode(changelog key, changelog value) -> (cell id, count)``.
Decode = Callable[[bytes, bytes], tuple[bytes, int]]


# --- the Quix virtualenv --------------------------------------------------------------------


def quix_requirements() -> dict[str, str]:
    """What the Quix virtualenv must hold: Quix Streams :data:`QUIX_VERSION`. (Its pydantic is
    the one Quix allows, which may be older than the project's; the report gives both.)"""
    return {"quixstreams": QUIX_VERSION}


def quix_python() -> Path:
    """The Quix virtualenv's interpreter; the virtualenv is made (or remade) when it does not
    hold :func:`quix_requirements`."""
    python = QUIX_VENV / "bin" / "python"
    wanted = quix_requirements()
    if python.exists() and all(_venv_version(python, p) == v for p, v in wanted.items()):
        return python
    base = shutil.which(QUIX_BASE_PYTHON)
    if base is None:
        raise RuntimeError(f"{QUIX_BASE_PYTHON} not found: it makes the Quix virtualenv")
    print(f"making {QUIX_VENV} with {wanted}", file=sys.stderr)
    subprocess.run([base, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *(f"{p}=={v}" for p, v in wanted.items())],
        check=True,
        stdout=sys.stderr,
    )
    return python


def _venv_version(python: Path, package: str) -> str | None:
    result = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def quix_versions(python: Path) -> dict[str, str | None]:
    """The versions the Quix subject runs with (its virtualenv's, not the project's)."""
    packages = ("quixstreams", "confluent-kafka", "pydantic", "rocksdict", "orjson")
    versions: dict[str, str | None] = {name: _venv_version(python, name) for name in packages}
    script = "import confluent_kafka; print(confluent_kafka.libversion()[0])"
    versions["librdkafka"] = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    return versions


# --- changelogs: volume and correctness -----------------------------------------------------


def _count_of(value: bytes) -> int:
    return int(json.loads(value)["count"])


def decode_plain(key: bytes, value: bytes) -> tuple[bytes, int]:
    """The careful loop's and Faust's changelog: the cell id, the :class:`Count` JSON."""
    return key, _count_of(value)


def decode_quix(key: bytes, value: bytes) -> tuple[bytes, int]:
    """Quix's changelog: ``<message key>|<state key as JSON>``, the state value as JSON."""
    cell, _, state_key = key.partition(b"|")
    if state_key != b'"count"':
        raise ValueError(f"unexpected Quix state key {key!r}")
    return cell, _count_of(value)


def decode_cell(key: bytes, value: bytes) -> tuple[bytes, int]:
    """The cell's changelog: the cell id, the stored cell record (its data under ``data``)."""
    return key, int(json.loads(value)["data"]["count"])


def read_changelog(bootstrap: str, topic: str, decode: Decode) -> tuple[int, dict[bytes, int]]:
    """Every committed record of ``topic`` (``read_committed``): their number, and the last
    count of each cell."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-peers-reader-{os.getpid()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.topics[topic].partitions)]
        ends = {}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition] = high
            tp.offset = low
        consumer.assign(partitions)
        records = 0
        last: dict[bytes, int] = {}

        def drained() -> bool:
            positions = consumer.position([TopicPartition(topic, p) for p in ends])
            return all(tp.offset >= ends[tp.partition] for tp in positions if ends[tp.partition])

        deadline = time.monotonic() + 300
        while not drained():
            if time.monotonic() > deadline:
                raise ConditionTimeout(f"changelog {topic} not read to its end in 300s")
            for message in consumer.consume(1000, timeout=0.5):
                if message.error():
                    continue
                key, value = message.key(), message.value()
                if key is None or value is None:
                    continue
                cell, count = decode(key, value)
                last[cell] = count
                records += 1
        return records, last
    finally:
        consumer.close()


def check_counts(records: list[tuple[bytes, bytes]], counts: dict[bytes, int]) -> dict[str, Any]:
    """Compare the changelog's last counts with the increments sent to each cell."""
    expected = collections.Counter(key for key, _ in records)
    wrong = sorted(k for k in expected.keys() | counts.keys() if counts.get(k) != expected[k])
    return {
        "counts_correct": not wrong,
        "cells_wrong": len(wrong),
        **(
            {"example_wrong": [[k.decode(), counts.get(k), expected[k]] for k in wrong[:3]]}
            if wrong
            else {}
        ),
    }


# --- the subjects ---------------------------------------------------------------------------

#: A subject's measurement and its other figures (changelog records, counts, misrouted).
Result = tuple[DurableMeasurement, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Setup:
    """What every subject of a run shares.

    Attributes:
        bootstrap: The broker.
        workdir: The run's scratch folder (state, progress files, logs unless ``--keep``).
        partitions: Partitions of every topic.
        python: The Quix virtualenv's interpreter.
        options: How the ``faust worker`` subjects are started.
    """

    bootstrap: str
    workdir: Path
    partitions: int
    python: Path
    options: WorkerOptions

    def new_app(self, name: str) -> Settings:
        """A fresh app id and its counter topics."""
        return setup_app(self.bootstrap, self.workdir, name, partitions=self.partitions)

    def changelog(
        self, topic: str, decode: Decode, records: list[tuple[bytes, bytes]]
    ) -> dict[str, Any]:
        """The records in a subject's changelog, and whether its last counts are right."""
        count, last = read_changelog(self.bootstrap, topic, decode)
        return {"changelog_records": count, **check_counts(records, last)}


def run_careful(setup: Setup, records: list[tuple[bytes, bytes]], guarantee: str) -> Result:
    """The careful loop (at-least-once, or its transactional variant) on a fresh app id."""
    settings = setup.new_app(f"careful-{SUFFIX[guarantee]}")
    produce_all(setup.bootstrap, settings.input_topic(BEHAVIOUR), records)
    measured = run_careful_loop(
        bootstrap=setup.bootstrap,
        group=settings.app_id,
        topic=settings.input_topic(BEHAVIOUR),
        changelog=settings.changelog_topic(BEHAVIOUR),
        db_path=setup.workdir / f"{settings.app_id}-rocksdb",
        expected=len(records),
        parse=parse_pydantic,
        codec=PYDANTIC_CODEC,
        commit_interval_s=settings.commit_interval_s,
        exactly_once=guarantee == "exactly_once",
    )
    return measured, setup.changelog(settings.changelog_topic(BEHAVIOUR), decode_plain, records)


def run_faust_worker(
    setup: Setup,
    records: list[tuple[bytes, bytes]],
    guarantee: str,
    *,
    module: str,
    name: str,
    decode: Decode,
    env: dict[str, str] | None = None,
) -> Result:
    """A ``faust worker`` subject (plain Faust or the cell) under ``guarantee``."""
    settings = setup.new_app(f"{name}-{SUFFIX[guarantee]}")
    measured, figures = run_worker(
        setup.bootstrap,
        setup.workdir,
        records,
        module=module,
        name=f"{name} ({guarantee})",
        options=setup.options,
        settings=settings,
        env_extra={"STREAM_APP_PROCESSING_GUARANTEE": guarantee, **(env or {})},
    )
    changelog = setup.changelog(settings.changelog_topic(BEHAVIOUR), decode, records)
    return measured, {**figures, **changelog}


def faust_linger_options(options: WorkerOptions) -> dict[str, str]:
    """The plain Faust subject's ``BENCH_FAUST_OPTIONS``: ``--faust-options`` with
    ``producer_linger_ms`` 5 unless they set it (the cell's Faust producer has it already)."""
    extra = json.loads(options.faust_options) if options.faust_options else {}
    return {"BENCH_FAUST_OPTIONS": json.dumps({"producer_linger_ms": 5, **extra})}


def quix_changelog_topic(group: str, topic: str) -> str:
    """The changelog topic Quix makes for the default store of ``topic`` in ``group``."""
    return f"changelog__{group}--{topic}--default"


def run_quix(setup: Setup, records: list[tuple[bytes, bytes]], guarantee: str) -> Result:
    """The Quix subject: :mod:`bench.apps.quix_counter` in the Quix virtualenv, timed to its
    group's offsets committed to the end of the input, stopped with SIGTERM."""
    settings = setup.new_app(f"quix-{SUFFIX[guarantee]}")
    topic = settings.input_topic(BEHAVIOUR)
    produce_all(setup.bootstrap, topic, records)
    progress_file = setup.workdir / f"{settings.app_id}-progress.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(project_root()),
        "BENCH_BOOTSTRAP": setup.bootstrap,
        "BENCH_GROUP": settings.app_id,
        "BENCH_TOPIC": topic,
        "BENCH_STATE_DIR": str(setup.workdir / "quix-state"),
        "BENCH_GUARANTEE": guarantee,
        "BENCH_COMMIT_INTERVAL_S": str(settings.commit_interval_s),
        "BENCH_EXPECTED": str(len(records)),
        "BENCH_PROGRESS_FILE": str(progress_file),
    }
    log_dir = setup.options.keep or setup.workdir
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{settings.app_id}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(setup.python), "-m", "bench.apps.quix_counter"],
            env=env,
            cwd=project_root(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def progress() -> dict[str, Any]:
            if process.poll() is not None:
                raise ProbeFailed(f"Quix process died:\n{log_path.read_text()[-4000:]}")
            if not progress_file.exists():
                return {"done_wall": None}
            snapshot: dict[str, Any] = json.loads(progress_file.read_text())
            return snapshot

        done = wait_for(
            progress,
            lambda s: s["done_wall"] is not None,
            timeout=PROCESS_TIMEOUT_S,
            interval=0.25,
            what=f"quix ({guarantee}): all {len(records)} records applied",
        )
        committed_at = wait_committed(setup.bootstrap, settings.app_id, topic)
        committed_cpu = process_cpu_seconds(process.pid)
    finally:
        _stop(process)
    if done["count"] != len(records):
        raise AssertionError(f"quix applied {done['count']} records, sent {len(records)}")
    durable = Measurement(
        events=len(records),
        seconds=committed_at - done["first_wall"],
        cpu_seconds=committed_cpu - done["first_cpu"],
    )
    measured = DurableMeasurement(durable, done["done_wall"] - done["first_wall"])
    changelog = quix_changelog_topic(settings.app_id, topic)
    return measured, setup.changelog(changelog, decode_quix, records)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(QUIX_STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_round(
    setup: Setup, records: list[tuple[bytes, bytes]], guarantees: list[str]
) -> dict[str, dict[str, Result]]:
    """Every subject once under every guarantee, in a fixed order, on the same records."""
    results: dict[str, dict[str, Result]] = {}
    for guarantee in guarantees:
        # The cell right after the careful loop it is compared with (R_state): a change in
        # the machine's speed between the two is then as small as it can be.
        results[guarantee] = {
            "careful": run_careful(setup, records, guarantee),
            "cell": run_faust_worker(
                setup,
                records,
                guarantee,
                module="bench.apps.cell_counter",
                name="cell",
                decode=decode_cell,
            ),
            "quix": run_quix(setup, records, guarantee),
            "faust": run_faust_worker(
                setup,
                records,
                guarantee,
                module="bench.apps.faust_counter",
                name="faust",
                decode=decode_plain,
                env=faust_linger_options(setup.options),
            ),
        }
    return results


# --- the report -----------------------------------------------------------------------------


def _middle(values: list[Any]) -> Any:
    return sorted(values)[len(values) // 2]


def _subject(rounds: list[Result]) -> dict[str, Any]:
    measured = [m for m, _ in rounds]
    figures = median_of([m.durable for m in measured]).as_json()
    figures["applied_s"] = round(_middle([m.applied_s for m in measured]), 3)
    if len(rounds) > 1:
        figures["rounds_events_per_s"] = [round(m.durable.events_per_s, 1) for m in measured]
        figures["rounds_cpu_us_per_event"] = [
            round(m.durable.cpu_us_per_event, 1) for m in measured
        ]
    extras = [extra for _, extra in rounds]
    figures["changelog_records"] = _middle([e["changelog_records"] for e in extras])
    figures["counts_correct"] = all(e["counts_correct"] for e in extras)
    figures["cells_wrong"] = max(e["cells_wrong"] for e in extras)
    if "misrouted" in extras[0]:
        figures["misrouted"] = sum(e["misrouted"] for e in extras)
    for e in extras:
        if "example_wrong" in e:
            figures["example_wrong"] = e["example_wrong"]
    return figures


def ratios(
    medians: dict[str, dict[str, Measurement]],
    applied: dict[str, dict[str, float]],
    guarantees: list[str],
) -> dict[str, float]:
    """The headline ratios of events per second to durability (see the module docstring), the
    CPU per event ratios, and beside each ``R_<peer>_<g>`` the same ratio to the last record
    applied (``R_<peer>_applied_<g>``): to durability, a run of a few seconds is quantized by
    the commit interval; to the last record applied, it is not."""
    found: dict[str, float] = {}
    for guarantee in guarantees:
        cell = medians[guarantee]["cell"].events_per_s
        suffix = SUFFIX[guarantee]
        for name, other in (("R_quix", "quix"), ("R_faust", "faust"), ("R_state", "careful")):
            found[f"{name}_{suffix}"] = round(cell / medians[guarantee][other].events_per_s, 3)
            found[f"{name}_applied_{suffix}"] = round(
                applied[guarantee][other] / applied[guarantee]["cell"], 3
            )
            cpu = medians[guarantee]["cell"].cpu_us_per_event
            found[f"cpu_per_event_cell_over_{other}_{suffix}"] = round(
                cpu / medians[guarantee][other].cpu_us_per_event, 3
            )
    if set(GUARANTEES) <= set(guarantees):
        for name, subject in (
            ("R_eos", "cell"),
            ("R_eos_careful", "careful"),
            ("R_eos_quix", "quix"),
        ):
            eos = medians["exactly_once"][subject].events_per_s
            found[name] = round(eos / medians["at_least_once"][subject].events_per_s, 3)
    return found


def goals(found: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each goal of issue 12 this benchmark measures (:data:`GOALS`), met or not; the
    ``R_eos_careful`` and ``R_eos_quix`` references have none."""
    met: dict[str, dict[str, Any]] = {}
    for name, value in found.items():
        family = name if name in GOALS else name.removesuffix("_alo").removesuffix("_eos")
        if family in GOALS:
            met[name] = {"goal": f">= {GOALS[family]}", "met": value >= GOALS[family]}
    return met


def main() -> None:
    """Warm every subject up, run them ``--rounds`` times and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=50_000, help="increments to process")
    parser.add_argument("--cells", type=int, default=10_000, help="distinct cells they go to")
    parser.add_argument(
        "--partitions", type=int, default=PARTITIONS, help="partitions of every topic"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every subject (median)")
    parser.add_argument(
        "--warmup", type=int, default=5_000, help="records of the untimed first round (0: none)"
    )
    parser.add_argument(
        "--guarantees", nargs="+", choices=GUARANTEES, default=list(GUARANTEES), metavar="G"
    )
    parser.add_argument(
        "--save", action="store_true", help="also write the report to bench/results/peers.json"
    )
    parser.add_argument("--setup", action="store_true", help="only make the Quix virtualenv")
    add_worker_arguments(parser)
    args = parser.parse_args()
    check_worker_arguments(parser, args)
    python = quix_python()
    if args.setup:
        print(json.dumps({"quix_venv": str(QUIX_VENV), **quix_versions(python)}, indent=2))
        return
    options = WorkerOptions.from_args(args)
    records = make_records(args.records, args.cells)
    guarantees: list[str] = list(dict.fromkeys(args.guarantees))
    results: dict[str, dict[str, list[Result]]] = {
        g: {name: [] for name in SUBJECTS} for g in guarantees
    }
    with tempfile.TemporaryDirectory(prefix="stream-app-peers-") as tmp, kafka_broker() as broker:
        setup = Setup(broker.bootstrap, Path(tmp), args.partitions, python, options)
        if args.warmup:
            run_round(setup, records[: args.warmup], guarantees)
        load = MachineLoad()
        for _ in range(args.rounds):
            for guarantee, subjects in run_round(setup, records, guarantees).items():
                for name, result in subjects.items():
                    results[guarantee][name].append(result)
    machine_load = load.figures()
    medians = {
        g: {name: median_of([m.durable for m, _ in rounds]) for name, rounds in subjects.items()}
        for g, subjects in results.items()
    }
    applied = {
        g: {name: _middle([m.applied_s for m, _ in rounds]) for name, rounds in subjects.items()}
        for g, subjects in results.items()
    }
    found = ratios(medians, applied, guarantees)
    subjects_report = {
        g: {name: _subject(rounds) for name, rounds in subjects.items()}
        for g, subjects in results.items()
    }
    all_correct = all(
        figures["counts_correct"] for per in subjects_report.values() for figures in per.values()
    )
    report = {
        "benchmark": "peers",
        "records": args.records,
        "cells": args.cells,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "warmup_records": args.warmup,
        "broker": broker.source,
        "commit_interval_s": Settings(app_id="bench-peers").commit_interval_s,
        "machine_load": machine_load,
        **options.as_json(),
        "quix": {
            "venv": str(QUIX_VENV.relative_to(project_root())),
            **quix_versions(python),
            "pydantic_of_the_other_subjects": version("pydantic"),
        },
        "timed": "first record taken -> the commit covering the last record (everything "
        "produced acknowledged); applied_s: -> last record applied to state. CPU = user+sys of "
        "the processing process over the durable interval",
        "producers": "linger.ms 5 + enable.idempotence + acks=all for careful, quix and the "
        "cell's confluent-kafka producers; faust (aiokafka, the cell's Faust producer too): "
        "acks=all, producer_linger_ms 5, idempotence only under exactly_once (transactional)",
        "changelog_records": "records in the subject's changelog topic after a round "
        "(read_committed; median over rounds)",
        "all_counts_correct": all_correct,
        "subjects": subjects_report,
        **found,
        "goals": goals(found),
    }
    if args.save:
        save_result("peers", report)
    print(json.dumps(report, indent=2))
    if not all_correct:
        sys.exit(1)


if __name__ == "__main__":
    main()
