"""DATABASE_URL in the forms people are handed, against the real PostgreSQL."""

import uuid
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from task_api.config import Settings
from task_api.users.models import User
from tests.conftest import PASSWORD, run_cli

pytestmark = pytest.mark.postgres_only
BARE_SCHEMES = ["postgresql://", "postgres://"]


def bare(url: str, scheme: str) -> str:
    assert url.startswith("postgresql+psycopg2://")
    return scheme + url.removeprefix("postgresql+psycopg2://")


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/app", "postgresql+psycopg2://u:p@db:5432/app"),
        ("postgres://u:p@db:5432/app", "postgresql+psycopg2://u:p@db:5432/app"),
        ("postgresql+psycopg2://u:p@db/app", "postgresql+psycopg2://u:p@db/app"),
        ("sqlite:///task_api.sqlite3", "sqlite:///task_api.sqlite3"),
    ],
)
def test_bare_postgres_urls_mean_psycopg2(given, used):
    assert Settings(database_url=given, _env_file=None).database_url == used


@pytest.mark.parametrize("scheme", BARE_SCHEMES)
def test_migrate_and_create_admin_accept_the_bare_forms(empty_database, scheme):
    url = bare(empty_database, scheme)

    migrated = run_cli(url, "migrate")
    created = run_cli(url, "create-admin", "root@example.com", ADMIN_PASSWORD=PASSWORD)

    assert migrated.returncode == 0, migrated.stderr
    assert created.returncode == 0, created.stderr
    engine = create_engine(empty_database)
    try:
        with engine.connect() as connection:
            assert {"users", "tasks", "alembic_version"} <= set(inspect(connection).get_table_names())
            assert connection.scalar(select(User.is_admin).where(User.email == "root@example.com")) is True
    finally:
        engine.dispose()


@pytest.fixture
def missing_database(database_url) -> Iterator[str]:
    """The URL of a database that does not exist yet; dropped afterwards if a test made it."""
    url = make_url(database_url).set(database=f"task_api_new_{uuid.uuid4().hex[:12]}")
    yield url.render_as_string(hide_password=False)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    server.dispose()


def test_migrate_creates_a_missing_database_when_asked(missing_database):
    refused = run_cli(bare(missing_database, "postgresql://"), "migrate")
    created = run_cli(bare(missing_database, "postgresql://"), "migrate", "--create-database")
    again = run_cli(bare(missing_database, "postgresql://"), "migrate", "--create-database")

    assert refused.returncode != 0
    assert "does not exist" in refused.stderr
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created the database task_api_new_")
    assert (again.returncode, again.stdout) == (0, "")
    engine = create_engine(missing_database)
    try:
        with engine.connect() as connection:
            assert "tasks" in inspect(connection).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("scheme", BARE_SCHEMES)
def test_the_production_server_serves_on_the_bare_forms(start_server, database_url, db, scheme):
    server = start_server(DATABASE_URL=bare(database_url, scheme))

    ready = httpx2.get(f"{server.url}/ready", timeout=5)
    registered = httpx2.post(
        f"{server.url}/register", json={"email": "ann@example.com", "password": PASSWORD}, timeout=5
    )

    assert ready.status_code == 200, server.log.read_text()
    assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}
    assert registered.status_code == 201, registered.text
    assert db.scalar(select(User.email)) == "ann@example.com"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1/postgres", "driver is not installed"),
        ("mysql://root@127.0.0.1/test", "driver is not installed"),
        ("cockroach://root@127.0.0.1/test", "does not know"),
        ("127.0.0.1:5432/task_api", "is not a database URL"),
    ],
)
def test_an_unusable_url_is_one_line_naming_the_variable(url, says):
    result = run_cli(url, "migrate")

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: DATABASE_URL: ")
    assert says in result.stderr


def test_the_production_server_refuses_an_unusable_url_in_one_line(start_server):
    server = start_server(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1/postgres")

    assert server.process.wait(timeout=30) != 0
    output = server.log.read_text().strip()
    assert output.startswith("error: DATABASE_URL: ")
    assert "Traceback" not in output
