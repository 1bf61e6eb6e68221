"""/metrics from the production server: gunicorn's workers counted together, on their own port."""

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from task_api.auth.passwords import hash_password
from task_api.db import create_db_engine
from tests.conftest import PASSWORD, ROOT, free_port, wait_for_port
from tests.factories import TaskFactory, UserFactory
from tests.test_server import wait_for

DOWN_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/task_api"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server) -> Samples:
    response = httpx2.get(server.metrics_url, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def absent(samples: Samples, name: str, **labels: str) -> bool:
    return (name, frozenset(labels.items())) not in samples


def requests(samples: Samples, method: str, route: str, status: int) -> float:
    return value(samples, "task_api_requests_total", method=method, route=route, status=str(status))


def test_requests_are_counted_by_route_template_and_status_across_workers(start_server, db):
    user = UserFactory()
    task = TaskFactory(owner=user)
    server = start_server(WEB_CONCURRENCY="2", AUTH_RATE_LIMIT="2/minute")
    with httpx2.Client(base_url=server.url, timeout=10) as client:
        credentials = {"email": user.email, "password": PASSWORD}
        assert client.post("/register", json={"email": "new@example.com", "password": PASSWORD}).status_code == 201
        token = client.post("/login", json=credentials).json()["access_token"]
        assert client.post("/login", json=credentials).status_code == 429
        headers = {"Authorization": f"Bearer {token}"}
        statuses = [client.get(f"/tasks/{task.id}", headers=headers).status_code for _ in range(7)]
        statuses += [client.get("/tasks/999999", headers=headers).status_code for _ in range(3)]
        statuses.append(client.get("/tasks/", headers=headers).status_code)
        statuses.append(client.get("/no/such/path").status_code)
        statuses.append(client.get("/metrics").status_code)

    samples = scrape(server)

    assert statuses == [200] * 7 + [404] * 3 + [200, 404, 404]
    assert requests(samples, "GET", "/tasks/{task_id}", 200) == 7
    assert requests(samples, "GET", "/tasks/{task_id}", 404) == 3
    assert requests(samples, "GET", "/tasks", 200) == 1
    assert requests(samples, "GET", "<unmatched>", 404) == 2  # /metrics is not served on the API's port
    assert requests(samples, "POST", "/register", 201) == 1
    assert requests(samples, "POST", "/login", 200) == 1
    assert requests(samples, "POST", "/login", 429) == 1
    latency = {"method": "GET", "route": "/tasks/{task_id}", "status": "200"}
    assert value(samples, "task_api_request_duration_seconds_count", **latency) == 7
    assert 0 < value(samples, "task_api_request_duration_seconds_sum", **latency) < 7
    assert value(samples, "task_api_request_duration_seconds_bucket", le="+Inf", **latency) == 7
    assert value(samples, "task_api_rate_limited_total", budget="auth") == 1
    assert absent(samples, "task_api_rate_limited_total", budget="all")
    assert value(samples, "task_api_requests_in_flight") == 0
    assert value(samples, "task_api_db_connections_checked_out") == 0
    assert not [key for key in samples if any("999999" in label for _, label in key[1])]


def test_requests_in_flight_are_counted_while_they_run(start_server, db):
    slow = UserFactory(password_hash=hash_password(PASSWORD, rounds=14))  # a login that takes a second
    server = start_server(WEB_CONCURRENCY="2")

    with ThreadPoolExecutor(max_workers=1) as pool:
        login = pool.submit(
            httpx2.post, f"{server.url}/login", json={"email": slow.email, "password": PASSWORD}, timeout=30
        )
        wait_for(lambda: value(scrape(server), "task_api_requests_in_flight") == 1)  # the scrape itself is not counted
        assert login.result().status_code == 200

    assert value(scrape(server), "task_api_requests_in_flight") == 0


def test_dependency_errors_are_counted(start_server, db):
    server = start_server(DATABASE_URL=DOWN_DATABASE, REDIS_URL="redis://127.0.0.1:1/0")

    ready = httpx2.get(f"{server.url}/ready", timeout=10)
    listed = httpx2.get(f"{server.url}/tasks", timeout=10)
    samples = scrape(server)

    assert (ready.status_code, listed.status_code) == (503, 503)
    assert value(samples, "task_api_dependency_errors_total", dependency="postgresql") == 1
    assert value(samples, "task_api_dependency_errors_total", dependency="redis") == 2


def test_the_metrics_port_serves_only_metrics(start_server, db):
    server = start_server()
    metrics_root = server.metrics_url.removesuffix("/metrics")

    elsewhere = httpx2.get(f"{metrics_root}/health", timeout=10)

    assert elsewhere.status_code == 404
    assert elsewhere.json() == {"detail": "Not Found"}
    assert "task_api_requests_total" not in elsewhere.text


def listening_addresses(port: int) -> set[str]:
    """The local IPv4 addresses a socket on `port` listens on, as the kernel reports them."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_the_metrics_port_listens_on_this_machine_only_by_default(start_server, db):
    server = start_server(HOST="0.0.0.0")  # noqa: S104  (the API on every interface, as in production)
    api_port = int(server.url.rpartition(":")[2])
    metrics_port = int(server.metrics_url.removesuffix("/metrics").rpartition(":")[2])

    assert listening_addresses(api_port) == {"0.0.0.0"}  # noqa: S104
    assert listening_addresses(metrics_port) == {"127.0.0.1"}
    assert httpx2.get(server.metrics_url, timeout=10).status_code == 200


def test_the_pool_gauge_counts_only_connections_that_were_handed_out(settings):
    engine = create_db_engine(settings)

    def refuse(*_: object) -> None:
        raise engine.dialect.loaded_dbapi.OperationalError("the server is down")

    def checked_out() -> float | None:
        return REGISTRY.get_sample_value("task_api_db_connections_checked_out")

    before = checked_out() or 0.0
    try:
        with engine.connect() as connection:
            during = checked_out()
            connection.invalidate()  # the server went away: the pool reconnects on the next checkout
        event.listen(engine, "do_connect", refuse)  # and cannot: each failed checkout still checks in
        for _ in range(3):
            with pytest.raises(OperationalError), engine.connect():
                pass
        after = checked_out()
    finally:
        engine.dispose()

    assert (during, after) == (before + 1, before)


def test_an_operators_metrics_directory_is_emptied_of_samples_and_kept(start_server, db, tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "keep.txt").write_text("not ours")
    server = start_server(PROMETHEUS_MULTIPROC_DIR=str(directory))
    assert httpx2.get(f"{server.url}/health", timeout=10).status_code == 200
    samples_while_serving = sorted(path.name for path in directory.glob("*.db"))

    server.process.terminate()
    assert server.process.wait(timeout=30) == 0

    assert samples_while_serving
    assert sorted(path.name for path in directory.iterdir()) == ["keep.txt"]


def test_the_embedded_server_serves_the_api_on_whatever_port_it_is_given(tmp_path):
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'embedded.sqlite3'}",
        "METRICS_PORT": str(port),  # the default 9000, say, given to serve as its --port
    }
    environment.pop("REDIS_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "task_api", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**environment, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        health = httpx2.get(f"http://127.0.0.1:{port}/health", timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert (health.status_code, health.json()) == (200, {"status": "ok"})
