"""Every password check spends the per-address AUTH_RATE_LIMIT budget, and changing one's own
e-mail or password is confirmed with the current password."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.conftest import PASSWORD, bearer, login
from tests.factories import AdminFactory, UserFactory
from tests.test_users import NEW_PASSWORD

AUTH_LIMIT = 10


def wrong_guess(client, headers):
    body = {"password": NEW_PASSWORD, "current_password": "not my password"}
    return client.patch("/users/me", headers=headers, json=body)


def test_current_password_guesses_spend_the_auth_budget(make_app, db):
    user = UserFactory()
    with TestClient(make_app()) as client:
        headers = bearer(login(client, user.email)["access_token"])  # one of the ten
        statuses = [wrong_guess(client, headers).status_code for _ in range(AUTH_LIMIT)]
        other_user_login = client.post("/login", json={"email": UserFactory().email, "password": PASSWORD})

    assert statuses == [422] * (AUTH_LIMIT - 1) + [429]
    assert other_user_login.status_code == 429  # one budget per address, whichever door


def test_a_password_guess_refused_for_its_budget_does_no_database_work(make_app, db):
    user = UserFactory()
    with TestClient(make_app(auth_rate_limit="1/minute")) as client:
        headers = bearer(login(client, user.email)["access_token"])
        engine = client.app.state.runtime.engine
        statements: list[str] = []

        def record(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            response = wrong_guess(client, headers)
        finally:
            event.remove(engine, "before_cursor_execute", record)

    assert response.status_code == 429
    assert response.headers["Retry-After"]
    assert statements == []


def test_requests_without_a_password_check_leave_the_auth_budget_alone(make_app, db):
    user = UserFactory()
    with TestClient(make_app(auth_rate_limit="2/minute")) as client:
        headers = bearer(login(client, user.email)["access_token"])
        renames = [client.patch("/users/me", headers=headers, json={"name": f"N{i}"}).status_code for i in range(5)]
        second_login = client.post("/login", json={"email": user.email, "password": PASSWORD})

    assert renames == [200] * 5
    assert second_login.status_code == 200


@pytest.mark.parametrize(
    ("current", "status"),
    [
        pytest.param(None, 422, id="missing"),
        pytest.param("not my password", 422, id="wrong"),
        pytest.param(PASSWORD, 200, id="right"),
    ],
)
@pytest.mark.parametrize("verb", ["patch", "put"])
def test_changing_ones_own_email_needs_the_current_password(client, db, verb, current, status):
    user = UserFactory()
    headers = bearer(login(client, user.email)["access_token"])
    body = {"email": "moved@example.com"} | ({} if current is None else {"current_password": current})
    path = "/users/me" if verb == "patch" else f"/users/{user.id}"

    response = client.request(verb.upper(), path, headers=headers, json=body)

    assert response.status_code == status, response.text
    if status == 422:
        assert response.json()["detail"][0]["loc"] == ["body", "current_password"]
    db.refresh(user)
    assert (user.email == "moved@example.com") is (status == 200)


def test_resending_ones_own_address_needs_no_password(client, db):
    user = UserFactory()
    headers = bearer(login(client, user.email)["access_token"])

    patched = client.patch("/users/me", headers=headers, json={"email": user.email.upper(), "name": "Same"})
    put = client.put(f"/users/{user.id}", headers=headers, json={"email": user.email})

    assert patched.status_code == 200, patched.text
    assert put.status_code == 200, put.text
    assert client.get("/users/me", headers=headers).status_code == 200  # nothing changed: nothing revoked


def test_an_email_change_ends_every_login_of_the_account(client, db):
    user = UserFactory()
    other_device = login(client, user.email)
    headers = bearer(login(client, user.email)["access_token"])

    response = client.patch(
        "/users/me", headers=headers, json={"email": "moved@example.com", "current_password": PASSWORD}
    )

    assert response.status_code == 200
    assert client.get("/users/me", headers=bearer(other_device["access_token"])).status_code == 401
    assert client.post("/refresh", json={"refresh_token": other_device["refresh_token"]}).status_code == 401
    assert client.post("/login", json={"email": "moved@example.com", "password": PASSWORD}).status_code == 200


def test_an_admin_changes_someone_elses_email_and_password_without_theirs(client, db):
    admin, user = AdminFactory(), UserFactory()
    headers = bearer(login(client, admin.email)["access_token"])

    response = client.put(
        f"/users/{user.id}", headers=headers, json={"email": "renamed@example.com", "password": NEW_PASSWORD}
    )

    assert response.status_code == 200, response.text
    assert client.post("/login", json={"email": "renamed@example.com", "password": NEW_PASSWORD}).status_code == 200
