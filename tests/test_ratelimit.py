import re
import threading
import time

import httpx2
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from sqlalchemy import event, func, select

from task_api.models import Task
from tests.conftest import PASSWORD, Server
from tests.factories import TaskFactory, UserFactory
from tests.test_server import wait_for

LIMIT = 100


def spend(client: TestClient, count: int, path: str = "/tasks", headers: dict[str, str] | None = None) -> None:
    for _ in range(count):
        response = client.get(path, headers=headers)
        assert response.status_code != 429, response.text


def test_the_101st_request_in_a_minute_is_refused(client, db, auth_headers):
    headers = auth_headers(UserFactory())
    first = client.get("/tasks", headers=headers)
    assert first.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert first.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)
    assert int(first.headers["X-RateLimit-Reset"]) > time.time()
    spend(client, LIMIT - 2, headers=headers)
    last = client.get("/tasks", headers=headers)
    assert last.status_code == 200
    assert last.headers["X-RateLimit-Remaining"] == "0"

    refused = client.get("/tasks", headers=headers)

    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    assert "Rate limit exceeded" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert refused.headers["X-RateLimit-Remaining"] == "0"


def test_one_budget_is_shared_by_every_route(client, db, auth_headers):
    user = UserFactory()
    first, second = TaskFactory.create_batch(2, owner=user)
    headers = auth_headers(user)
    paths = [f"/tasks/{first.id}", f"/tasks/{second.id}", "/tasks", "/users/me"]
    for index in range(LIMIT):
        assert client.get(paths[index % len(paths)], headers=headers).status_code == 200

    assert client.get("/tasks/999999", headers=headers).status_code == 429
    assert client.get(f"/tasks/{first.id}", headers=headers).status_code == 429


def test_users_behind_one_address_have_budgets_of_their_own(client, db, auth_headers):
    alice, bob = UserFactory(), UserFactory()
    alice_headers, bob_headers = auth_headers(alice), auth_headers(bob)
    spend(client, LIMIT, headers=alice_headers)
    assert client.get("/tasks", headers=alice_headers).status_code == 429

    response = client.get("/tasks", headers=bob_headers)

    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


