"""``stream-app atomic``: finding the log in the app module, refusing bad input before any
Kafka client is made, and the lines results and events are printed as (no broker)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from stream_app.cli.atomic import find_atomic_logs, format_record, format_result
from stream_app.cli.main import cli
from stream_app.core.atomic import AtomicEventRecord, AtomicResult
from stream_app.settings import get_settings

MODULE = "tests.apps.atomic_cli_probe"
#: Settings under which the probe's runtime accepts its atomic log; no broker listens there.
ENV = {
    "STREAM_APP_PROCESSING_GUARANTEE": "exactly_once",
    "STREAM_APP_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "STREAM_APP_APP_ID": "cli-atomic-unit",
}


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The probe module imported anew under :data:`ENV` (its runtime reads the process-wide
    settings, cached by whichever test read them first)."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield
    get_settings.cache_clear()


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_log_is_found_in_the_app_module_and_its_runtime() -> None:
    run("atomic", "--help")  # the CLI loads without the module
    result = run("atomic", "query", "nope", "lot-1", "--app", MODULE)
    assert result.exit_code == 1
    assert f"{MODULE} declares no atomic log 'nope' (it declares ['bids'])" in result.output
    assert list(find_atomic_logs(MODULE)) == ["bids"]


def test_a_module_that_cannot_load_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_PROCESSING_GUARANTEE", "at_least_once")
    result = run("atomic", "query", "bids", "lot-1", "--app", MODULE)
    assert result.exit_code == 1
    assert f"cannot load {MODULE}: atomic log 'bids' needs" in result.output
    missing = run("atomic", "query", "bids", "lot-1", "--app", "tests.apps.no_such_app")
    assert missing.exit_code == 1 and "cannot import tests.apps.no_such_app" in missing.output


def test_store_refuses_an_event_the_log_refuses_and_sends_nothing() -> None:
    result = run("atomic", "store", "bids", '{"lot": "lot-1", "amount": -3}', "--app", MODULE)
    assert result.exit_code == 1
    assert "refused, nothing sent" in result.output
    assert "bidder" in result.output and "amount" in result.output


@pytest.mark.parametrize(
    ("event", "problem"),
    [("{not json", "not JSON"), ("[1, 2]", "expected a JSON object")],
)
def test_store_takes_a_json_object(event: str, problem: str) -> None:
    result = run("atomic", "store", "bids", event, "--app", MODULE)
    assert result.exit_code == 2 and problem in result.output


def test_the_app_module_is_required() -> None:
    result = run("atomic", "store", "bids", '{"lot": "x"}')
    assert result.exit_code == 2 and "Missing option '--app'" in result.output
    result = run("atomic", "listen", "bids", "lot-1", "--app", MODULE, "--from-seq", "0")
    assert result.exit_code == 2 and "--from-seq" in result.output


def test_the_views_commands_say_when_no_worker_answers() -> None:
    for args in (["scope", "bids", "lot-1"], ["scopes", "bids"]):
        result = run("atomic", *args, "--url", "http://127.0.0.1:1", "--timeout", "2")
        assert result.exit_code == 1
        assert "cannot reach the worker at http://127.0.0.1:1/stream-app/atomic/bids/" in (
            result.output
        )


def test_results_and_events_are_one_line_each() -> None:
    event = {"lot": "lot-1", "bidder": "ann", "amount": 120}
    base = {"request_id": "r1", "log": "bids", "scope": "lot-1", "prospective_event": event}
    accepted = AtomicResult(
        **base, was_accepted=True, stored_event=event, seq=3, meta={"previous": 100}
    )
    assert format_result(accepted) == (
        'accepted #3 {"amount":120,"bidder":"ann","lot":"lot-1"}  meta={"previous":100}'
    )
    rejected = AtomicResult(**base, was_accepted=False, seq=3, reason={"code": "too-low"})
    assert format_result(rejected) == 'rejected {"code":"too-low"}'
    timed_out = rejected.model_copy(update={"timed_out": True, "reason": {"code": "timeout"}})
    assert format_result(timed_out) == 'timed out {"code":"timeout"}'
    record = AtomicEventRecord(
        log="bids", scope="lot-1", seq=3, event=event, request_id="r1", at_ms=1
    )
    assert format_record(record) == ('#3 {"amount":120,"bidder":"ann","lot":"lot-1"}  request=r1')
