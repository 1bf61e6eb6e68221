"""The Helm chart (deploy/helm/task-api), rendered with `helm template` and read back.

helm comes from `deploy/install-helm .venv/bin/helm` (deploy/check runs it), or HELM names one;
without it these tests are skipped.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from task_api.app import create_app
from task_api.config import Settings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "task-api"
HELM = os.environ.get("HELM") or str(Path(sys.executable).parent / "helm")
if not os.access(HELM, os.X_OK):
    pytest.skip(f"no helm at {HELM}: run deploy/install-helm .venv/bin/helm, or set HELM", allow_module_level=True)

DEFAULT = "default-values.yaml"
ALL_ON = "all-on-values.yaml"
SECRET_NAME = "task-api-test"
# What the test Secret would hold: none of it may reach a manifest.
SECRET_VALUES = {
    "SECRET_KEY": "k8s-test-signing-key-0123456789abcdef0123456789",
    "DATABASE_URL": "postgresql://task_api:pg-test-password-5f1e@db.internal:5432/task_api",
    "REDIS_URL": "redis://:redis-test-password-9c2a@redis.internal:6379/0",
    "SMTP_URL": "smtp://mailer:smtp-test-password-7d41@smtp.internal:587",
}
SECRET_ENV = set(SECRET_VALUES)
# The key of each in the Secret: the chart's defaults, and those ci/all-on-values.yaml names.
SECRET_KEYS = {
    DEFAULT: {
        "SECRET_KEY": "SECRET_KEY",
        "DATABASE_URL": "DATABASE_URL",
        "REDIS_URL": "REDIS_URL",
        "SMTP_URL": "SMTP_URL",
    },
    ALL_ON: {"SECRET_KEY": "jwt-key", "DATABASE_URL": "postgres-url", "REDIS_URL": "redis-url", "SMTP_URL": "smtp-url"},
}
# Which of them each workload reads: only the reminder workers mail.
SECRETS_READ = {
    "api": SECRET_ENV - {"SMTP_URL"},
    "migrate": SECRET_ENV - {"SMTP_URL"},
    "worker": SECRET_ENV,
    "beat": SECRET_ENV - {"SMTP_URL"},
}
# An ingress controller's pods, as config.FORWARDED_ALLOW_IPS names them (a pod CIDR).
PROXY_RANGE = "10.244.0.0/16"
WITH_INGRESS = ("--set", "ingress.enabled=true", "--set", "ingress.hosts[0]=api.example.com")
# Settings not taken from `config`: the Secret's, those the chart sets, and HOST (the probes need
# gunicorn on every interface, the app's default).
CHART_MANAGED = SECRET_ENV | {"APP_ENV", "WEB_CONCURRENCY", "HOST", "METRICS_HOST", "ADMIN_PASSWORD"}


def helm_template(*options: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HELM, "template", "prod", str(chart), *options], capture_output=True, text=True, check=False)


@cache
def rendered_text(values: str, *options: str) -> str:
    result = helm_template("--values", str(CHART / "ci" / values), "--set", f"existingSecret={SECRET_NAME}", *options)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(values: str = DEFAULT, *options: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered_text(values, *options)) if doc]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {doc["kind"] for doc in docs}


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = (doc for doc in docs if doc["kind"] == kind)
    return doc


def component(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The Deployment (or, for "migrate", the Job) of the API, the reminder workers or beat."""
    (workload,) = (
        doc
        for doc in docs
        if doc["kind"] in {"Deployment", "Job"} and doc["metadata"]["labels"]["app.kubernetes.io/component"] == name
    )
    return workload


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod_spec(workload)["containers"]
    return only


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def secret_env(workload: dict[str, Any]) -> dict[str, Any]:
    return {env["name"]: env.get("valueFrom") for env in container(workload)["env"] if env["name"] in SECRET_ENV}


@cache
def app_paths() -> frozenset[str]:
    app = create_app(Settings(app_env="test", database_url="sqlite://", _env_file=None))
    try:
        return frozenset(app.openapi()["paths"])
    finally:
        app.state.runtime.close()


def gunicorn_graceful_timeout() -> int:
    tree = ast.parse((ROOT / "gunicorn.conf.py").read_text())
    (value,) = (
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and [target.id for target in node.targets] == ["graceful_timeout"]
    )
    return value


