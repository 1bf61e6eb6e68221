import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import start_redis
from tests.factories import UserFactory


def test_unknown_route_is_a_json_404(client):
    response = client.get("/no/such/route")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert response.headers["content-type"] == "application/json"


def test_unsupported_method_is_a_json_405(client):
    response = client.put("/tasks")

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


@pytest.mark.parametrize(
    "body",
    [b'{"email": "a@example.com",', b"\xff\xfe\x00{", b"\x80\x81 not utf-8", b"[1, 2", b"null"],
)
def test_undecodable_or_malformed_json_is_a_422(client, body):
    response = client.post("/register", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert {"loc", "msg", "type"} <= detail[0].keys()
    assert detail[0]["loc"][0] == "body"


def test_a_body_over_the_size_limit_is_a_413(make_app, db):
    with TestClient(make_app(max_body_bytes=1024)) as client:
        response = client.post("/register", content=b'{"email": "' + b"a" * 2048 + b'"}')

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["detail"]


def test_a_request_id_is_generated_or_echoed(client):
    generated = client.get("/users/me")
    echoed = client.get("/users/me", headers={"X-Request-ID": "abc-123"})
    replaced = client.get("/users/me", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})

    assert len(generated.headers["X-Request-ID"]) == 32
    assert echoed.headers["X-Request-ID"] == "abc-123"
    assert replaced.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(replaced.headers["X-Request-ID"]) == 32


def test_an_unexpected_error_is_a_json_500_that_leaks_nothing(make_app, db):
    app = make_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={"X-Request-ID": "trace-me"})

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error", "request_id": "trace-me"}
    assert response.headers["X-Request-ID"] == "trace-me"
    assert "secret" not in response.text


def test_with_the_database_down_requests_get_a_503(make_app, redis, auth_headers, client, db):
    headers = auth_headers(UserFactory())
    down = make_app(database_url="postgresql+psycopg2://postgres@127.0.0.1:1/task_api", db_connect_timeout=1)
    with TestClient(down) as down_client:
        read = down_client.get("/users/me", headers=headers)
        login = down_client.post("/login", json={"email": "a@example.com", "password": "long enough"})

    for response in (read, login):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {"detail": "Database unavailable"}
        assert response.headers["Retry-After"]


@pytest.mark.postgres_only
def test_the_service_recovers_when_database_connections_are_cut(client, db, auth_headers, app, database_url):
    headers = auth_headers(UserFactory())
    db.close()
    pool = app.state.runtime.engine.pool
    assert client.get("/users/me", headers=headers).status_code == 200
    assert pool.checkedin() >= 1
    outsider = create_engine(database_url, poolclass=NullPool)
    with outsider.connect() as connection:
        # With a timeout, pg_terminate_backend returns only once each backend has exited (it
        # otherwise returns as soon as the signal is sent, before the connection is closed).
        killed = connection.scalar(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    outsider.dispose()
    assert killed >= pool.checkedin()

    assert [client.get("/users/me", headers=headers).status_code for _ in range(3)] == [200, 200, 200]


def test_the_service_recovers_when_redis_comes_back(make_app, db, own_redis):
    port, servers = own_redis
    with TestClient(make_app(redis_url=f"redis://127.0.0.1:{port}/0", redis_socket_timeout=0.5)) as client:
        assert client.get("/users/me").status_code == 401
        servers[0].terminate()
        servers[0].wait(timeout=10)
        assert client.get("/users/me").status_code == 503
        servers.append(start_redis(port))
        assert client.get("/users/me").status_code == 401


def test_a_streamed_body_over_the_size_limit_is_a_413(make_app, db):
    def chunks():
        for _ in range(4):
            yield b"x" * 512

    with TestClient(make_app(max_body_bytes=1024)) as client:
        response = client.post("/register", content=chunks(), headers={"Content-Type": "application/json"})

    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 1024 bytes"}


def test_deeply_nested_json_is_a_422_not_a_500(client):
    body = '{"email": ' + "[" * 5000 + "]" * 5000 + ', "password": "long enough"}'

    response = client.post("/login", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
@pytest.mark.parametrize("path", ["/users/me", "/users/{id}"])
def test_deeply_nested_bodies_for_the_user_routes_are_a_422_not_a_500(client, db, auth_headers, path, content_type):
    user = UserFactory()
    body = "[" * 100_000 + "]" * 100_000
    headers = auth_headers(user) | ({} if content_type is None else {"Content-Type": content_type})
    method = "PATCH" if path == "/users/me" else "PUT"

    response = client.request(method, path.format(id=user.id), content=body, headers=headers)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], list)
