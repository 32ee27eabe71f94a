"""The console's workflow runs and quests pages in Chromium, against the console demo's two
workers: a run started with the workflow client is listed, filtered by status, drawn as a graph
whose nodes show their attempts and times, traced as a tree; a waiting run shows its retries and
is cancelled; a context of the ``fitness`` quests shows its instance, variables and deadline."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from stream_app.clients.quests import QuestClient
from stream_app.clients.workflows import WorkflowClient
from stream_app.console.when import at_ms
from stream_app.examples.console_demo import jobs
from stream_app.testing import wait_for

pytestmark = pytest.mark.integration

Shot = Callable[[Page, str], Path]


def fetch(url: str) -> tuple[int, str]:
    """GET a page outside the browser (whose console would log a 4xx as an error)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def start_run(demo: Any, workflow: str, payload: dict[str, Any]) -> str:
    """Start a run of ``jobs`` with a fresh run id; return the id."""
    run_id = f"console-{workflow}-{uuid.uuid4().hex[:8]}"
    with WorkflowClient("jobs", demo.settings, workflows=list(jobs.workflows.values())) as client:
        client.start(workflow, payload, run_id=run_id)
    return run_id


def run_view(demo: Any, run_id: str) -> dict[str, Any]:
    """The run's record as the JSON view answers it (``{}`` before the run exists)."""
    answer = demo.get_json(f"/stream-app/workflows/jobs/{quote(run_id, safe='')}/")
    return answer.get("run") or {}


