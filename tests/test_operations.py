import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2
import psycopg2
import pytest
from fastapi.testclient import TestClient
from psycopg2.extensions import connection
from pydantic import ValidationError
from redis import Redis
from sqlalchemy.engine import make_url

from task_api.config import PLACEHOLDER_SECRET, Settings
from tests.conftest import PGBOUNCER, REDIS_URL, SECRET_KEY, running_pgbouncer

DOWN_DATABASE = "postgresql+psycopg2://postgres@127.0.0.1:1/task_api"
DOWN_REDIS = "redis://127.0.0.1:1/0"


def test_health_touches_nothing_and_is_never_limited(make_app):
    app = make_app(database_url=DOWN_DATABASE, redis_url=DOWN_REDIS, rate_limit="1/minute")
    with TestClient(app) as client:
        responses = [client.get("/health") for _ in range(5)]

    assert [response.status_code for response in responses] == [200] * 5
    assert responses[-1].json() == {"status": "ok"}
    assert "X-RateLimit-Limit" not in responses[-1].headers


def test_ready_when_everything_answers(client):
    responses = [client.get("/ready") for _ in range(120)]

    assert {response.status_code for response in responses} == {200}
    assert responses[0].json() == {"status": "ok", "database": "ok", "redis": "ok"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"redis_url": DOWN_REDIS}, {"status": "unavailable", "database": "ok", "redis": "unavailable"}),
        ({"database_url": DOWN_DATABASE}, {"status": "unavailable", "database": "unavailable", "redis": "ok"}),
    ],
)
def test_ready_names_the_part_that_is_down(make_app, db, overrides, expected):
    with TestClient(make_app(redis_socket_timeout=0.5, db_connect_timeout=1, **overrides)) as client:
        response = client.get("/ready")

    assert response.status_code == 503
    assert response.json() == expected
    assert response.headers["Retry-After"]


def flood_ready(client: httpx2.Client, seconds: float) -> list[int]:
    """Ask for /ready from 8 threads at once for that many seconds; the statuses."""
    deadline = time.monotonic() + seconds

    def ask() -> list[int]:
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(client.get("/ready").status_code)
        return statuses

    with ThreadPoolExecutor(max_workers=8) as pool:
        return [status for statuses in pool.map(lambda _: ask(), range(8)) for status in statuses]


def pings(redis: Redis) -> int:
    return redis.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)


def queries(bouncer: connection, database: str | None) -> int:
    """The queries PgBouncer has passed on to database."""
    with bouncer.cursor() as cursor:
        cursor.execute("SHOW STATS")
        column = [name for name, *_ in cursor.description].index("total_query_count")
        return sum(row[column] for row in cursor.fetchall() if row[0] == database)


@pytest.mark.postgres_only
@pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)")
def test_a_flood_of_ready_checks_each_dependency_at_most_once_a_second(start_server, own_redis, database_url):
    redis_port, redis_servers = own_redis
    redis = Redis(port=redis_port)
    url = make_url(database_url)
    with running_pgbouncer(url.host or "127.0.0.1", url.port or 5432) as bouncer_port:  # to count queries
        server = start_server(
            DATABASE_URL=url.set(host="127.0.0.1", port=bouncer_port).render_as_string(hide_password=False),
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        )
        bouncer = psycopg2.connect(host="127.0.0.1", port=bouncer_port, user="pgbouncer", dbname="pgbouncer")
        bouncer.autocommit = True
        with httpx2.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/ready").status_code == 200  # the server's connections are open
            counts = pings(redis), queries(bouncer, url.database)
            statuses = flood_ready(client, 1.5)
            pinged, queried = pings(redis) - counts[0], queries(bouncer, url.database) - counts[1]

            redis_servers[0].terminate()
            redis_servers[0].wait(timeout=10)
            down_at = time.monotonic()
            while client.get("/ready").status_code == 200:
                time.sleep(0.05)
            noticed_after = time.monotonic() - down_at
            count = queries(bouncer, url.database)
            statuses_while_down = flood_ready(client, 1.5)
            queried_while_down = queries(bouncer, url.database) - count
        bouncer.close()
    redis.close()

    assert len(statuses) > 200
    assert set(statuses) == {200}
    assert 1 <= pinged <= 2  # checked again after a second, and no more often
    assert 1 <= queried <= 2
    assert noticed_after < 1.5
    assert set(statuses_while_down) == {503}
    assert 1 <= queried_while_down <= 2  # a failure is kept for a second too


def test_swagger_ui_and_redoc_load_everything_from_the_app(client):
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            assert client.get(asset).status_code == 200, asset
        assert not re.search(r"https?://", html.replace("http://testserver", "")), page


def test_production_refuses_the_placeholder_secret():
    with pytest.raises(ValidationError, match="SECRET_KEY is a key published in this repository"):
        Settings(app_env="production", secret_key=PLACEHOLDER_SECRET, redis_url=REDIS_URL, _env_file=None)


def test_production_refuses_the_in_process_redis():
    with pytest.raises(ValidationError, match="REDIS_URL must name a real Redis"):
        Settings(app_env="production", secret_key=SECRET_KEY, redis_url=None, _env_file=None)


def test_a_short_secret_is_refused_everywhere():
    with pytest.raises(ValidationError, match="at least 32 bytes"):
        Settings(secret_key="too short", _env_file=None)


def test_a_threadpool_larger_than_the_pool_is_refused():
    with pytest.raises(ValidationError, match="THREADPOOL_SIZE must not exceed"):
        Settings(threadpool_size=30, db_pool_size=10, db_max_overflow=5, _env_file=None)


def test_production_logs_are_json_by_default():
    settings = Settings(app_env="production", secret_key=SECRET_KEY, redis_url=REDIS_URL, _env_file=None)
    assert settings.effective_log_format == "json"
    assert Settings(_env_file=None).effective_log_format == "text"
