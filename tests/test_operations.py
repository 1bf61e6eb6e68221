import re

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from task_api.config import PLACEHOLDER_SECRET, Settings
from tests.conftest import REDIS_URL, SECRET_KEY

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