def finished_run(demo: Any, workflow: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A run started and waited for until it succeeded: its id and record."""
    run_id = start_run(demo, workflow, payload)
    record = wait_for(
        lambda: run_view(demo, run_id),
        lambda run: run.get("status") == "succeeded",
        timeout=60,
        what=f"run {run_id} succeeded",
    )
    return run_id, record


def test_the_runs_list_filters_by_status_and_opens_a_run(
    console_demo: Any, page: Page, shot: Shot
) -> None:
    waiting = start_run(console_demo, "approval", {"job": "release", "checks": 5})
    run_id, _ = finished_run(console_demo, "generic", {"input": 2})
    page.goto(console_demo.url("/console/workflows"))
    expect(page.locator(f'tr[data-run="{waiting}"]')).to_contain_text("running")
    row = page.locator(f'tr[data-run="{run_id}"]')
    expect(row).to_be_visible()
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("generic")
    shot(page, "runs")

    page.select_option("#runs-status", "failed")
    expect(page).to_have_url(re.compile(r"status=failed"))
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)
    page.select_option("#runs-status", "succeeded")
    expect(page).to_have_url(re.compile(r"status=succeeded"))
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    for status in page.locator("#runs tbody td .badge").all_inner_texts():
        assert status == "succeeded"

    page.select_option("#runs-workflow", "generic")
    expect(page).to_have_url(re.compile(r"workflow=generic"))
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    page.goto(console_demo.url("/console/workflows?workflow=sources"))
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)
    status, text = fetch(console_demo.url("/console/workflows?status=bogus"))
    assert status == 400 and "the status is one of" in text


def test_a_run_is_drawn_as_a_graph_whose_nodes_show_attempts_and_times(
    console_demo: Any, page: Page, shot: Shot
) -> None:
    run_id, record = finished_run(console_demo, "sources", {"topic": "console"})
    nodes = record["nodes"]
    page.goto(console_demo.url("/console/workflows?workflow=sources&status=succeeded"))
    page.locator(f'tr[data-run="{run_id}"] a').click()
    expect(page.get_by_test_id("run-id")).to_have_text(run_id)
    expect(page.get_by_test_id("run-status")).to_have_text("succeeded")
    expect(page.locator("#run-graph-canvas canvas").first).to_be_attached()
    page.wait_for_function(
        "n => window.streamApp && window.streamApp.runGraph "
        "&& window.streamApp.runGraph.nodes().length === n",
        arg=len(nodes),
    )
    drawn = page.evaluate(
        "() => window.streamApp.runGraph.edges().map(e => e.data('style')).sort()"
    )
    assert drawn.count("fork") == 3 and drawn.count("join") == 3, drawn

    gathered = next(n for n in nodes.values() if n["name"] == "gathered")
    box = page.locator("#run-graph-canvas").bounding_box()
    assert box is not None
    at = page.evaluate(
        "id => window.streamApp.runGraph.getElementById(id).renderedPosition()", gathered["id"]
    )
    page.mouse.click(box["x"] + at["x"], box["y"] + at["y"])
    panel = page.get_by_test_id("node-panel")
    expect(panel).to_contain_text("gathered (processed)")
    expect(panel).to_contain_text(gathered["id"])
    facts = page.get_by_test_id("node-facts")
    expect(facts).to_contain_text(re.compile(r"Attempts\s*1(?!\d)"))
    expect(facts).to_contain_text(re.compile(r"Joins\s*3 forks"))
    expect(facts).to_contain_text(
        re.compile(r"Created\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC")
    )
    expect(facts).to_contain_text(re.compile(r"Processed\s*\d{4}-"))
    expect(facts).to_contain_text(re.compile(r"Took\s*\d"))
    shot(page, "run")

    summary = next(n for n in nodes.values() if n["name"] == "summary")
    page.locator(f'button.show-node[data-node="{summary["id"]}"]').focus()
    page.keyboard.press("Enter")
    expect(panel).to_contain_text("summary (final)")
    expect(panel.locator("pre")).to_contain_text('"total_size"')
    selected = page.evaluate("() => window.streamApp.runGraph.$('node:selected').id()")
    assert selected == summary["id"]

    table = page.get_by_test_id("nodes-table")
    expect(table.locator("tbody tr")).to_have_count(len(nodes))
    tree = page.get_by_test_id("trace-tree")
    expect(tree.locator(":scope > li > details > summary")).to_contain_text("topic")
    expect(tree.locator("details")).to_have_count(5)
    expect(tree).to_contain_text("joins 3 forks")
    assert tree.locator("li").count() == len(nodes)

    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_function("() => window.streamApp && window.streamApp.runGraph")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the run page scrolls sideways on a phone ({width}px)"
    shot(page, "run-phone")


def test_a_waiting_run_shows_its_retries_and_is_cancelled_after_a_confirmation(
    console_demo: Any, page: Page
) -> None:
    run_id = start_run(console_demo, "approval", {"job": "deploy", "checks": 20})
    record = wait_for(
        lambda: run_view(console_demo, run_id),
        lambda run: any(n["attempts"] >= 2 for n in run.get("nodes", {}).values()),
        timeout=60,
        what=f"run {run_id} retried its request",
    )
    assert record["status"] == "running"
    request = next(iter(record["nodes"].values()))
    page.goto(console_demo.url(f"/console/workflows/jobs/{run_id}"))
    expect(page.get_by_test_id("run-status")).to_have_text("running")
    row = page.locator(f'tr[data-node="{request["id"]}"]')
    expect(row).to_contain_text("pending")
    expect(row).to_contain_text("not approved yet (check ")
    label = page.evaluate(
        "id => window.streamApp.runGraph.getElementById(id).data('label')", request["id"]
    )
    assert re.fullmatch(r"request\npending x\d+", label), label

    confirmations: list[str] = []
    page.on("dialog", lambda dialog: (confirmations.append(dialog.message), dialog.accept()))
    page.fill("#cancel-reason", "from the console")
    page.get_by_test_id("cancel-run").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("is durable")
    assert confirmations == [
        f"Cancel run {run_id}? Its pending nodes become cancelled; this cannot be undone."
    ]
    ended = wait_for(
        lambda: run_view(console_demo, run_id),
        lambda run: run.get("status") != "running",
        timeout=30,
        what=f"run {run_id} ended",
    )
    assert ended["status"] == "cancelled"
    assert ended["message"] == "cancelled: from the console"
    assert ended["nodes"][request["id"]]["status"] == "cancelled"
    page.reload()
    expect(page.get_by_test_id("run-status")).to_have_text("cancelled")
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    expect(row).to_contain_text("cancelled")


def test_cancelling_an_ended_or_unknown_run_is_refused(console_demo: Any, page: Page) -> None:
    run_id, _ = finished_run(console_demo, "generic", {"input": 5})
    page.goto(console_demo.url(f"/console/workflows/jobs/{run_id}"))
    expect(page.get_by_test_id("cancel-run")).to_have_count(0)
    csrf = page.locator('meta[name="console-csrf"]').get_attribute("content")
    assert csrf

    def cancel(behaviour: str, run: str) -> tuple[int, str]:
        answer = page.request.post(
            console_demo.url("/console/workflows/cancel"),
            form={"behaviour": behaviour, "run_id": run, "csrf": csrf},
        )
        return answer.status, answer.text()

    status, text = cancel("jobs", run_id)
    assert status == 409 and "has ended (succeeded): nothing to cancel" in text
    status, text = cancel("jobs", "no-such-run")
    assert status == 404 and "no run" in text
    status, text = cancel("counter", run_id)
    assert status == 404 and "no workflows behaviour is called" in text
    status, text = cancel("jobs", "")
    assert status == 400 and "give a run id" in text
    assert run_view(console_demo, run_id)["status"] == "succeeded"


def test_a_quest_context_shows_its_instances_variables_and_deadline(
    console_demo: Any, page: Page, shot: Shot
) -> None:
    user = f"runner-{uuid.uuid4().hex[:6]}"
    with QuestClient("fitness", console_demo.settings) as quests:
        quests.add_quest(user, "three_workouts", {"tz": "Europe/Paris"})
        quests.add_quest(user, "meal_after_workout")
        quests.send_event(user, "workout_logged", {"minutes": 30})
    described = wait_for(
        lambda: console_demo.get_json(f"/stream-app/quests/fitness/{user}/"),
        lambda d: (
            (d.get("quests") or {}).get("three_workouts", {}).get("variables", {})
            == {"workouts": 1, "tz": "Europe/Paris"}
        ),
        timeout=60,
        what=f"{user} counted one workout",
    )
    workouts = described["quests"]["three_workouts"]

    page.goto(console_demo.url("/console/quests?quest=three_workouts"))
    row = page.locator(f'tr[data-instance="{workouts["instance"]}"]')
    expect(row).to_contain_text(user)
    expect(page.locator("#instances tbody tr").filter(has_text="meal_after_workout")).to_have_count(
        0
    )
    shot(page, "quests")

    page.fill("#context-id", user)
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_test_id("context-id")).to_have_text(user)
    expect(page.get_by_test_id("quest-count")).to_have_text("2")
    card = page.locator('[data-quest="three_workouts"]')
    expect(card.get_by_test_id("instance")).to_have_text(workouts["instance"])
    deadline = card.get_by_test_id("deadline")
    expect(deadline).to_contain_text(at_ms(workouts["deadline_ms"]))
    expect(deadline).to_contain_text(f"{workouts['deadline_ms']} ms")
    expect(deadline).to_contain_text("in 6 d 23 h")
    expect(card.get_by_test_id("variables")).to_contain_text('"workouts": 1')
    expect(card.get_by_test_id("timers")).to_contain_text("cron reminder")
    meal = page.locator('[data-quest="meal_after_workout"]')
    expect(meal.get_by_test_id("windows")).to_contain_text("meal closes")
    shot(page, "quest-context")

    status, text = fetch(console_demo.url(f"/console/quests/fitness/nobody-{user}"))
    assert status == 404 and 'data-testid="no-quests"' in text


def test_markup_in_a_run_id_or_a_context_id_is_shown_as_text(console_demo: Any, page: Page) -> None:
    markup = f'<script>alert("x")</script><img src=x onerror=alert(1)>{uuid.uuid4().hex[:6]}'
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    with WorkflowClient("jobs", console_demo.settings) as client:
        client.start("generic", {"input": 3}, run_id=markup)
    wait_for(lambda: run_view(console_demo, markup), bool, timeout=60, what="the run")
    page.goto(console_demo.url(f"/console/workflows/jobs/{quote(markup, safe='')}"))
    expect(page.get_by_test_id("run-id")).to_have_text(markup)
    page.wait_for_function("() => window.streamApp && window.streamApp.runGraph")
    page.goto(console_demo.url("/console/workflows"))
    expect(page.locator("#runs tbody").get_by_text(markup)).to_be_visible()

    with QuestClient("fitness", console_demo.settings) as quests:
        quests.add_quest(markup, "three_workouts")
    wait_for(
        lambda: console_demo.get_json(f"/stream-app/quests/fitness/{quote(markup, safe='')}/"),
        lambda d: bool(d.get("quests")),
        timeout=60,
        what="the context's quest",
    )
    page.goto(console_demo.url("/console/quests"))
    page.fill("#context-id", markup)
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_test_id("context-id")).to_have_text(markup)
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []
