"""The production server as an operator runs it: gunicorn with gunicorn.conf.py."""

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx2

from task_api.auth.passwords import hash_password
from tests.conftest import GUNICORN, PASSWORD, ROOT, SECRET_KEY, Server, free_port
from tests.factories import TaskFactory, UserFactory


def test_a_burst_larger_than_the_pool_queues_instead_of_failing(start_server, db):
    user = UserFactory()
    tasks = TaskFactory.create_batch(5, owner=user)
    server = start_server(THREADPOOL_SIZE="2", DB_POOL_SIZE="1", DB_MAX_OVERFLOW="1", DB_POOL_TIMEOUT="1")
    token = httpx2.post(f"{server.url}/login", json={"email": user.email, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['access_token']}"}

    def read(index: int) -> int:
        return httpx2.get(f"{server.url}/tasks/{tasks[index % 5].id}", headers=headers, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(read, range(80)))

    assert statuses == [200] * 80


def test_logs_are_one_json_line_per_request_and_hold_no_secrets(start_server, db):
    user = UserFactory()
    server = start_server(LOG_FORMAT="json")
    tokens = httpx2.post(f"{server.url}/login", data={"username": user.email, "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "X-Request-ID": "req-42"}
    httpx2.get(f"{server.url}/users/me", headers=headers)
    httpx2.post(f"{server.url}/refresh", json={"refresh_token": tokens["refresh_token"]})
    httpx2.post(f"{server.url}/login", json={"email": user.email, "password": "wrong password!"})
    httpx2.post(f"{server.url}/register", json={"email": "new@example.com", "password": "x"})
    server.process.terminate()
    server.process.wait(timeout=30)

    text = server.log.read_text()
    for secret in (PASSWORD, "wrong password!", tokens["access_token"], tokens["refresh_token"], "Bearer"):
        assert secret not in text
    entries = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
    # the readiness polls of start_server are left out: a slow start can make it poll twice
    requests = [entry for entry in entries if entry["logger"] == "task_api.access" and entry["path"] != "/health"]
    assert [(entry["method"], entry["path"], entry["status"]) for entry in requests] == [
        ("POST", "/login", 200),
        ("GET", "/users/me", 200),
        ("POST", "/refresh", 200),
        ("POST", "/login", 401),
        ("POST", "/register", 422),
    ]
    me = requests[1]
    assert me["request_id"] == "req-42"
    assert me["user_id"] == user.id
    assert isinstance(me["duration_ms"], float)
    assert all(len(entry["request_id"]) == 32 for entry in requests if entry is not me)


def test_the_in_process_redis_is_refused_with_several_workers(database_url):
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": SECRET_KEY,
        "WEB_CONCURRENCY": "2",
        "PORT": str(free_port()),
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py", "task_api.main:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "REDIS_URL is unset" in result.stderr


def test_recycled_workers_drop_no_request_under_load(start_server, db):
    server = start_server(WEB_CONCURRENCY="2", MAX_REQUESTS="100")
    asking = threading.Event()
    asking.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        load = [pool.submit(keep_asking, server.url, "/health", asking) for _ in range(8)]
        try:
            wait_for(lambda: workers_started(server) >= 8)  # the first two workers, and six replacements
        finally:
            asking.clear()
        outcomes = [outcome for future in load for outcome in future.result()]

    assert len(outcomes) > 600
    assert [outcome for outcome in outcomes if outcome != 200] == []


def test_a_reload_and_a_stop_under_load_fail_no_request(start_server, db):
    server = start_server(WEB_CONCURRENCY="2")
    slow = UserFactory(password_hash=hash_password(PASSWORD, rounds=14))  # a login that takes a second
    routing = threading.Event()  # a load balancer routes here until the stop
    routing.set()

    with ThreadPoolExecutor(max_workers=9) as pool:
        load = [pool.submit(keep_asking, server.url, "/ready", routing) for _ in range(8)]
        try:
            time.sleep(1)
            server.process.send_signal(signal.SIGHUP)
            wait_for(lambda: workers_started(server) >= 4)
            time.sleep(1)
            login = pool.submit(
                httpx2.post, f"{server.url}/login", json={"email": slow.email, "password": PASSWORD}, timeout=30
            )
            time.sleep(0.3)
        finally:
            routing.clear()
        server.process.send_signal(signal.SIGTERM)
        outcomes = [outcome for future in load for outcome in future.result()]
        logged_in = login.result()

    assert server.process.wait(timeout=40) == 0
    assert len(outcomes) > 500
    assert [outcome for outcome in outcomes if outcome != 200] == []
    assert logged_in.status_code == 200, logged_in.text
    log = server.log.read_text()
    assert "Handling signal: hup" in log
    assert log.index("Handling signal: term") < log.index("POST /login 200")  # it was running at SIGTERM


def keep_asking(url: str, path: str, asking: threading.Event) -> list[int | str]:
    """One keep-alive client's answers to GET `path` while `asking` is set: each status, or the
    name of the transport error that replaced it."""
    outcomes: list[int | str] = []
    with httpx2.Client(base_url=url, timeout=30) as client:
        while asking.is_set():
            try:
                outcomes.append(client.get(path).status_code)
            except httpx2.TransportError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes


def workers_started(server: Server) -> int:
    return sum("Started server process" in line for line in server.log_lines())


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
