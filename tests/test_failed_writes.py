"""A write that fails changes nothing: tokens are revoked only once the change that revokes
them has committed, and the last admin stays one."""

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text

from task_api.auth import service as auth_service
from task_api.errors import NotFound, Unauthorized
from task_api.models import User
from task_api.users import service as users_service
from tests.conftest import PASSWORD, bearer, login
from tests.factories import AdminFactory, UserFactory
from tests.test_users import NEW_PASSWORD

UserTrigger = Callable[..., None]


@pytest.fixture
def users_trigger(app, db) -> Iterator[UserTrigger]:
    """Put a trigger on UPDATE and DELETE of `users` rows, running a PL/pgSQL statement
    (for the row of one user only, if given); dropped after the test."""
    engine = app.state.runtime.engine

    def install(statement: str, user: User | None = None) -> None:
        only = "" if user is None else f"WHEN (OLD.id = {int(user.id)})"
        with engine.begin() as connection:
            connection.execute(
                text(
                    "CREATE FUNCTION test_users_trigger() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$$ BEGIN {statement}; RETURN COALESCE(NEW, OLD); END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER test_users_trigger BEFORE UPDATE OR DELETE ON users FOR EACH ROW "
                    f"{only} EXECUTE FUNCTION test_users_trigger()"
                )
            )

    yield install
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER IF EXISTS test_users_trigger ON users"))
        connection.execute(text("DROP FUNCTION IF EXISTS test_users_trigger()"))


@pytest.fixture
def fail_writes_to(users_trigger: UserTrigger) -> Callable[[User], None]:
    """Make every UPDATE or DELETE of one user's row fail as a lost transaction would (SQLSTATE
    40001), so the commit that should carry it never happens."""

    def fail_for(user: User) -> None:
        users_trigger("RAISE EXCEPTION 'injected failure' USING ERRCODE = 'serialization_failure'", user)

    return fail_for


def assert_still_logged_in(client, user, tokens, password=PASSWORD):
    assert client.get("/users/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert client.post("/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 200
    assert client.post("/login", json={"email": user.email, "password": password}).status_code == 200


def test_a_password_change_refused_for_a_taken_email_keeps_password_and_tokens(client, db):
    UserFactory(email="taken@example.com")
    user = UserFactory()
    tokens = login(client, user.email)

    response = client.patch(
        "/users/me",
        headers=bearer(tokens["access_token"]),
        json={"email": "taken@example.com", "password": NEW_PASSWORD, "current_password": PASSWORD},
    )

    assert response.status_code == 409
    assert_still_logged_in(client, user, tokens)
    assert client.post("/login", json={"email": user.email, "password": NEW_PASSWORD}).status_code == 401


# Every request of a user's own that revokes their tokens, once it has committed.
REVOKING_REQUESTS = {
    "password-change": ("PATCH", "/users/me", {"password": NEW_PASSWORD, "current_password": PASSWORD}),
    "email-change": ("PATCH", "/users/me", {"email": "moved@example.com", "current_password": PASSWORD}),
    "delete-self": ("DELETE", "/users/me", None),
    "logout-all": ("POST", "/logout/all", None),
}


@pytest.mark.postgres_only
@pytest.mark.parametrize(("method", "path", "body"), REVOKING_REQUESTS.values(), ids=REVOKING_REQUESTS.keys())
def test_a_revoking_request_whose_commit_fails_revokes_nothing(client, db, fail_writes_to, method, path, body):
    user = UserFactory()
    tokens = login(client, user.email)
    fail_writes_to(user)

    response = client.request(method, path, headers=bearer(tokens["access_token"]), json=body)

    assert response.status_code == 503
    assert_still_logged_in(client, user, tokens)
    db.refresh(user)
    assert user.email != "moved@example.com"


@pytest.mark.postgres_only
def test_an_admin_delete_whose_commit_fails_revokes_nothing(client, db, fail_writes_to):
    admin, user = AdminFactory(), UserFactory()
    admin_token = login(client, admin.email)["access_token"]
    tokens = login(client, user.email)
    fail_writes_to(user)

    response = client.delete(f"/users/{user.id}", headers=bearer(admin_token))

    assert response.status_code == 503
    assert_still_logged_in(client, user, tokens)


def test_the_last_admin_can_neither_demote_nor_delete_itself(client, db):
    admin = AdminFactory()
    headers = bearer(login(client, admin.email)["access_token"])

    demoted = client.put(f"/users/{admin.id}", headers=headers, json={"email": admin.email, "is_admin": False})
    deleted_me = client.delete("/users/me", headers=headers)
    deleted_by_id = client.delete(f"/users/{admin.id}", headers=headers)

    for response in (demoted, deleted_me, deleted_by_id):
        assert response.status_code == 409, response.text
        assert isinstance(response.json()["detail"], str)
    db.refresh(admin)
    assert admin.is_admin
    assert client.get("/users", headers=headers).status_code == 200


def test_an_admin_may_go_once_another_remains(client, db):
    first, second = AdminFactory(), AdminFactory()
    first_headers = bearer(login(client, first.email)["access_token"])

    assert client.delete(f"/users/{second.id}", headers=first_headers).status_code == 204
    assert client.delete("/users/me", headers=first_headers).status_code == 409

    third = AdminFactory()
    demoted = client.put(f"/users/{first.id}", headers=first_headers, json={"email": first.email, "is_admin": False})
    assert demoted.status_code == 200, demoted.text
    db.refresh(third)
    assert third.is_admin


@pytest.mark.postgres_only
def test_two_admins_removing_each_other_at_once_leave_one(client, db, users_trigger):
    first, second = AdminFactory(), AdminFactory()
    users_trigger("PERFORM pg_sleep(0.5)")  # each demotion takes long enough for the other to begin
    headers = {admin.id: bearer(login(client, admin.email)["access_token"]) for admin in (first, second)}
    start = threading.Barrier(2)
    statuses: dict[int, int] = {}

    def remove(actor: User, target: User) -> None:
        start.wait()
        body = {"email": target.email, "is_admin": False}
        statuses[actor.id] = client.put(f"/users/{target.id}", headers=headers[actor.id], json=body).status_code

    threads = [threading.Thread(target=remove, args=pair) for pair in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winner, loser = sorted(statuses.values())
    assert winner == 200
    assert loser in {403, 409}  # already demoted when its request began, or found the last admin
    db.expire_all()
    assert db.query(User).filter(User.is_admin).count() == 1


RACED_CHANGES = {  # what each answers: the account is gone (404), or the caller's token is (401)
    "rename": (
        lambda session, tokens, user: users_service.update_user(session, tokens, user, {"name": "N"}, user, 4),
        NotFound,
    ),
    "logout-all": (auth_service.logout_everywhere, Unauthorized),
}


@pytest.mark.parametrize(("change", "answer"), RACED_CHANGES.values(), ids=RACED_CHANGES.keys())
def test_a_change_to_an_account_deleted_meanwhile_is_a_404_or_401_not_a_500(app, db, change, answer):
    user = UserFactory()
    runtime = app.state.runtime
    with runtime.session_factory() as session:
        loaded = session.get(User, user.id)  # as the request's dependency loaded it
        session.commit()
        db.delete(user)  # another request deletes the account meanwhile
        db.commit()

        with pytest.raises(answer):
            change(session, runtime.tokens, loaded)