COMPONENTS = ("api", "worker", "beat", "migrate")
HEARTBEAT_AGE_LIMIT = 30


def test_default_rendering_has_no_optional_resources() -> None:
    assert kinds(render(DEFAULT)) == {"ConfigMap", "Service", "Deployment", "Job"}


def test_all_on_rendering_has_every_resource() -> None:
    assert kinds(render(ALL_ON)) == {
        "ConfigMap",
        "Service",
        "Deployment",
        "Job",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ServiceAccount",
    }


def test_replicas_are_left_to_the_autoscaler_when_it_is_on() -> None:
    assert component(render(DEFAULT), "api")["spec"]["replicas"] == 2
    assert "replicas" not in component(render(ALL_ON), "api")["spec"]


def test_rollout_never_stops_a_pod_before_its_replacement_is_ready() -> None:
    strategy = component(render(DEFAULT), "api")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook() -> None:
    job = one(render(DEFAULT), "Job")
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "pre-install,pre-upgrade",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation,hook-succeeded",
    }
    assert container(job)["command"] == ["python", "-m", "task_api", "migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_migration_job_needs_nothing_the_release_creates(values: str) -> None:
    """Hooks run before the release's other resources exist."""
    docs = render(values)
    job = one(docs, "Job")
    migrate = container(job)
    assert "envFrom" not in migrate
    assert not any("configMapKeyRef" in env.get("valueFrom", {}) for env in migrate["env"])
    assert all("configMap" not in volume for volume in pod_spec(job)["volumes"])
    created_accounts = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount"}
    assert pod_spec(job).get("serviceAccountName", "default") not in created_accounts
    env = {item["name"]: item.get("value") for item in migrate["env"]}
    assert env["APP_ENV"] == "production"
    assert one(docs, "ConfigMap")["data"].items() <= env.items()


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_each_deployment_selects_its_own_pods_only(values: str) -> None:
    docs = render(values)
    workloads = {name: component(docs, name) for name in COMPONENTS}
    for name in ("api", "worker", "beat"):
        selector = workloads[name]["spec"]["selector"]["matchLabels"]
        assert [other for other, workload in workloads.items() if matches(selector, pod_labels(workload))] == [name]


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_budget_autoscaler_and_service_select_the_api_pods_only(values: str) -> None:
    docs = render(values)
    deployment = component(docs, "api")
    selector = deployment["spec"]["selector"]["matchLabels"]
    others = [pod_labels(component(docs, name)) for name in COMPONENTS if name != "api"]
    service_selector = one(docs, "Service")["spec"]["selector"]
    assert matches(service_selector, pod_labels(deployment))
    assert not [labels for labels in others if matches(service_selector, labels)]
    if values == ALL_ON:
        assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
        assert one(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_probes_ask_real_routes_on_a_container_port(values: str) -> None:
    api = container(component(render(values), "api"))
    port_names = {port["name"] for port in api["ports"]}
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in app_paths()
        assert get["port"] in port_names
        paths[probe] = (get["path"], get["port"])
    assert paths == {
        "startupProbe": ("/ready", "http"),
        "readinessProbe": ("/health", "http"),
        "livenessProbe": ("/health", "http"),
    }


def test_probe_timings() -> None:
    api = container(component(render(DEFAULT), "api"))
    assert (api["startupProbe"]["periodSeconds"], api["startupProbe"]["failureThreshold"]) == (2, 30)
    assert api["readinessProbe"]["periodSeconds"] == 5
    liveness = api["livenessProbe"]
    assert (liveness["periodSeconds"], liveness["timeoutSeconds"], liveness["failureThreshold"]) == (10, 5, 3)


def test_shutdown_leaves_gunicorn_its_graceful_timeout() -> None:
    deployment = component(render(DEFAULT), "api")
    sleep, seconds = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    assert (sleep, seconds) == ("/bin/sleep", "10")
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    assert grace == 45
    assert grace > int(seconds) + gunicorn_graceful_timeout()


OPTIONS_TEMPTING_A_CHART = [
    option
    for name, value in SECRET_VALUES.items()
    for option in (
        ("--set-string", f"config.{name}={value}"),
        ("--set-string", f"{name}={value}"),
        ("--set-string", f"{name.lower().replace('_', '')}={value}"),
    )
]


@pytest.mark.parametrize("option", OPTIONS_TEMPTING_A_CHART, ids=lambda option: option[1].partition("=")[0])
def test_a_secret_given_as_a_value_is_refused(option: tuple[str, str]) -> None:
    result = helm_template("--set", f"existingSecret={SECRET_NAME}", *option)
    value = option[1].partition("=")[2]
    assert value not in result.stdout
    assert result.returncode != 0, "the schema let a secret in as a value"


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_secrets_come_only_from_the_existing_secret(values: str) -> None:
    text = rendered_text(values)
    assert not [value for value in SECRET_VALUES.values() if value in text]
    docs = render(values)
    assert SECRET_ENV.isdisjoint(one(docs, "ConfigMap")["data"])
    for name in COMPONENTS:
        app = container(component(docs, name))
        assert all("secretRef" not in source for source in app.get("envFrom", []))
        from_secret = [(env["name"], env.get("valueFrom")) for env in app["env"] if env["name"] in SECRET_ENV]
        expected = [
            (env, {"secretKeyRef": {"name": SECRET_NAME, "key": SECRET_KEYS[values][env]}})
            for env in sorted(SECRETS_READ[name])
        ]
        assert sorted(from_secret, key=itemgetter(0)) == expected, name


def test_rendering_without_an_existing_secret_fails() -> None:
    for options in ((), ("--set", "existingSecret=")):
        result = helm_template(*options)
        assert result.returncode != 0
        assert "existingSecret" in result.stderr


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_pods_run_unprivileged_on_a_read_only_root_with_tmp_in_an_empty_dir(values: str) -> None:
    docs = render(values)
    for workload in (component(docs, name) for name in COMPONENTS):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        security = container(workload)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        (tmp,) = (mount for mount in container(workload)["volumeMounts"] if mount["mountPath"] == "/tmp")  # noqa: S108
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert volumes[tmp["name"]]["emptyDir"] == {}


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_metrics_port_is_on_the_pods_only(values: str) -> None:
    docs = render(values)
    ports = {port["name"]: port["containerPort"] for port in container(component(docs, "api"))["ports"]}
    service = one(docs, "Service")
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    for ingress in (doc for doc in docs if doc["kind"] == "Ingress"):
        backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
        assert backends
        assert all(backend == {"name": service["metadata"]["name"], "port": {"name": "http"}} for backend in backends)
    annotations = component(docs, "api")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    config = one(docs, "ConfigMap")["data"]
    assert (int(config["PORT"]), int(config["METRICS_PORT"])) == (ports["http"], ports["metrics"])


@pytest.mark.parametrize("name", ["api", "worker"])
def test_metrics_disabled_leaves_the_pods_unscraped(name: str) -> None:
    scraped = component(render(DEFAULT), name)["spec"]["template"]["metadata"]["annotations"]
    assert scraped["prometheus.io/scrape"] == "true"
    template = component(render(DEFAULT, "--set", "metrics.enabled=false"), name)["spec"]["template"]
    assert not [key for key in template["metadata"]["annotations"] if key.startswith("prometheus.io/")]


@pytest.mark.parametrize("name", ["api", "worker", "beat"])
def test_a_config_change_rolls_the_pods(name: str) -> None:
    def checksum(*options: str) -> str:
        template = component(render(DEFAULT, *options), name)["spec"]["template"]
        return template["metadata"]["annotations"]["checksum/config"]

    assert checksum() != checksum("--set-string", "config.LOG_LEVEL=DEBUG")


def test_default_sizing_and_settings() -> None:
    api = container(component(render(DEFAULT), "api"))
    assert {"name": "WEB_CONCURRENCY", "value": "2"} in api["env"]
    assert api["resources"] == {"requests": {"cpu": "1", "memory": "384Mi"}, "limits": {"memory": "512Mi"}}
    config = one(render(DEFAULT), "ConfigMap")["data"]
    assert config["APP_ENV"] == "production"
    assert config["FORWARDED_ALLOW_IPS"] == ""
    assert config["COOKIE_SECURE"] == "true"


@pytest.mark.parametrize(("options", "replicas"), [((), 2), (("--set", "worker.replicas=5"), 5)])
def test_workers_run_as_many_pods_as_asked_with_the_api_pods_settings(options: tuple[str, ...], replicas: int) -> None:
    docs = render(DEFAULT, *options)
    worker, api = component(docs, "worker"), component(docs, "api")
    assert worker["spec"]["replicas"] == replicas
    assert container(worker)["command"] == ["python", "-m", "task_api", "worker"]
    assert container(worker)["envFrom"] == container(api)["envFrom"]
    assert {"configMapRef": {"name": one(docs, "ConfigMap")["metadata"]["name"]}} in container(worker)["envFrom"]
    worker_secrets = secret_env(worker)
    assert worker_secrets.pop("SMTP_URL") == {"secretKeyRef": {"name": SECRET_NAME, "key": "SMTP_URL"}}
    assert worker_secrets == secret_env(api)


def test_more_api_pods_bring_no_more_workers() -> None:
    docs = render(DEFAULT, "--set", "replicaCount=5")
    assert (component(docs, "api")["spec"]["replicas"], component(docs, "worker")["spec"]["replicas"]) == (5, 2)


@pytest.mark.parametrize(
    ("values", "options"),
    [(DEFAULT, ()), (ALL_ON, ()), (DEFAULT, ("--set", "replicaCount=5", "--set", "worker.replicas=4"))],
    ids=["default", "all-on", "scaled"],
)
def test_beat_is_one_pod_and_a_rollout_stops_the_old_one_before_starting_a_new_one(
    values: str, options: tuple[str, ...]
) -> None:
    docs = render(values, *options)
    beat = component(docs, "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert container(beat)["command"] == ["python", "-m", "task_api", "beat"]
    assert container(beat)["envFrom"] == container(component(docs, "api"))["envFrom"]
    beat_name = beat["metadata"]["name"]
    assert not [
        doc
        for doc in docs
        if doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["name"] == beat_name
    ]


@pytest.mark.parametrize(
    "option",
    ["beat.replicas=2", "beat.strategy.type=RollingUpdate", "beat.podDisruptionBudget.minAvailable=1"],
    ids=["replicas", "strategy", "budget"],
)
def test_no_value_gives_beat_a_second_replica_a_rolling_update_or_a_budget(option: str) -> None:
    result = helm_template("--set", f"existingSecret={SECRET_NAME}", "--set", option)
    assert result.returncode != 0
    key = option.partition("=")[0].split(".")[1]
    assert f"at '/beat': additional properties '{key}' not allowed" in result.stderr


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_no_disruption_budget_covers_beat_or_the_workers(values: str) -> None:
    """A budget of one pod out of one would block every node drain."""
    docs = render(values)
    budgets = [doc["spec"]["selector"]["matchLabels"] for doc in docs if doc["kind"] == "PodDisruptionBudget"]
    for name in ("worker", "beat"):
        assert not [selector for selector in budgets if matches(selector, pod_labels(component(docs, name)))]


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_worker_probes_ask_its_metrics_port_which_prometheus_scrapes(values: str) -> None:
    docs = render(values)
    worker = component(docs, "worker")
    config = one(docs, "ConfigMap")["data"]
    ports = {port["name"]: port["containerPort"] for port in container(worker)["ports"]}
    assert ports == {"metrics": int(config["WORKER_METRICS_PORT"])}
    assert config["METRICS_HOST"] == "0.0.0.0"  # noqa: S104  (where the kubelet and Prometheus reach it)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container(worker)[probe]["httpGet"]
        assert (get["port"], get["path"].partition("?")[0]) == ("metrics", "/metrics")
    annotations = worker["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (
        config["WORKER_METRICS_PORT"],
        "/metrics",
    )


class CountedCollector(Collector):
    """Stands in for the worker's pending-reminders gauge, which asks PostgreSQL at every collection."""

    def __init__(self) -> None:
        self.collections = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.collections += 1
        yield GaugeMetricFamily("task_api_reminders_pending", "Reminders armed and not yet sent", value=0)


def test_worker_probes_leave_the_database_alone() -> None:
    """A PostgreSQL outage must not look like a dead worker: the probe's page counts nothing there."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    pending = CountedCollector()
    registry.register(pending)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        path = container(component(render(DEFAULT), "worker"))["livenessProbe"]["httpGet"]["path"]
        before = pending.collections
        probed = httpx2.get(base + path, timeout=5)
        assert probed.status_code == 200
        assert "process_start_time_seconds" in probed.text
        assert pending.collections == before
        assert "task_api_reminders_pending" in httpx2.get(base + "/metrics", timeout=5).text
        assert pending.collections == before + 1
    finally:
        server.shutdown()
        thread.join(timeout=5)


def heartbeat_path() -> str:
    """The file beat touches at every tick, as task_api/reminders/jobs.py names it."""
    tree = ast.parse((ROOT / "task_api" / "reminders" / "jobs.py").read_text())
    (path,) = (
        node.value.args[0].value
        for node in tree.body
        if isinstance(node, ast.Assign) and [ast.unparse(target) for target in node.targets] == ["BEAT_HEARTBEAT"]
    )
    return path


def test_beat_probes_check_its_heartbeat_file_and_fail_when_it_is_stale_or_missing(tmp_path: Path) -> None:
    beat = container(component(render(DEFAULT), "beat"))
    assert "readinessProbe" not in beat
    command = beat["livenessProbe"]["exec"]["command"]
    assert beat["startupProbe"]["exec"]["command"] == command
    program, flag, code = command
    assert (program, flag) == ("python", "-c")
    assert heartbeat_path() in code
    heartbeat = tmp_path / "beat.alive"
    probe = [sys.executable, flag, code.replace(heartbeat_path(), str(heartbeat))]

    def passes() -> bool:
        return subprocess.run(probe, capture_output=True, check=False, timeout=30).returncode == 0

    assert not passes()
    heartbeat.touch()
    assert passes()
    stale = time.time() - HEARTBEAT_AGE_LIMIT - 2
    os.utime(heartbeat, (stale, stale))
    assert not passes()
    liveness = beat["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= HEARTBEAT_AGE_LIMIT


def test_a_worker_gets_a_minute_to_finish_its_batch_and_beat_holds_no_work() -> None:
    docs = render(DEFAULT)
    assert pod_spec(component(docs, "worker"))["terminationGracePeriodSeconds"] == 60
    assert (
        pod_spec(component(docs, "worker"))["terminationGracePeriodSeconds"]
        > Settings.model_fields["reminder_lease_seconds"].default
    )
    assert pod_spec(component(render(ALL_ON), "worker"))["terminationGracePeriodSeconds"] == 90
    assert pod_spec(component(docs, "beat"))["terminationGracePeriodSeconds"] < 60


def test_default_reminder_sizing() -> None:
    docs = render(DEFAULT)
    assert container(component(docs, "worker"))["resources"] == {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"memory": "320Mi"},
    }
    assert container(component(docs, "beat"))["resources"] == {
        "requests": {"cpu": "50m", "memory": "160Mi"},
        "limits": {"memory": "256Mi"},
    }
    config = one(docs, "ConfigMap")["data"]
    threads = int(config["WORKER_CONCURRENCY"])
    assert threads <= int(config["DB_POOL_SIZE"]) + int(config["DB_MAX_OVERFLOW"])


def test_config_takes_every_setting_the_chart_does_not_set_itself() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["config"]["properties"])
    assert allowed == {name.upper() for name in Settings.model_fields} - CHART_MANAGED


@pytest.mark.parametrize(
    "proxies",
    [(), ("--set-string", "config.FORWARDED_ALLOW_IPS="), ("--set-string", "config.FORWARDED_ALLOW_IPS= ")],
    ids=["default", "empty", "blank"],
)
def test_an_ingress_without_a_trusted_proxy_range_is_refused_saying_what_to_set_and_why(
    proxies: tuple[str, ...],
) -> None:
    result = helm_template("--set", f"existingSecret={SECRET_NAME}", *WITH_INGRESS, *proxies)
    assert result.returncode != 0
    assert not result.stdout
    message = " ".join(result.stderr.split())
    # What to set...
    assert "--set-string config.FORWARDED_ALLOW_IPS=" in message
    assert "ingress controller's pods" in message
    # ...and why: behind the controller every client shares its budgets, the login one included.
    assert "all clients share one rate-limit budget (RATE_LIMIT, 100/minute)" in message
    assert "(AUTH_RATE_LIMIT, 10/minute on /login and /register)" in message
    assert "lock everyone out of login" in message


def test_the_refusal_names_the_login_budget_the_release_sets() -> None:
    result = helm_template(
        "--set", f"existingSecret={SECRET_NAME}", *WITH_INGRESS, "--set-string", "config.AUTH_RATE_LIMIT=3/minute"
    )
    assert result.returncode != 0
    assert "(AUTH_RATE_LIMIT, 3/minute on /login and /register)" in " ".join(result.stderr.split())


def test_an_ingress_with_a_trusted_proxy_range_renders_and_the_range_reaches_the_pods() -> None:
    docs = render(DEFAULT, *WITH_INGRESS, "--set-string", f"config.FORWARDED_ALLOW_IPS={PROXY_RANGE}")
    assert "Ingress" in kinds(docs)
    configmap = one(docs, "ConfigMap")
    assert configmap["data"]["FORWARDED_ALLOW_IPS"] == PROXY_RANGE
    api = container(component(docs, "api"))
    assert {"configMapRef": {"name": configmap["metadata"]["name"]}} in api["envFrom"]
    assert "FORWARDED_ALLOW_IPS" not in {env["name"] for env in api["env"]}, "env would override the ConfigMap"
    migrate = {env["name"]: env.get("value") for env in container(one(docs, "Job"))["env"]}
    assert migrate["FORWARDED_ALLOW_IPS"] == PROXY_RANGE


@pytest.mark.parametrize("values", [DEFAULT, ALL_ON])
def test_no_proxy_is_trusted_unless_named(values: str) -> None:
    docs = render(values)
    expected = PROXY_RANGE if values == ALL_ON else ""
    assert one(docs, "ConfigMap")["data"]["FORWARDED_ALLOW_IPS"] == expected
    migrate = {env["name"]: env.get("value") for env in container(one(docs, "Job"))["env"]}
    assert migrate["FORWARDED_ALLOW_IPS"] == expected


def rendered_notes(tmp_path: Path, *options: str) -> str:
    """NOTES.txt as `helm install` would print it: helm template leaves it out, so render a copy of it as a manifest."""
    chart = tmp_path / CHART.name
    shutil.copytree(CHART, chart)
    templates = chart / "templates"
    notes = (templates / "NOTES.txt").read_text()
    (templates / "_test_notes.tpl").write_text('{{- define "test.notes" -}}\n' + notes + "{{- end }}\n")
    (templates / "test-notes.yaml").write_text('kind: Notes\ntext: {{ include "test.notes" . | toJson }}\n')
    result = helm_template(
        "--show-only", "templates/test-notes.yaml", "--set", f"existingSecret={SECRET_NAME}", *options, chart=chart
    )
    assert result.returncode == 0, result.stderr
    return " ".join(yaml.safe_load(result.stdout)["text"].split())


def test_notes_say_that_without_a_trusted_proxy_clients_own_addresses_count(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)
    assert "No proxy is trusted (config.FORWARDED_ALLOW_IPS is empty)" in notes
    assert "rate limits key on each connection's own address" in notes
    assert "set config.FORWARDED_ALLOW_IPS to its pods' addresses or CIDR" in notes
    assert "10/minute login budget" in notes


@pytest.mark.parametrize("ingress", [(), WITH_INGRESS], ids=["service", "ingress"])
def test_notes_name_the_trusted_proxies(tmp_path: Path, ingress: tuple[str, ...]) -> None:
    notes = rendered_notes(tmp_path, *ingress, "--set-string", f"config.FORWARDED_ALLOW_IPS={PROXY_RANGE}")
    assert f"X-Forwarded-For is trusted from config.FORWARDED_ALLOW_IPS = {PROXY_RANGE} only" in notes
    assert "No proxy is trusted" not in notes
    assert "loopback only" not in notes


def test_notes_warn_that_loopback_is_no_ingress_controller(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path, *WITH_INGRESS, "--set-string", "config.FORWARDED_ALLOW_IPS=127.0.0.1")
    assert "That is loopback only" in notes
    assert "or every client shares one 10/minute login budget" in notes


def test_notes_warn_that_reminders_from_localhost_are_refused(tmp_path: Path) -> None:
    notes = rendered_notes(tmp_path)
    assert "They are sent From: task_api <reminders@localhost>, an address most mail servers refuse" in notes
    assert "--set-string config.MAIL_FROM='Tasks <reminders@example.com>'" in notes
    assert "prod-task-api-worker --replicas=4" in notes
    named = rendered_notes(tmp_path / "named", "--set-string", "config.MAIL_FROM=Tasks <reminders@example.com>")
    assert "most mail servers refuse" not in named
