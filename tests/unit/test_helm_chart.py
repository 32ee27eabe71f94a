"""The Helm chart (helm/stream-app): linted and rendered by the real ``helm``, and the rendered
manifests read back to check what the workers need.

``helm`` is built from its Go module by ``scripts/deploy_tools.sh`` into ``.tools/bin``; these
tests fail (they never skip) when it is not there.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_app.console.guard import Guard
from stream_app.settings import Settings
from stream_app.web.health import LIVE_PATH, READY_PATH

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "stream-app"
SECURED = CHART / "ci" / "secured-values.yaml"
HELM = ROOT / ".tools" / "bin" / "helm"
DEPLOY_TOOLS = ROOT / "scripts" / "deploy_tools.sh"

Manifest = dict[str, Any]

#: A console token long enough for the schema (16 characters or more).
TOKEN = "a-console-token-of-32-characters"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the project's helm."""
    assert HELM.is_file(), f"{HELM} is missing: scripts/deploy_tools.sh builds it (go install)"
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def render(*args: str) -> list[Manifest]:
    """``helm template`` of the chart (release ``jobs``, namespace ``streams``), parsed."""
    result = helm("template", "jobs", str(CHART), "--namespace", "streams", *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one manifest of ``kind`` (and ``name``)."""
    found = [
        m
        for m in manifests
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in manifests]
    return found[0]


def env_of(container: Manifest) -> dict[str, Any]:
    """A container's environment: name -> value, or the ``valueFrom`` source."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def worker_env(manifests: list[Manifest]) -> dict[str, Any]:
    """The environment of the worker container of the StatefulSet."""
    (container,) = one(manifests, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return env_of(container)


def worker_settings(manifests: list[Manifest], secrets: dict[str, str]) -> Settings:
    """The settings a worker reads from its rendered environment (a setting from a Secret is
    taken from ``secrets``, by the Secret's name)."""
    given: dict[str, Any] = {}
    for name, value in worker_env(manifests).items():
        if not name.startswith("STREAM_APP_") or "fieldRef" in value:
            continue
        if not isinstance(value, str):
            value = secrets[value["secretKeyRef"]["name"]]
        given[name.removeprefix("STREAM_APP_").lower()] = value
    return Settings(**given)


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    """The chart rendered with its default values."""
    return render()


@pytest.fixture(scope="module")
def secured() -> list[Manifest]:
    """The chart rendered with ``ci/secured-values.yaml``."""
    return render("--values", str(SECURED))


def test_helm_is_the_version_bootstrap_pins() -> None:
    pinned = re.search(r"^HELM_VERSION=(v\S+)$", DEPLOY_TOOLS.read_text(), re.M)
    assert pinned, "scripts/deploy_tools.sh pins no HELM_VERSION"
    # A helm built by go install reports its major and minor version only (v3.22).
    result = helm("version", "--template", "{{.Version}}")
    assert result.returncode == 0, result.stderr
    assert pinned.group(1).startswith(result.stdout.strip() + "."), result.stdout


@pytest.mark.parametrize("values", [[], ["--values", str(SECURED)]], ids=["default", "secured"])
def test_helm_lint_passes(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workers_are_a_statefulset_with_a_volume_for_their_state(default: list[Manifest]) -> None:
    workers = one(default, "StatefulSet")
    spec = workers["spec"]
    assert spec["replicas"] == 3
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    (container,) = spec["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    env = env_of(container)
    assert mounts[claim["metadata"]["name"]] == env["STREAM_APP_DATA_DIR"] == "/data"
    # Static membership from the pod's name; views reachable from the other pods.
    assert env["STREAM_APP_GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["STREAM_APP_WEB_HOST"] == "0.0.0.0"
    headless = one(default, "Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert env["STREAM_APP_WEB_ADVERTISED_HOST"] == (
        f"$(POD_NAME).{spec['serviceName']}.$(POD_NAMESPACE).svc"
    )
    assert env["STREAM_APP_APP_ID"] == "counter" and env["STREAM_APP_PARTITIONS"] == "8"
    assert env["STREAM_APP_PROCESSING_GUARANTEE"] == "exactly_once"


def test_the_worker_runs_a_module_of_the_image(default: list[Manifest]) -> None:
    (container,) = one(default, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[0] == "faust" and command[1] == "-A" and command[3] == "worker"
    assert importlib.util.find_spec(command[2]) is not None, command[2]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY stream_app ./stream_app" in dockerfile


def test_the_pods_run_as_the_images_user(default: list[Manifest]) -> None:
    pod = one(default, "StatefulSet")["spec"]["template"]["spec"]
    uid = pod["securityContext"]["runAsUser"]
    assert f"useradd --uid {uid} " in (ROOT / "Dockerfile").read_text()
    # The volume is writable by that user's group.
    assert pod["securityContext"]["fsGroup"] == uid


def test_probes_use_the_health_views_on_the_served_port(default: list[Manifest]) -> None:
    (container,) = one(default, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env_of(container)["STREAM_APP_WEB_PORT"] == "6066"
    assert container["livenessProbe"]["httpGet"] == {"path": LIVE_PATH, "port": port["name"]}
    assert container["readinessProbe"]["httpGet"] == {"path": READY_PATH, "port": port["name"]}
    annotations = one(default, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_services_and_the_disruption_budget_select_the_workers(default: list[Manifest]) -> None:
    labels = one(default, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    selected = [
        one(default, "Service", "jobs-stream-app")["spec"]["selector"],
        one(default, "Service", "jobs-stream-app-headless")["spec"]["selector"],
        one(default, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selected:
        assert selector.items() <= labels.items()
    assert one(default, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_a_hook_job_applies_the_topics_before_install_and_upgrade(
    default: list[Manifest],
) -> None:
    job = one(default, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["stream-app", "topics", "apply", "/app/topics"]
    # The image ships the repository's topics/ at /app/topics.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY topics ./topics" in dockerfile
    assert 'stream-app = "stream_app.cli.main:main"' in (ROOT / "pyproject.toml").read_text()
    # The topics are declared with the workers' settings.
    (worker,) = one(default, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    settings = {k: v for k, v in env_of(worker).items() if k.startswith("STREAM_APP_")}
    for name in ("APP_ID", "PARTITIONS", "REPLICATION_FACTOR", "MIN_INSYNC_REPLICAS"):
        assert env_of(container)[f"STREAM_APP_{name}"] == settings[f"STREAM_APP_{name}"]


def test_no_service_monitor_or_secret_by_default(default: list[Manifest]) -> None:
    kinds = {m["kind"] for m in default}
    assert "ServiceMonitor" not in kinds and "Secret" not in kinds


def test_a_secured_release_with_standbys_and_a_service_monitor(secured: list[Manifest]) -> None:
    workers = one(secured, "StatefulSet")
    pod = workers["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    assert workers["spec"]["replicas"] == 3
    assert container["image"] == "registry.example.com/stream-app:0.1.0"
    assert env["STREAM_APP_STANDBY_REPLICAS"] == "1"
    assert env["STREAM_APP_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["STREAM_APP_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["STREAM_APP_SASL_USERNAME"] == "stream-app"
    assert env["STREAM_APP_COMMIT_INTERVAL_S"] == "1.0"
    assert env["STREAM_APP_SESSION_TIMEOUT_S"] == "10"
    # The password comes from a Secret, made before the topics Job needs it.
    reference = env["STREAM_APP_SASL_PASSWORD"]["secretKeyRef"]
    secret = one(secured, "Secret", reference["name"])
    assert reference["key"] in secret["data"]
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        one(secured, "Job")["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert "not-a-real-password" not in yaml.safe_dump(workers)
    console = env["STREAM_APP_CONSOLE_TOKEN"]["secretKeyRef"]
    assert console["key"] in one(secured, "Secret", console["name"])["data"]
    assert "not-a-real-console-token" not in yaml.safe_dump(workers)
    # The CA file is mounted where STREAM_APP_SSL_CA_LOCATION points.
    (tls,) = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
    assert "ca.crt" in one(secured, "Secret", tls["secret"]["secretName"])["data"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "kafka-tls"]
    assert env["STREAM_APP_SSL_CA_LOCATION"] == f"{mount['mountPath']}/ca.crt"
    assert "STREAM_APP_SSL_CERTIFICATE_LOCATION" not in env  # no client certificate given
    # Scheduling from values.
    assert pod["nodeSelector"] == {"workload": "streaming"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert container["resources"]["limits"]["memory"] == "1Gi"
    # Prometheus Operator scrapes the workers through the headless Service.
    monitor = one(secured, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    headless = one(secured, "Service", workers["spec"]["serviceName"])
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    )
    regular = one(secured, "Service", "jobs-stream-app")
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= regular["metadata"]["labels"].items()
    )


def test_the_topics_job_reads_the_definitions_given_in_values(secured: list[Manifest]) -> None:
    job = one(secured, "Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    folder = container["command"][-1]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    topics = one(secured, "ConfigMap", volume["configMap"]["name"])
    assert 'name = "{app_id}.counter.in"' in topics["data"]["counter.toml"]
    assert topics["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert (
        env_of(container)["STREAM_APP_SASL_PASSWORD"]
        == env_of(one(secured, "StatefulSet")["spec"]["template"]["spec"]["containers"][0])[
            "STREAM_APP_SASL_PASSWORD"
        ]
    )


def test_the_console_is_served_read_only_by_default(default: list[Manifest]) -> None:
    env = worker_env(default)
    assert env["STREAM_APP_CONSOLE"] == "true" and env["STREAM_APP_CONSOLE_ACTIONS"] == "true"
    assert "STREAM_APP_CONSOLE_TOKEN" not in env
    # The workers bind every interface: without a token their consoles refuse every action.
    settings = worker_settings(default, {})
    assert settings.console and not settings.web_is_loopback
    assert not Guard(settings).actions_enabled


def test_the_console_token_comes_from_a_secret_the_chart_makes() -> None:
    manifests = render("--set", f"console.token={TOKEN}")
    reference = worker_env(manifests)["STREAM_APP_CONSOLE_TOKEN"]["secretKeyRef"]
    secret = one(manifests, "Secret", reference["name"])
    assert base64.b64decode(secret["data"][reference["key"]]).decode() == TOKEN
    assert TOKEN not in yaml.safe_dump(one(manifests, "StatefulSet"))
    # The workers accept actions from an operator who gives the token.
    settings = worker_settings(manifests, {reference["name"]: TOKEN})
    assert Guard(settings).actions_enabled and Guard(settings).token_matches(TOKEN)
    # The topics Job serves no console and is not given the token.
    (job,) = one(manifests, "Job")["spec"]["template"]["spec"]["containers"]
    assert not [name for name in env_of(job) if name.startswith("STREAM_APP_CONSOLE")]


def test_the_console_token_from_an_existing_secret() -> None:
    manifests = render(
        "--set", "console.existingSecret=ops-console", "--set", "console.tokenKey=console-token"
    )
    assert "Secret" not in {m["kind"] for m in manifests}
    reference = worker_env(manifests)["STREAM_APP_CONSOLE_TOKEN"]["secretKeyRef"]
    assert reference == {"name": "ops-console", "key": "console-token"}


def test_a_switched_off_console_is_given_no_token() -> None:
    manifests = render("--set", "console.enabled=false", "--set", f"console.token={TOKEN}")
    env = worker_env(manifests)
    assert env["STREAM_APP_CONSOLE"] == "false" and "STREAM_APP_CONSOLE_TOKEN" not in env
    assert "Secret" not in {m["kind"] for m in manifests}
    assert not worker_settings(manifests, {}).console


def test_console_actions_off_is_read_only_even_with_a_token() -> None:
    manifests = render("--set", "console.actions=false", "--set", f"console.token={TOKEN}")
    env = worker_env(manifests)
    assert env["STREAM_APP_CONSOLE_ACTIONS"] == "false"
    secret = env["STREAM_APP_CONSOLE_TOKEN"]["secretKeyRef"]["name"]
    assert not Guard(worker_settings(manifests, {secret: TOKEN})).actions_enabled


def test_mutual_tls_from_an_existing_secret() -> None:
    manifests = render(
        "--set",
        "kafka.security.protocol=SSL",
        "--set",
        "kafka.security.tls.existingSecret=kafka-client",
        "--set",
        "kafka.security.tls.mutual=true",
    )
    assert "Secret" not in {m["kind"] for m in manifests}
    pod = one(manifests, "StatefulSet")["spec"]["template"]["spec"]
    (volume,) = pod["volumes"]
    assert volume["secret"]["secretName"] == "kafka-client"
    env = env_of(pod["containers"][0])
    assert env["STREAM_APP_SSL_CERTIFICATE_LOCATION"] == "/etc/stream-app/tls/tls.crt"
    assert env["STREAM_APP_SSL_KEY_LOCATION"] == "/etc/stream-app/tls/tls.key"


def test_more_replicas_than_partitions_is_refused() -> None:
    result = helm("template", "jobs", str(CHART), "--set", "replicas=9", "--set", "partitions=8")
    assert result.returncode != 0
    assert "replicas (9) must not exceed partitions (8)" in result.stderr
    assert helm("template", "jobs", str(CHART), "--set", "replicas=8").returncode == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["kafka.security.protocol=SASL_SSL"], "needs kafka.security.sasl.username"),
        (
            ["kafka.security.protocol=SASL_PLAINTEXT", "kafka.security.sasl.username=u"],
            "needs a password or an existingSecret",
        ),
        (["kafka.security.protocol=SSL"], "needs kafka.security.tls.ca"),
        (
            [
                "kafka.security.protocol=SSL",
                "kafka.security.tls.ca=CA",
                "kafka.security.tls.certificate=CERT",
            ],
            "certificate and kafka.security.tls.key go together",
        ),
        (["kafka.security.protocol=TLS"], "at '/kafka/security/protocol': value must be one of"),
        (["processingGuarantee=twice"], "at '/processingGuarantee': value must be one of"),
        (["settings.partitions=4"], "STREAM_APP_PARTITIONS is set by the chart"),
        (
            ["settings.CONSOLE_TOKEN=0123456789abcdef"],
            "STREAM_APP_CONSOLE_TOKEN is set by the chart",
        ),
        (["console.token=too-short"], "at '/console/token': 'anyOf' failed"),
    ],
)
def test_values_that_cannot_work_are_refused(settings: list[str], message: str) -> None:
    sets = [arg for setting in settings for arg in ("--set", setting)]
    result = helm("template", "jobs", str(CHART), *sets)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_every_value_is_documented() -> None:
    docs = "\n".join(page.read_text() for page in (ROOT / "docs").glob("*.md"))
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def documented(key: str) -> bool:
        # A map handed to Kubernetes whole (probes.liveness) is documented as one value.
        parts = key.split(".")
        return any(f"`{'.'.join(parts[:n])}`" in docs for n in range(1, len(parts) + 1))

    missing = [key for key in leaf_keys(values) if not documented(key)]
    assert not missing, f"values not in docs/: {missing}"


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of ``values``' leaves (a map left empty counts as a leaf)."""
    keys: list[str] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += leaf_keys(value, f"{path}.")
        else:
            keys.append(path)
    return keys
