"""Fixtures: a throwaway database migrated by Alembic, a real Redis, and clients.

TEST_DATABASE_URL names a PostgreSQL server database to connect to (default: the local
server's `postgres` database); the suite creates its own database beside it and drops it
at the end. `TEST_DATABASE_URL=sqlite://` runs the suite on a throwaway SQLite file
instead, skipping the tests marked `postgres_only`. TEST_PGBOUNCER=1 puts a PgBouncer in
transaction mode between the app and that database (migrations and fixtures still connect
directly). TEST_REDIS_URL names the Redis database the suite owns and flushes (default db 15).
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from task_api.app import create_app
from task_api.config import Settings
from task_api.db import Base
from tests import factories

SERVER_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SECRET_KEY = "test-secret-key-that-is-long-enough-for-hs256"
PASSWORD = "correct horse battery"
ALEMBIC_INI = os.path.join(os.path.dirname(__file__), "..", "migrations", "alembic.ini")


def alembic_config(database_url: str) -> Config:
    config = Config(ALEMBIC_INI)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


ON_SQLITE = SERVER_URL.startswith("sqlite")
THROUGH_PGBOUNCER = os.environ.get("TEST_PGBOUNCER", "") not in {"", "0"}
PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if ON_SQLITE:
        skip = pytest.mark.skip(reason="checks PostgreSQL itself")
        for item in items:
            if "postgres_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ON_SQLITE:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'task_api.sqlite3'}"
        command.upgrade(alembic_config(url), "head")
        yield url
        return
    server = make_url(SERVER_URL)
    name = f"task_api_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        command.upgrade(alembic_config(url), "head")
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """Another database on the test server, with nothing in it, dropped afterwards."""
    url = make_url(database_url)
    name = f"task_api_empty_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def app_database_url(database_url: str) -> Iterator[str]:
    """Where the app connects: the test database, or a PgBouncer in front of it."""
    if not THROUGH_PGBOUNCER:
        yield database_url
        return
    assert not ON_SQLITE, "TEST_PGBOUNCER needs PostgreSQL"
    url = make_url(database_url)
    with running_pgbouncer(url.host or "127.0.0.1", url.port or 5432) as port:
        yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


@contextmanager
def running_pgbouncer(host: str, port: int, **options: str) -> Iterator[int]:
    """A PgBouncer in transaction mode on a free loopback port, forwarding every database to
    host:port; yields its port."""
    if PGBOUNCER is None:
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer)")
    listen = free_port()
    # PgBouncer refuses to run as root; as root it runs as postgres, which must reach its files.
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o777)
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(listen),
            "unix_socket_dir": "",
            "auth_type": "any",  # trust, as the test server does; the user comes from [databases]
            "pool_mode": "transaction",
            "max_client_conn": "500",
            "default_pool_size": "20",
            "query_wait_timeout": "5",
            "logfile": str(directory / "pgbouncer.log"),
            "pidfile": str(directory / "pgbouncer.pid"),
            **options,
        }
        lines = ["[databases]", f"* = host={host} port={port} user=postgres", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        (directory / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        as_postgres = ["-u", "postgres"] if os.geteuid() == 0 else []
        bouncer = subprocess.Popen([PGBOUNCER, *as_postgres, str(directory / "pgbouncer.ini")])
        try:
            wait_for_port(listen, bouncer)
            yield listen
        finally:
            bouncer.terminate()
            bouncer.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="session")
def settings(app_database_url: str) -> Settings:
    return Settings(
        app_env="test",
        database_url=app_database_url,
        redis_url=REDIS_URL,
        secret_key=SECRET_KEY,
        bcrypt_rounds=4,
        _env_file=None,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    yield application
    application.state.runtime.close()


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., FastAPI]]:
    """Build another app on the same database and Redis, with some settings changed."""
    built: list[FastAPI] = []

    def build(**overrides: Any) -> FastAPI:
        application = create_app(settings.model_copy(update=overrides))
        built.append(application)
        return application

    yield build
    for application in built:
        application.state.runtime.close()


@pytest.fixture
def redis() -> Iterator[Redis]:
    client = Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def db(app: FastAPI, redis: Redis) -> Iterator[Session]:
    """A session on the test database; every table is emptied after the test."""
    engine = app.state.runtime.engine
    with Session(engine, expire_on_commit=False) as session:
        factories.bind(session)
        yield session
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def client(app: FastAPI, db: Session) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def owner(db: Session) -> Any:
    """A user, for tests of what one user does with their own things."""
    return factories.UserFactory()


@pytest.fixture
def headers(owner: Any, auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers(owner)


def login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = client.post("/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return response.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auth_headers(client: TestClient) -> Callable[..., dict[str, str]]:
    """Log a user in and return the Authorization header for their access token."""

    def headers_for(user: Any, password: str = PASSWORD) -> dict[str, str]:
        return bearer(login(client, user.email, password)["access_token"])

    return headers_for


ROOT = Path(__file__).resolve().parent.parent
GUNICORN = shutil.which("gunicorn", path=str(Path(sys.executable).parent))


def cli_environment(database_url: str, **env: str) -> dict[str, str]:
    """The environment an operator runs `python -m task_api` in; ADMIN_PASSWORD only if given."""
    inherited = {key: value for key, value in os.environ.items() if key != "ADMIN_PASSWORD"}
    return {**inherited, "DATABASE_URL": database_url, "SECRET_KEY": SECRET_KEY, "BCRYPT_ROUNDS": "4", **env}


def run_cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m task_api ARGS` in a process of its own, with no terminal to prompt at."""
    return subprocess.run(
        [sys.executable, "-m", "task_api", *args],
        env=cli_environment(database_url, **env),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        start_new_session=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen[bytes], url: str, metrics_url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.metrics_url = metrics_url
        self.log = log

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def start_server(app_database_url, redis, tmp_path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(**env: str) -> Server:
        port, metrics_port = free_port(), free_port()
        log = tmp_path / f"server-{port}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": app_database_url,
            "REDIS_URL": REDIS_URL,
            "SECRET_KEY": SECRET_KEY,
            "BCRYPT_ROUNDS": "4",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "WEB_CONCURRENCY": "1",
            **env,
        }
        with log.open("wb") as output:
            process = subprocess.Popen(
                [GUNICORN, "-c", "gunicorn.conf.py", "task_api.main:app"],
                cwd=ROOT,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        server = Server(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics", log)
        servers.append(server)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                httpx2.get(f"{server.url}/health", timeout=1)
                return server
            except httpx2.TransportError:
                time.sleep(0.1)
        return server

    yield start
    for server in servers:
        server.process.terminate()
        server.process.wait(timeout=30)


REDIS_SERVER = shutil.which("redis-server")


def start_redis(port: int, *options: str) -> subprocess.Popen[bytes]:
    assert REDIS_SERVER is not None
    server = subprocess.Popen(
        # DEBUG SLEEP (allowed from loopback) plays a Redis slower than its timeout
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-debug-command",
            "local",
            *options,
        ],
        stdout=subprocess.DEVNULL,
    )
    wait_for_port(port, server)
    return server


@pytest.fixture
def own_redis() -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    servers = [start_redis(port)]
    yield port, servers
    for server in servers:
        server.terminate()
        server.wait(timeout=10)
