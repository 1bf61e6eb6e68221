"""No server signs tokens with a key an attacker may know, and production cookies are Secure."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from task_api.config import PLACEHOLDER_SECRET, Settings
from tests.conftest import GUNICORN, PASSWORD, REDIS_URL, ROOT, SECRET_KEY, free_port
from tests.factories import UserFactory
from tests.test_auth import refresh_cookies

CHECK_KEY = "docker-check-only-secret-key-not-for-use-anywhere"  # the Makefile's
WEAK_KEYS = {
    "published": PLACEHOLDER_SECRET,
    "makefile": CHECK_KEY,
    "repeated": "a" * 48,
}


def clean_environment(**env: str) -> dict[str, str]:
    """This process's environment without the app's settings, plus `env`."""
    kept = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    return {**kept, "PYTHONPATH": str(ROOT), **env}


def run_until_exit(command: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=clean_environment(**env), capture_output=True, text=True, timeout=30, check=False
    )


def assert_refused_in_one_line(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "SECRET_KEY" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: SECRET_KEY")
    assert "secrets.token_urlsafe" in lines[0]  # says how to make one
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("key", WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_the_production_server_refuses_a_weak_key(key, tmp_path):
    result = run_until_exit(
        [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "task_api.main:app"],
        ROOT,
        SECRET_KEY=key,
        REDIS_URL=REDIS_URL,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        PORT=str(free_port()),
        METRICS_PORT="0",
    )

    assert_refused_in_one_line(result)


def test_the_production_server_refuses_to_start_without_a_key(tmp_path):
    result = run_until_exit(
        [str(GUNICORN), "-c", str(ROOT / "gunicorn.conf.py"), "task_api.main:app"],
        ROOT,
        REDIS_URL=REDIS_URL,
        PORT=str(free_port()),
        METRICS_PORT="0",
    )

    assert_refused_in_one_line(result)


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])  # noqa: S104  (what a careless operator would type)
def test_the_embedded_default_refuses_the_development_key_off_loopback(host, tmp_path):
    result = run_until_exit(
        [sys.executable, "-m", "task_api", "serve", "--host", host, "--port", str(free_port())], tmp_path
    )

    assert_refused_in_one_line(result)


def test_serve_on_loopback_with_a_real_database_refuses_the_development_key(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        pytest.skip("needs a database that is not the embedded default's")
    result = run_until_exit(
        [sys.executable, "-m", "task_api", "serve", "--port", str(free_port())], tmp_path, DATABASE_URL=database_url
    )

    assert_refused_in_one_line(result)


def test_the_embedded_default_on_loopback_keeps_the_development_key_and_bounds_headers(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "task_api", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                assert httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
            except httpx2.TransportError:
                time.sleep(0.1)
                continue
            oversized = httpx2.get(f"http://127.0.0.1:{port}/health", headers={"X-Pad": "a" * 100_000}, timeout=5)
            assert oversized.status_code == 431
            return
        pytest.fail(f"the embedded default did not start (exit code {server.poll()})")
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("key", WEAK_KEYS.values(), ids=WEAK_KEYS.keys())
def test_production_settings_refuse_a_weak_key(key):
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(app_env="production", secret_key=key, redis_url=REDIS_URL, _env_file=None)


def test_a_strong_key_is_accepted_in_production():
    assert Settings(app_env="production", secret_key=SECRET_KEY, redis_url=REDIS_URL, _env_file=None)


@pytest.mark.parametrize(
    ("overrides", "secure"),
    [
        pytest.param({"app_env": "production"}, True, id="production"),
        pytest.param({"app_env": "production", "cookie_secure": False}, False, id="production-opted-out"),
        pytest.param({"app_env": "development"}, False, id="development"),
        pytest.param({"app_env": "development", "cookie_secure": True}, True, id="development-opted-in"),
    ],
)
def test_the_refresh_cookie_is_secure_in_production(make_app, db, overrides, secure):
    user = UserFactory()
    with TestClient(make_app(**overrides)) as client:
        response = client.post("/login", json={"email": user.email, "password": PASSWORD})

    assert response.status_code == 200
    for _, attributes in refresh_cookies(response).values():
        assert ("secure" in attributes) is secure
