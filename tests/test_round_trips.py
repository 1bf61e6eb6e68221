"""The Redis commands and SQL statements each kind of request costs, counted on the real
servers (README, "Round trips"). Redis counts the commands a script runs as well: a read's one
round trip is one EVALSHA, whose script runs EXISTS, INCRBY and PTTL."""

from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from redis import Redis
from sqlalchemy import event

from tests.conftest import PASSWORD, bearer
from tests.factories import TaskFactory, UserFactory

BUDGET = {"evalsha": 1, "exists": 1, "incrby": 1, "pttl": 1}  # the shared budget and the token check
ADDRESS_BUDGET = {"evalsha": 1, "incrby": 1, "pttl": 1}  # a budget with no token to check


class Counted:
    def __init__(self, client: TestClient, redis: Redis, engine: object) -> None:
        self.client = client
        self.redis = redis
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        self.statements.append(statement)

    def _commands(self) -> Counter[str]:
        stats = self.redis.info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})

    def __call__(self, request: Callable[[TestClient], Response]) -> tuple[Response, dict[str, int], int]:
        """The response, the Redis commands and the SQL statements of one request."""
        before = self._commands()
        self.statements.clear()
        response = request(self.client)
        commands = self._commands() - before
        commands.pop("info", None)
        return response, dict(commands), len(self.statements)


@pytest.fixture
def counted(make_app, db, own_redis) -> Iterator[Counted]:
    port, _ = own_redis
    app = make_app(redis_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(app) as client:
        redis = Redis(port=port, decode_responses=True)
        yield Counted(client, redis, app.state.runtime.engine)
        redis.close()


def test_an_authenticated_read_costs_one_redis_and_one_postgresql_round_trip(counted):
    user = UserFactory()
    task = TaskFactory(owner=user)
    headers = bearer(
        counted.client.post("/login", json={"email": user.email, "password": PASSWORD}).json()["access_token"]
    )
    counted(lambda client: client.get(f"/tasks/{task.id}", headers=headers))  # the pools' connections are open now

    read, read_redis, read_sql = counted(lambda client: client.get(f"/tasks/{task.id}", headers=headers))
    page, page_redis, page_sql = counted(lambda client: client.get("/tasks?status=new", headers=headers))
    edit, edit_redis, edit_sql = counted(
        lambda client: client.patch(f"/tasks/{task.id}", json={"title": "changed"}, headers=headers)
    )
    new, new_redis, new_sql = counted(lambda client: client.post("/tasks", json={"title": "new"}, headers=headers))

    assert (read.status_code, read_redis, read_sql) == (200, BUDGET, 1)
    assert (page.status_code, page_redis, page_sql) == (200, BUDGET, 1)
    assert (edit.status_code, edit_redis, edit_sql) == (200, BUDGET, 1)
    assert (new.status_code, new_redis, new_sql) == (201, BUDGET, 1)


def test_a_login_costs_three_redis_round_trips_and_one_statement(counted):
    user = UserFactory()
    counted(lambda client: client.post("/login", json={"email": user.email, "password": PASSWORD}))

    login, redis, sql = counted(lambda client: client.post("/login", json={"email": user.email, "password": PASSWORD}))

    assert login.status_code == 200
    assert redis["evalsha"] == 3  # the shared budget, the login budget, the new token family
    assert sql == 1


def test_an_anonymous_request_spends_its_address_budget_in_one_round_trip(counted):
    counted(lambda client: client.get("/tasks"))

    response, redis, sql = counted(lambda client: client.get("/tasks"))

    assert (response.status_code, redis, sql) == (401, ADDRESS_BUDGET, 0)


def test_a_users_own_edits_cost_a_statement_each_beyond_loading_the_user(counted):
    """Only a change that could leave no admin takes a transaction (BEGIN, a lock, COMMIT)."""
    user = UserFactory()
    headers = bearer(
        counted.client.post("/login", json={"email": user.email, "password": PASSWORD}).json()["access_token"]
    )
    counted(lambda client: client.get("/users/me", headers=headers))

    renamed, _, rename_sql = counted(lambda client: client.patch("/users/me", json={"name": "N"}, headers=headers))
    deleted, _, delete_sql = counted(lambda client: client.delete("/users/me", headers=headers))

    assert (renamed.status_code, rename_sql) == (200, 2)  # the user's row, the UPDATE
    assert (deleted.status_code, delete_sql) == (204, 2)  # the user's row, the DELETE
