"""The console's quests and workflow runs pages: their pure helpers (graph elements, node times,
trace tree, run and instance rows, timers of a quest context, the times shown)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

from stream_app import LocalEngine, NodeStatus
from stream_app.api.workflows import RunState
from stream_app.console.quests import instance_rows, quest_views, timer_view
from stream_app.console.when import at_ms, at_text, from_now, ms_between, span
from stream_app.console.workflows import graph_elements, node_views, run_rows, trace_tree
from stream_app.core.workflows import RunRecord, RunStatus
from stream_app.examples.workflows import generic, sources

_ticks = count()


def ticking() -> datetime:
    """A clock that moves 5 ms each time it is read."""
    return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(milliseconds=5 * next(_ticks))


def fork_join_run() -> RunRecord:
    return LocalEngine(sources, clock=ticking).run({"topic": "kafka"}, run_id="run-1")


# -- workflow runs ----------------------------------------------------------------------------


def test_graph_elements_hold_every_node_with_its_status_and_every_fork_and_join_edge() -> None:
    record = fork_join_run()
    elements = graph_elements(record)
    nodes = [element["data"] for element in elements["nodes"]]
    assert sorted(n["id"] for n in nodes) == sorted(record.nodes)
    for data in nodes:
        node = record.nodes[data["id"]]
        assert data["status"] == node.status.value
        assert data["label"] == f"{node.name}\n{node.status.value}", "the status is in the label"
        assert data["attempts"] == node.attempts == 1
        assert data["payload"] == node.payload
    styles = [edge["data"]["style"] for edge in elements["edges"]]
    assert styles.count("fork") == 3 and styles.count("join") == 3
    assert styles.count("action") == 4, "fetch -> fetched (3) and gathered -> summary"
    ids = {n["id"] for n in nodes}
    assert all(e["data"]["source"] in ids and e["data"]["target"] in ids for e in elements["edges"])
    assert len({e["data"]["id"] for e in elements["edges"]}) == len(elements["edges"])
    gathered = next(n for n in record.nodes.values() if n.name == "gathered")
    into_join = [
        e["data"]["source"] for e in elements["edges"] if e["data"]["target"] == gathered.id
    ]
    assert sorted(record.nodes[s].name for s in into_join) == ["fetched"] * 3


def test_a_node_with_retries_and_an_error_shows_them_in_its_label_and_facts() -> None:
    record = LocalEngine(generic, clock=ticking).run({"input": 1}, run_id="run-2")
    stage1 = next(n for n in record.nodes.values() if n.name == "stage1")
    failed = stage1.model_copy(
        update={"status": NodeStatus.FAILED, "message": "boom <b>", "attempts": 3}
    )
    broken = record.model_copy(update={"nodes": {**record.nodes, stage1.id: failed}})
    data = next(e["data"] for e in graph_elements(broken)["nodes"] if e["data"]["id"] == stage1.id)
    assert data["label"] == "stage1\nfailed x3"
    assert data["message"] == "boom <b>" and data["attempts"] == 3
    error_edges = [e for e in graph_elements(broken)["edges"] if e["data"]["style"] == "error"]
    assert [e["data"]["source"] for e in error_edges] == [stage1.id]


def test_a_node_is_processed_when_the_first_node_after_it_was_created() -> None:
    record = fork_join_run()
    views = {view.id: view for view in node_views(record)}
    by_name = {view.name: view for view in views.values()}
    topic, gathered, summary = by_name["topic"], by_name["gathered"], by_name["summary"]
    fetches = [v for v in views.values() if v.name == "fetch"]
    assert topic.processed_at == min(f.created_at for f in fetches)
    assert topic.took_ms == ms_between(topic.created_at, topic.processed_at)
    assert topic.took_ms is not None and topic.took_ms > 0
    for fetched in (v for v in views.values() if v.name == "fetched"):
        assert fetched.processed_at == gathered.created_at, "a fork's end: when its join came"
    assert gathered.processed_at == summary.created_at
    assert summary.processed_at is None and summary.took_ms is None, "nothing after a final"
    assert all(f.opens_fork for f in fetches) and not topic.opens_fork
    assert gathered.joins == 3
    assert next(v.name for v in node_views(record)) == "topic", "ancestors first"


def test_a_cancelled_run_shows_its_cancelled_nodes() -> None:
    record = fork_join_run()
    running = record.model_copy(
        update={
            "status": RunStatus.RUNNING,
            "finished_at": None,
            "nodes": {
                i: (
                    n.model_copy(update={"status": NodeStatus.PENDING})
                    if n.name == "summary"
                    else n
                )
                for i, n in record.nodes.items()
            },
        }
    )
    cancelled = RunState.cancel(running, at=ticking())
    statuses = {e["data"]["name"]: e["data"]["status"] for e in graph_elements(cancelled)["nodes"]}
    assert statuses["summary"] == "cancelled"
    assert statuses["topic"] == "processed"
    assert cancelled.status is RunStatus.CANCELLED


def test_the_trace_tree_nests_each_node_under_its_predecessor_and_a_join_under_the_opener() -> None:
    tree = trace_tree(fork_join_run())
    assert [item.node.name for item in tree] == ["topic"]
    under_topic = [item.node.name for item in tree[0].children]
    assert under_topic == ["fetch", "fetch", "fetch", "gathered"], "the join after the forks"
    for fork in tree[0].children[:3]:
        assert [c.node.name for c in fork.children] == ["fetched"]
        assert fork.children[0].children == []
    assert [c.node.name for c in tree[0].children[3].children] == ["summary"]


def test_run_rows_filter_by_workflow_and_status_newest_first() -> None:
    runs = {
        "a": {
            "workflow": "generic",
            "status": "succeeded",
            "nodes": 4,
            "started_at": "2030-01-01T00:00:01.000+00:00",
            "finished_at": "2030-01-01T00:00:01.250+00:00",
        },
        "b": {
            "workflow": "sources",
            "status": RunStatus.RUNNING,
            "nodes": 2,
            "started_at": "2030-01-01T00:00:03.000+00:00",
            "finished_at": None,
        },
        "c": {
            "workflow": "generic",
            "status": "failed",
            "nodes": 1,
            "started_at": "2030-01-01T00:00:02.000+00:00",
            "finished_at": "2030-01-01T00:01:04.000+00:00",
        },
        "junk": "not a run",
    }
    assert [r.run_id for r in run_rows(runs)] == ["b", "c", "a"]
    assert [r.run_id for r in run_rows(runs, workflow="generic")] == ["c", "a"]
    assert [r.run_id for r in run_rows(runs, status="running")] == ["b"]
    assert run_rows(runs, workflow="generic", status="running") == []
    took = {r.run_id: r.took for r in run_rows(runs)}
    assert took == {"a": "250 ms", "b": "-", "c": "1 min 2 s"}


# -- quests -----------------------------------------------------------------------------------

CONTEXT = {
    "quests": {
        "three_workouts": {
            "quest": "three_workouts",
            "instance": "aaa111",
            "started_ms": 1_000,
            "variables": {"workouts": 1, "tz": "Europe/Paris"},
            "windows": {},
            "deadline_ms": 604_801_000,
        },
        "meal_after_workout": {
            "quest": "meal_after_workout",
            "instance": "bbb222",
            "started_ms": 2_000,
            "variables": {},
            "windows": {"meal": 602_000},
            "deadline_ms": None,
        },
    },
    "ignored": 2,
    "timers": [
        {
            "name": "quest:aaa111:deadline:deadline",
            "due_ms": 604_801_000,
            "every_ms": None,
            "cron": None,
            "tz": None,
        },
        {
            "name": "quest:bbb222:window:meal",
            "due_ms": 602_000,
            "every_ms": None,
            "cron": None,
            "tz": None,
        },
        {
            "name": "quest:aaa111:cron:reminder",
            "due_ms": 64_800_000,
            "every_ms": None,
            "cron": "0 18 */2 * *",
            "tz": "Europe/Paris",
        },
        {
            "name": "quest:gone00:every:ping",
            "due_ms": 5_000,
            "every_ms": 60_000,
            "cron": None,
            "tz": None,
        },
    ],
}


def test_quest_views_give_each_instance_its_windows_deadline_and_timers() -> None:
    quests, others = quest_views(CONTEXT)
    assert [q.quest for q in quests] == ["meal_after_workout", "three_workouts"]
    meal, workouts = quests
    assert meal.instance == "bbb222" and meal.deadline_ms is None
    assert [(w.name, w.closes_ms) for w in meal.windows] == [("meal", 602_000)]
    assert [(t.kind, t.label) for t in meal.timers] == [("window", "meal")]
    assert workouts.deadline_ms == 604_801_000
    assert workouts.variables == {"workouts": 1, "tz": "Europe/Paris"}
    assert [(t.kind, t.label, t.schedule) for t in workouts.timers] == [
        ("cron", "reminder", "cron 0 18 */2 * * (Europe/Paris)"),
        ("deadline", "deadline", ""),
    ], "soonest first"
    assert [(t.instance, t.schedule) for t in others] == [("gone00", "every 60000 ms")]


def test_a_timer_not_named_by_the_quest_layer_is_shown_by_its_name() -> None:
    timer = timer_view({"name": "tick", "due_ms": 7})
    assert (timer.instance, timer.kind, timer.label, timer.due_ms) == (None, "timer", "tick", 7)
    assert quest_views({})[0] == [] and quest_views({})[1] == []


def test_instance_rows_filter_by_quest_and_sort_by_context() -> None:
    instances = {
        "i3": {"context": "bob", "quest": "three_workouts", "started_ms": 3},
        "i1": {"context": "alice", "quest": "three_workouts", "started_ms": 1},
        "i2": {"context": "alice", "quest": "meal_after_workout", "started_ms": 2},
    }
    assert [r.instance for r in instance_rows(instances)] == ["i2", "i1", "i3"]
    assert [r.context for r in instance_rows(instances, quest="three_workouts")] == ["alice", "bob"]
    assert instance_rows(instances, quest="nope") == []


# -- times ------------------------------------------------------------------------------------


def test_times_are_utc_to_the_millisecond_and_spans_are_short() -> None:
    assert at_ms(1_796_118_275_673) == "2026-12-01 09:44:35.673 UTC"
    assert at_ms(None) == "-"
    assert at_text("2026-12-01T10:44:35.673+01:00") == "2026-12-01 09:44:35.673 UTC"
    assert at_text(None) == "-" and at_text("yesterday") == "yesterday"
    assert ms_between("2030-01-01T00:00:00+00:00", "2030-01-01T00:00:01.5+00:00") == 1500
    assert ms_between(None, "2030-01-01T00:00:00+00:00") is None
    assert [span(ms) for ms in (850, 12_340, 245_000, 3_600_000, 604_000_000)] == [
        "850 ms",
        "12.3 s",
        "4 min 5 s",
        "1 h 0 min",
        "6 d 23 h",
    ]
    assert from_now(10_000, 4_000) == "in 6.0 s" and from_now(4_000, 10_000) == "6.0 s ago"