def test_requests_without_a_valid_token_share_the_address_budget(client, db, redis):
    spend(client, LIMIT // 2, path="/users/me")
    spend(client, LIMIT // 2, path="/users/me", headers={"Authorization": "Bearer not-a-jwt"})

    assert client.get("/tasks").status_code == 429
    assert client.get("/tasks", headers={"Authorization": "Bearer forged"}).status_code == 429


def test_a_refused_request_does_no_database_work(client, db, auth_headers, app):
    user = UserFactory()
    headers = auth_headers(user)
    spend(client, LIMIT, headers=headers)
    statements: list[str] = []
    engine = app.state.runtime.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.post("/tasks", json={"title": "one too many"}, headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)

    assert response.status_code == 429
    assert statements == []
    assert db.scalar(select(func.count()).select_from(Task)) == 0


def test_login_and_register_have_a_stricter_address_limit(client, db):
    user = UserFactory()
    for index in range(5):
        client.post("/login", json={"email": user.email, "password": "wrong password"})
        client.post("/register", json={"email": f"new{index}@example.com", "password": "long enough"})

    login = client.post("/login", json={"email": f"other{user.email}", "password": "wrong password"})
    register = client.post("/auth/register", json={"email": "late@example.com", "password": "long enough"})

    assert login.status_code == 429
    assert login.headers["X-RateLimit-Limit"] == "10"
    assert "Retry-After" in login.headers
    assert register.status_code == 429
    assert client.get("/users/me").status_code == 401


def test_limits_are_configurable(make_app, db):
    with TestClient(make_app(rate_limit="3/minute")) as client:
        statuses = [client.get("/tasks").status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_two_app_instances_share_one_budget(make_app, db, auth_headers):
    user = UserFactory()
    headers = auth_headers(user)
    with TestClient(make_app()) as first, TestClient(make_app()) as second:
        spend(first, 60, headers=headers)
        spend(second, LIMIT - 60, headers=headers)
        assert first.get("/tasks", headers=headers).status_code == 429
        assert second.get("/tasks", headers=headers).status_code == 429


def test_with_redis_down_requests_fail_closed(make_app, db):
    with TestClient(make_app(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout=0.5)) as client:
        response = client.get("/tasks")
        login = client.post("/login", json={"email": "a@example.com", "password": "long enough"})

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.headers["Retry-After"]
    assert "unavailable" in response.json()["detail"]
    assert login.status_code == 503


def test_two_processes_share_one_budget(start_server):
    servers = [start_server(RATE_LIMIT="10/minute"), start_server(RATE_LIMIT="10/minute")]

    statuses = [httpx2.get(f"{servers[index % 2].url}/tasks").status_code for index in range(11)]

    assert statuses == [401] * 10 + [429]


def test_a_revoked_token_spends_its_address_budget_not_its_owners(client, db, auth_headers, redis):
    user = UserFactory()
    dead, fresh = auth_headers(user), auth_headers(user)
    client.cookies.clear()  # the jar's refresh cookie is fresh's login, which /logout would end too
    assert client.post("/logout", headers=dead).status_code == 204
    spend_until_refused = [client.get("/tasks", headers=dead).status_code for _ in range(LIMIT)]

    response = client.get("/tasks", headers=fresh)

    assert 429 in spend_until_refused
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == str(LIMIT - 2)  # the logout, then this one


def test_malformed_bodies_and_unknown_paths_spend_the_budget_too(make_app, db):
    with TestClient(make_app(rate_limit="3/minute")) as client:
        malformed = client.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})
        unknown = client.get("/no/such/path")
        client.get("/tasks")
        refused = client.post("/tasks", content=b"{not json", headers={"Content-Type": "application/json"})

    assert malformed.status_code == 422
    assert malformed.headers["X-RateLimit-Remaining"] == "2"
    assert unknown.status_code == 404
    assert unknown.headers["X-RateLimit-Remaining"] == "1"
    assert refused.status_code == 429


def test_health_and_the_docs_spend_no_budget(make_app, db):
    with TestClient(make_app(rate_limit="1/minute")) as client:
        pages = ["/health", "/ready", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]
        assets = re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", client.get("/docs").text)
        responses = [client.get(path) for path in [*pages, *assets] * 2]

        assert client.get("/tasks").status_code == 401

    assert assets
    assert {response.status_code for response in responses} == {200}
    assert not [response for response in responses if "X-RateLimit-Limit" in response.headers]


def test_no_header_is_written_twice(make_app, db, auth_headers):
    user = UserFactory()
    headers = auth_headers(user)
    with TestClient(make_app(rate_limit="3/minute")) as client:
        responses = [
            client.get("/tasks", headers=headers),
            client.get("/tasks/999999", headers=headers),
            client.post("/tasks", json={}, headers=headers),
            client.get("/tasks", headers=headers),
            client.get("/no/such/path"),
            client.post("/login", json={"email": user.email, "password": PASSWORD}),
        ]

    assert [response.status_code for response in responses] == [200, 404, 422, 429, 404, 200]
    for response in responses:
        names = [name.lower() for name, _ in response.headers.multi_items() if name.lower() != "set-cookie"]
        assert len(names) == len(set(names)), names  # Set-Cookie alone may repeat (one per cookie path)
        assert "x-ratelimit-remaining" in names


def test_the_login_budget_refuses_even_with_the_shared_budget_left(make_app, db):
    user = UserFactory()
    with TestClient(make_app(auth_rate_limit="2/minute")) as client:
        statuses = [
            client.post("/login", json={"email": user.email, "password": PASSWORD}).status_code for _ in range(3)
        ]
        me = client.get("/users/me")

    assert statuses == [200, 200, 429]
    assert me.status_code == 401
    assert me.headers["X-RateLimit-Remaining"] == str(LIMIT - 4)


def test_slowapi_variables_cannot_make_the_limits_fail_open(make_app, monkeypatch):
    monkeypatch.setenv("RATELIMIT_SWALLOW_ERRORS", "true")

    with pytest.raises(ValueError, match="RATELIMIT_"):
        make_app()


def test_redis_slower_than_its_timeout_fails_closed(make_app, db, own_redis):
    port, _ = own_redis
    blocker = Redis(port=port)
    with TestClient(make_app(redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout=0.3)) as client:
        assert client.get("/tasks").status_code == 401
        sleeper = threading.Thread(target=blocker.execute_command, args=("DEBUG", "SLEEP", "2"))
        sleeper.start()
        wait_until_asleep(port)
        response = client.get("/tasks")
        sleeper.join()

    assert response.status_code == 503
    assert response.json() == {"detail": "Token and rate-limit store unavailable"}
    assert response.headers["Retry-After"]


def wait_until_asleep(port: int) -> None:
    """Until the server stops answering: DEBUG SLEEP has started."""
    with Redis(port=port, socket_timeout=0.05, retry=Retry(NoBackoff(), retries=0)) as probe:
        wait_for(lambda: not answers(probe), timeout=1.5)


def answers(probe: Redis) -> bool:
    try:
        return bool(probe.ping())
    except RedisTimeoutError:
        return False


def test_an_exhausted_redis_pool_fails_closed(make_app, db):
    app = make_app(redis_max_connections=1, redis_socket_timeout=0.3)
    with TestClient(app) as client:
        pool = app.state.runtime.redis.connection_pool
        held = pool.get_connection()
        try:
            response = client.get("/tasks")
        finally:
            pool.release(held)
        after = client.get("/tasks")

    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert after.status_code == 401


def test_the_first_request_after_redis_forgets_its_scripts_is_served(client, db, auth_headers, redis):
    headers = auth_headers(UserFactory())
    assert client.get("/tasks", headers=headers).status_code == 200
    redis.script_flush()

    response = client.get("/tasks", headers=headers)

    assert response.status_code == 200
    assert response.headers["X-RateLimit-Remaining"] == str(LIMIT - 2)


def test_x_forwarded_for_counts_only_from_trusted_peers(start_server):
    trusted = start_server(RATE_LIMIT="2/minute", FORWARDED_ALLOW_IPS="127.0.0.1")
    untrusted = start_server(RATE_LIMIT="2/minute", FORWARDED_ALLOW_IPS="192.0.2.1")

    def statuses(server: Server) -> list[int]:
        return [
            httpx2.get(f"{server.url}/tasks", headers={"X-Forwarded-For": f"198.51.100.{index}"}).status_code
            for index in range(3)
        ]

    assert statuses(trusted) == [401, 401, 401]
    assert statuses(untrusted) == [401, 401, 429]
