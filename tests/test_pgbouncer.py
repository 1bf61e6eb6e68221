"""The app behind PgBouncer in transaction mode (the whole suite runs so with `make test-pgbouncer`)."""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.conftest import PASSWORD, PGBOUNCER, bearer, free_port, running_pgbouncer

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"),
]


@pytest.fixture
def bouncer_url(database_url) -> Iterator[str]:
    url = make_url(database_url)
    with running_pgbouncer(url.host or "127.0.0.1", url.port or 5432) as port:
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def test_the_api_works_through_pgbouncer(make_app, db, bouncer_url):
    with TestClient(make_app(database_url=bouncer_url)) as client:
        credentials = {"email": "pat@example.com", "password": PASSWORD}
        assert client.post("/register", json=credentials).status_code == 201
        headers = bearer(client.post("/login", json=credentials).json()["access_token"])
        created = client.post("/tasks", headers=headers, json={"title": "Through the pooler"})
        patched = client.patch(  # a conditional write: BEGIN ... COMMIT on one server connection
            f"/tasks/{created.json()['id']}",
            headers={**headers, "If-Match": created.headers["ETag"]},
            json={"status": "completed"},
        )
        listed = client.get("/tasks", headers=headers, params={"q": "pooler", "status": "completed"})
        ready = client.get("/ready")

    assert created.status_code == 201, created.text
    assert patched.status_code == 200, patched.text
    assert [task["title"] for task in listed.json()["items"]] == ["Through the pooler"]
    assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}


def test_sessions_through_pgbouncer_keep_the_statement_timeout_and_utc(app, bouncer_url):
    engine = create_engine(bouncer_url)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar_one() == "5s"
            assert connection.exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
    finally:
        engine.dispose()


def test_ready_stays_honest_when_pgbouncer_cannot_reach_postgresql(make_app, db):
    with running_pgbouncer("127.0.0.1", free_port(), query_wait_timeout="2") as port:
        unreachable = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/task_api"
        with TestClient(make_app(database_url=unreachable)) as client:
            ready = client.get("/ready")

    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "database": "unavailable", "redis": "ok"}
    assert ready.headers["Retry-After"]
