"""The one gate every limited request passes: routes cannot skip it, slowapi decides, and the
slowapi internals the adapter relies on are the ones pinned."""

from importlib.metadata import version

import httpx2
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from slowapi import Limiter

from task_api.auth.deps import Caller
from task_api.gate import require_gate
from tests.conftest import Server
from tests.factories import UserFactory


def test_a_limited_route_outside_the_gate_stops_the_app_from_starting(make_app):
    app = make_app()
    forgotten = APIRouter()

    @forgotten.get("/forgotten")
    def anyone_may_call() -> dict[str, str]:
        return {}

    app.include_router(forgotten)

    with pytest.raises(RuntimeError, match="/forgotten is not gated"):
        require_gate(app)


def test_a_route_that_needs_the_caller_is_gated_even_if_its_router_forgot(make_app, db):
    app = make_app(rate_limit="2/minute")
    forgotten = APIRouter()

    @forgotten.get("/whoami")
    def whoami(caller: Caller) -> dict[str, str]:
        return {"sub": caller.sub}

    app.include_router(forgotten)
    require_gate(app)
    with TestClient(app) as client:
        statuses = [client.get("/whoami").status_code for _ in range(3)]
        counted = client.get("/whoami")

    assert statuses == [401, 401, 429]
    assert counted.headers["X-RateLimit-Remaining"] == "0"


RATELIMIT_VARIABLES = {
    "RATELIMIT_ENABLED": "false",
    "RATELIMIT_SWALLOW_ERRORS": "true",
    "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": "true",
    "RATELIMIT_KEY_PREFIX": "elsewhere",
    "RATELIMIT_HEADERS_ENABLED": "true",
}


@pytest.mark.parametrize(("name", "value"), RATELIMIT_VARIABLES.items(), ids=RATELIMIT_VARIABLES.keys())
def test_no_slowapi_variable_can_turn_the_limits_off_or_open(make_app, monkeypatch, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(ValueError, match="RATELIMIT_"):
        make_app()


def test_the_slowapi_internals_the_adapter_relies_on():
    """task_api/ratelimit.py's docstring lists these; a new slowapi or limits must be read again."""
    assert version("slowapi") == "0.1.10"
    assert version("limits") == "5.8.0"
    limiter = Limiter(key_func=lambda: "key", storage_uri="memory://")
    for attribute in ("_swallow_errors", "_in_memory_fallback_enabled", "_key_prefix", "_headers_enabled"):
        assert hasattr(limiter, attribute), attribute
    checked = limiter.shared_limit("1/minute", scope="pinned")(_a_check)
    assert "_rate_limiting_complete" in checked.__code__.co_names  # the mark cleared before each check


def _a_check(request) -> None:
    """A function for slowapi to hang a limit on."""


def test_a_request_spending_two_budgets_counts_in_both(make_app, db):
    """slowapi skips a request's later checks once one has run, unless the mark is cleared."""
    user = UserFactory()
    with TestClient(make_app(rate_limit="5/minute", auth_rate_limit="3/minute")) as client:
        logins = [client.post("/login", json={"email": user.email, "password": "wrong password"}) for _ in range(2)]
        after = client.get("/tasks")

    assert [response.headers["X-RateLimit-Remaining"] for response in logins] == ["2", "1"]  # auth: the tighter
    assert after.headers["X-RateLimit-Remaining"] == "2"  # all: five, less the two logins and this


def test_no_proxy_is_trusted_unless_named(start_server, monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    server: Server = start_server(RATE_LIMIT="2/minute")

    statuses = [
        httpx2.get(f"{server.url}/tasks", headers={"X-Forwarded-For": f"198.51.100.{index}"}).status_code
        for index in range(3)
    ]

    assert statuses == [401, 401, 429]  # a same-host process cannot choose its budget
