"""Unit tests of stream_app.settings: sources, precedence, validation, topic names."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.core.retry import CELL_RETRY, HANDLER_RETRY, Exhausted, RetryPolicy
from stream_app.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No STREAM_APP_* / KAFKA_BOOTSTRAP_SERVERS from outside, no .env, no cached settings."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_APP_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    s = Settings()
    assert s.app_id == "stream-app"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.store == "rocksdb://"
    assert s.data_dir == Path("data")
    assert s.partitions == 8
    assert s.replication_factor == 1
    assert s.processing_guarantee == "auto"
    assert s.web_host == "127.0.0.1"
    assert s.web_port == 6066
    assert s.max_message_bytes == 1_048_576
    assert s.dead_letter_max_bytes == 1_048_576
    assert s.rocksdb_memory_bytes == 128 * 1_048_576
    assert s.session_timeout_s == 30.0
    assert s.topics_dir == Path("topics")
    assert s.faust_broker == "kafka://127.0.0.1:9092"


def test_values_read_from_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_APP_ID", "orders")
    monkeypatch.setenv("STREAM_APP_PARTITIONS", "3")
    monkeypatch.setenv("STREAM_APP_PROCESSING_GUARANTEE", "exactly_once")
    monkeypatch.setenv("STREAM_APP_DATA_DIR", "/var/lib/cells")
    monkeypatch.setenv("STREAM_APP_SESSION_TIMEOUT_S", "6.5")
    monkeypatch.setenv("STREAM_APP_WEB_PORT", "7000")
    s = Settings()
    assert s.app_id == "orders"
    assert s.partitions == 3
    assert s.processing_guarantee == "exactly_once"
    assert s.data_dir == Path("/var/lib/cells")
    assert s.session_timeout_s == 6.5
    assert s.web_port == 7000


def test_retry_policies_read_as_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    assert defaults.cell_retry.on_exhausted is Exhausted.PARK
    assert defaults.cell_retry.attempts == CELL_RETRY.attempts == 3
    assert defaults.handler_retry.on_exhausted is Exhausted.DEAD_LETTER
    assert defaults.handler_retry.attempts == HANDLER_RETRY.attempts == 5
    monkeypatch.setenv("STREAM_APP_CELL_RETRY", '{"attempts": 6, "backoff_s": 0.5}')
    monkeypatch.setenv("STREAM_APP_HANDLER_RETRY", '{"attempts": 2, "jitter": 0}')
    settings = Settings()
    assert settings.cell_retry == RetryPolicy(
        attempts=6, backoff_s=0.5, on_exhausted=Exhausted.PARK
    )
    assert settings.handler_retry == RetryPolicy(
        attempts=2, jitter=0.0, on_exhausted=Exhausted.DEAD_LETTER
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAM_APP_CELL_RETRY", '{"attempts": 0}', "attempts must be >= 1"),
        ("STREAM_APP_CELL_RETRY", '{"on_exhausted": "dead_letter"}', "can only park"),
        ("STREAM_APP_HANDLER_RETRY", '{"on_exhausted": "park"}', "can only dead-letter"),
        ("STREAM_APP_HANDLER_RETRY", "{oops", "Invalid JSON|error parsing value"),
    ],
)
def test_a_retry_policy_its_place_cannot_take_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises((ValidationError, ValueError), match=says):
        Settings()


def test_create_app_runs_faust_at_least_once_and_marks_exactly_once() -> None:
    from stream_app.kafka.app import create_app

    app = create_app(Settings(app_id="eos", processing_guarantee="exactly_once"))
    assert app.exactly_once and not app.in_transaction, "stream_app, not Faust, runs the txns"
    assert app.kafka_config["bootstrap.servers"] == "127.0.0.1:9092"
    assert not create_app(Settings(app_id="alos")).exactly_once


def test_standbys_and_static_membership_reach_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    from stream_app.kafka.app import create_app

    defaults = create_app(Settings(app_id="scale"))
    assert defaults.conf.table_standby_replicas == 1, "Faust's default, as before the setting"
    assert defaults.conf.consumer_group_instance_id is None, "dynamic membership by default"
    monkeypatch.setenv("STREAM_APP_STANDBY_REPLICAS", "0")
    monkeypatch.setenv("STREAM_APP_GROUP_INSTANCE_ID", "cells-worker-2")
    app = create_app(Settings(app_id="scale"))
    assert app.conf.table_standby_replicas == 0
    assert app.conf.consumer_group_instance_id == "cells-worker-2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAM_APP_STANDBY_REPLICAS", "-1"),
        ("STREAM_APP_GROUP_INSTANCE_ID", ""),
        ("STREAM_APP_GROUP_INSTANCE_ID", "pod name"),
    ],
)
def test_a_standby_count_or_instance_id_kafka_would_refuse_is_refused_here(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("STREAM_APP_").lower()):
        Settings()


def test_each_app_id_keeps_its_state_in_its_own_folder_of_the_data_dir() -> None:
    from stream_app.kafka.app import create_app

    shared = Path("/var/lib/cells")
    orders = create_app(Settings(app_id="orders", data_dir=shared))
    billing = create_app(Settings(app_id="billing", data_dir=shared))
    assert Path(orders.conf.datadir) == shared / "orders"
    assert Path(orders.conf.tabledir) == shared / "orders" / "v1" / "tables"
    assert Path(billing.conf.tabledir) == shared / "billing" / "v1" / "tables"
    # The default data dir is relative to the working directory, and still split by app id.
    assert Path(create_app(Settings(app_id="tour")).conf.tabledir) == Path("data/tour/v1/tables")
    assert Settings(app_id="tour").app_data_dir == Path("data") / "tour"


def test_a_first_start_creates_the_data_dir_and_the_app_folder_in_it(tmp_path: Path) -> None:
    import asyncio

    from stream_app.kafka.app import create_app

    app = create_app(Settings(app_id="orders", data_dir=tmp_path / "fresh" / "data"))
    asyncio.run(app.on_first_start())
    assert (tmp_path / "fresh" / "data" / "orders" / "v1" / "tables").is_dir()


def test_a_runtime_refuses_an_app_it_cannot_drive() -> None:
    import faust

    from stream_app.errors import ConfigError
    from stream_app.runtime import Runtime

    app = faust.App("plain", autodiscover=False)
    with pytest.raises(ConfigError, match=r"create_app\(settings\), not a App"):
        Runtime(Settings(app_id="plain"), app=app)


def test_a_runtime_refuses_an_app_that_runs_faust_transactions() -> None:
    from stream_app.errors import ConfigError
    from stream_app.kafka.app import create_app
    from stream_app.runtime import Runtime

    settings = Settings(app_id="faust-eos")
    app = create_app(settings, processing_guarantee="exactly_once")
    with pytest.raises(ConfigError, match="processing_guarantee=at_least_once"):
        Runtime(settings, app=app)


def test_a_runtime_refuses_an_app_made_for_other_settings() -> None:
    from stream_app.errors import ConfigError
    from stream_app.kafka.app import create_app
    from stream_app.runtime import Runtime

    app = create_app(Settings(app_id="orders"))
    with pytest.raises(ConfigError, match="not made by create_app"):
        Runtime(Settings(app_id="orders", processing_guarantee="exactly_once"), app=app)
    with pytest.raises(ConfigError, match="not made by create_app"):
        Runtime(Settings(app_id="other"), app=app)


def test_unprefixed_env_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ID", "not-mine")
    monkeypatch.setenv("PARTITIONS", "99")
    s = Settings()
    assert s.app_id == "stream-app"
    assert s.partitions == 8


def test_keyword_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_APP_ID", "from-env")
    monkeypatch.setenv("STREAM_APP_PARTITIONS", "3")
    s = Settings(app_id="from-kwargs", partitions=5)
    assert s.app_id == "from-kwargs"
    assert s.partitions == 5


def test_dotenv_file_is_read_and_env_beats_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("STREAM_APP_APP_ID=from-dotenv\nSTREAM_APP_PARTITIONS=2\n")
    assert Settings().app_id == "from-dotenv"
    monkeypatch.setenv("STREAM_APP_APP_ID", "from-env")
    s = Settings()
    assert s.app_id == "from-env"
    assert s.partitions == 2


def test_get_settings_is_cached_until_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_APP_ID", "first")
    first = get_settings()
    assert first.app_id == "first"
    monkeypatch.setenv("STREAM_APP_APP_ID", "second")
    assert get_settings() is first
    get_settings.cache_clear()
    assert get_settings().app_id == "second"


def test_kafka_bootstrap_servers_used_when_prefixed_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-a:9093")
    assert Settings().bootstrap_servers == "kafka-a:9093"
    assert get_settings().bootstrap_servers == "kafka-a:9093"


def test_prefixed_bootstrap_wins_over_kafka_bootstrap_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-a:9093")
    monkeypatch.setenv("STREAM_APP_BOOTSTRAP_SERVERS", "kafka-b:9094")
    assert Settings().bootstrap_servers == "kafka-b:9094"


def test_kafka_scheme_is_stripped_and_faust_broker_rebuilt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_APP_BOOTSTRAP_SERVERS", "kafka://h:1, h2:2")
    s = Settings()
    assert s.bootstrap_servers == "h:1,h2:2"
    assert s.faust_broker == "kafka://h:1;kafka://h2:2"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAM_APP_PROCESSING_GUARANTEE", "maybe"),
        ("STREAM_APP_PARTITIONS", "0"),
        ("STREAM_APP_PARTITIONS", "eight"),
        ("STREAM_APP_BOOTSTRAP_SERVERS", "nohost"),
        ("STREAM_APP_BOOTSTRAP_SERVERS", "host:port"),
        ("STREAM_APP_BOOTSTRAP_SERVERS", ":9092"),
        ("STREAM_APP_BOOTSTRAP_SERVERS", "h:1,nohost"),
        ("KAFKA_BOOTSTRAP_SERVERS", "nohost"),
        ("STREAM_APP_APP_ID", "my app"),
        ("STREAM_APP_APP_ID", "-leading-dash"),
        ("STREAM_APP_SESSION_TIMEOUT_S", "1"),
        ("STREAM_APP_WEB_PORT", "70000"),
        ("STREAM_APP_MAX_MESSAGE_BYTES", "10"),
    ],
)
def test_bad_env_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        Settings()


def test_bad_bootstrap_error_names_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_BOOTSTRAP_SERVERS", "good:1,nohost")
    with pytest.raises(ValidationError, match="expected host:port, got 'nohost'"):
        Settings()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"processing_guarantee": "maybe"},
        {"partitions": 0},
        {"replication_factor": 0},
        {"min_insync_replicas": 0},
        {"replication_factor": 2, "min_insync_replicas": 3},
        {"app_id": "has spaces"},
        {"app_id": ""},
    ],
)
def test_bad_keyword_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_bootstrap_servers_keyword_argument_is_used() -> None:
    assert Settings(bootstrap_servers="10.1.2.3:9093").bootstrap_servers == "10.1.2.3:9093"


@pytest.mark.parametrize("value", [",", " ", "kafka://h:1;kafka://h2:2"])
def test_unusable_bootstrap_lists_are_rejected(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("STREAM_APP_BOOTSTRAP_SERVERS", value)
    with pytest.raises(ValidationError):
        Settings()


def test_settings_are_frozen() -> None:
    s = Settings(app_id="frozen")
    with pytest.raises(ValidationError, match="frozen"):
        s.app_id = "thawed"
    with pytest.raises(ValidationError, match="frozen"):
        s.partitions = 1
    assert s.app_id == "frozen"
    assert s.partitions == 8


def test_topic_name_helpers() -> None:
    s = Settings(app_id="shop")
    assert s.input_topic("counter") == "shop.counter.in"
    assert s.input_topic("orders") == "shop.orders.in"
    assert s.dead_letter_topic == "shop.dead-letters"
    assert s.changelog_topic("counter") == "shop-counter-changelog"


def test_web_url_reaches_the_worker_these_settings_describe() -> None:
    assert Settings(web_port=7001).web_url == "http://127.0.0.1:7001"
    assert Settings(web_host="0.0.0.0", web_port=7002).web_url == "http://127.0.0.1:7002"
    assert Settings(web_host="::1", web_port=7003).web_url == "http://[::1]:7003"
    assert Settings(web_host="worker-3.internal").web_url == "http://worker-3.internal:6066"


def test_the_advertised_web_host_is_one_other_workers_can_reach() -> None:
    assert Settings().advertised_web_host == "127.0.0.1"
    assert Settings(web_host="0.0.0.0").advertised_web_host == socket.gethostname()
    assert Settings(web_host="::").advertised_web_host == socket.gethostname()
    pod = "worker-2.stream-app-headless.jobs.svc"
    assert Settings(web_host="0.0.0.0", web_advertised_host=pod).advertised_web_host == pod


def test_faust_advertises_the_advertised_host_and_binds_the_web_host() -> None:
    from stream_app.kafka.app import create_app

    pod = "worker-2.stream-app-headless.jobs.svc"
    app = create_app(Settings(web_host="0.0.0.0", web_advertised_host=pod, web_port=7004))
    assert str(app.conf.canonical_url) == f"http://{pod}:7004"
    assert app.conf.web_bind == "0.0.0.0"


def test_min_insync_replicas_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_APP_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("STREAM_APP_MIN_INSYNC_REPLICAS", "2")
    s = Settings()
    assert s.min_insync_replicas == 2
    assert s.durability_config == {"min.insync.replicas": "2"}


def test_min_insync_replicas_above_the_replication_factor_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAM_APP_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match=r"exceeds replication_factor \(1\)"):
        Settings()
