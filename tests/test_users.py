import json
from datetime import datetime

import pytest
from sqlalchemy import func, select

from task_api.models import Task, User
from tests.conftest import PASSWORD, bearer, login
from tests.factories import AdminFactory, TaskFactory, UserFactory

USER_FIELDS = {"id", "email", "name", "is_admin", "created_at"}
NEW_PASSWORD = "a brand new passphrase"


def assert_user(body, user=None, **expected):
    assert set(body) == USER_FIELDS
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    if user is not None:
        assert body["id"] == user.id
    for field, value in expected.items():
        assert body[field] == value


def assert_unauthorized(response):
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


def assert_forbidden(response):
    assert response.status_code == 403, response.text
    assert isinstance(response.json()["detail"], str)


def fresh(db, user):
    user_id = user.id
    db.expire_all()
    return db.get(User, user_id)


def task_count(db, owner_id):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Task).where(Task.owner_id == owner_id))


def test_read_me(client, auth_headers):
    user = UserFactory(name="Alice")

    response = client.get("/users/me", headers=auth_headers(user))

    assert response.status_code == 200
    assert_user(response.json(), user, email=user.email, name="Alice", is_admin=False)


def test_read_me_needs_a_token(client):
    assert_unauthorized(client.get("/users/me"))


def test_patch_me_name_and_email(client, db, auth_headers):
    user = UserFactory(name="Old")

    response = client.patch(
        "/users/me",
        headers=auth_headers(user),
        json={"name": "New", "email": "New@Example.com", "current_password": PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert_user(response.json(), user, name="New", email="new@example.com")
    stored = fresh(db, user)
    assert (stored.name, stored.email) == ("New", "new@example.com")


def test_patch_me_changes_only_sent_fields(client, db, auth_headers):
    user = UserFactory(name="Kept")

    response = client.patch(
        "/users/me", headers=auth_headers(user), json={"email": "moved@example.com", "current_password": PASSWORD}
    )

    assert response.status_code == 200, response.text
    assert_user(response.json(), user, name="Kept", email="moved@example.com")


def test_patch_me_name_to_null(client, db, auth_headers):
    user = UserFactory(name="Gone")

    response = client.patch("/users/me", headers=auth_headers(user), json={"name": None})

    assert response.status_code == 200, response.text
    assert response.json()["name"] is None
    assert fresh(db, user).name is None


def test_patch_me_email_taken(client, db, auth_headers):
    UserFactory(email="taken@example.com")
    user = UserFactory()

    response = client.patch(
        "/users/me", headers=auth_headers(user), json={"email": "TAKEN@example.com", "current_password": PASSWORD}
    )

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)
    assert fresh(db, user).email == user.email


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"is_admin": True}, id="is-admin"),
        pytest.param({"id": 999}, id="id"),
        pytest.param({"token_version": 5}, id="token-version"),
        pytest.param({"email": "not-an-email"}, id="bad-email"),
        pytest.param({"email": None}, id="null-email"),
        pytest.param({"name": ""}, id="empty-name"),
    ],
)
def test_patch_me_rejects_invalid_body(client, db, auth_headers, body):
    user = UserFactory()

    response = client.patch("/users/me", headers=auth_headers(user), json=body)

    assert response.status_code == 422, response.text
    stored = fresh(db, user)
    assert (stored.email, stored.is_admin, stored.token_version) == (user.email, False, 0)


@pytest.mark.parametrize("field", ["email", "name"])
def test_patch_me_with_unencodable_text_is_422(client, db, auth_headers, field):
    user = UserFactory()
    value = "\ud800x@example.com" if field == "email" else "\ud800x"

    response = client.patch(
        "/users/me",
        headers={**auth_headers(user), "Content-Type": "application/json"},
        content=json.dumps({field: value}),
    )

    assert response.status_code == 422, response.text
    assert fresh(db, user).email == user.email


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"password": NEW_PASSWORD}, id="missing-current"),
        pytest.param({"password": NEW_PASSWORD, "current_password": "wrong password"}, id="wrong-current"),
        pytest.param({"password": "short", "current_password": PASSWORD}, id="new-too-short"),
        pytest.param({"password": "a" * 73, "current_password": PASSWORD}, id="new-too-long"),
    ],
)
def test_password_change_refused(client, db, body):
    user = UserFactory()
    tokens = login(client, user.email)

    response = client.patch("/users/me", headers=bearer(tokens["access_token"]), json=body)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert client.get("/users/me", headers=bearer(tokens["access_token"])).status_code == 200
    assert login(client, user.email)["token_type"] == "bearer"
    assert fresh(db, user).token_version == 0


def test_password_change_revokes_every_token(client, db):
    user = UserFactory()
    other_login = login(client, user.email)
    tokens = login(client, user.email)
    bystander = login(client, UserFactory().email)

    response = client.patch(
        "/users/me",
        headers=bearer(tokens["access_token"]),
        json={"password": NEW_PASSWORD, "current_password": PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert_user(response.json(), user)
    for old in (tokens, other_login):
        assert_unauthorized(client.get("/users/me", headers=bearer(old["access_token"])))
        assert_unauthorized(client.post("/refresh", json={"refresh_token": old["refresh_token"]}))
    assert client.post("/login", json={"email": user.email, "password": PASSWORD}).status_code == 401
    new_tokens = login(client, user.email, NEW_PASSWORD)
    assert client.get("/users/me", headers=bearer(new_tokens["access_token"])).status_code == 200
    assert client.get("/users/me", headers=bearer(bystander["access_token"])).status_code == 200


def test_delete_me(client, db, auth_headers):
    user = UserFactory()
    user_id = user.id
    TaskFactory.create_batch(2, owner=user)
    other_owner_id = TaskFactory().owner_id
    headers = auth_headers(user)

    response = client.delete("/users/me", headers=headers)

    assert response.status_code == 204
    assert response.content == b""
    assert fresh(db, user) is None
    assert task_count(db, user_id) == 0
    assert task_count(db, other_owner_id) == 1
    assert_unauthorized(client.get("/users/me", headers=headers))


def test_deleted_user_refresh_token_is_dead(client):
    tokens = login(client, UserFactory().email)

    assert client.delete("/users/me", headers=bearer(tokens["access_token"])).status_code == 204

    assert_unauthorized(client.post("/refresh", json={"refresh_token": tokens["refresh_token"]}))


def test_list_users_as_admin(client, auth_headers):
    admin = AdminFactory()
    users = UserFactory.create_batch(3)

    response = client.get("/users", headers=auth_headers(admin), params={"limit": 2, "offset": 1})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "total", "limit", "offset"}
    assert (body["total"], body["limit"], body["offset"]) == (4, 2, 1)
    assert [item["id"] for item in body["items"]] == [users[0].id, users[1].id]
    for item in body["items"]:
        assert_user(item)


def test_list_users_defaults(client, auth_headers):
    admin = AdminFactory()

    body = client.get("/users", headers=auth_headers(admin)).json()

    assert (body["total"], body["limit"], body["offset"]) == (1, 20, 0)
    assert_user(body["items"][0], admin, is_admin=True)


def test_list_users_forbidden_for_non_admin(client, auth_headers):
    assert_forbidden(client.get("/users", headers=auth_headers(UserFactory())))


def test_list_users_needs_a_token(client):
    assert_unauthorized(client.get("/users"))


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": -1}, {"offset": -1}, {"limit": "ten"}],
    ids=["limit-0", "limit-101", "limit-negative", "offset-negative", "limit-not-int"],
)
def test_list_users_rejects_bad_paging(client, auth_headers, params):
    response = client.get("/users", headers=auth_headers(AdminFactory()), params=params)

    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_admin_creates_admin(client, db, auth_headers):
    response = client.post(
        "/users",
        headers=auth_headers(AdminFactory()),
        json={"email": "Boss@Example.com", "password": PASSWORD, "name": "Boss", "is_admin": True},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert_user(body, email="boss@example.com", name="Boss", is_admin=True)
    assert response.headers["Location"] == f"/users/{body['id']}"
    db.expire_all()
    assert db.get(User, body["id"]).is_admin is True
    assert login(client, "boss@example.com")["token_type"] == "bearer"


def test_admin_creates_plain_user_by_default(client, auth_headers):
    response = client.post(
        "/users", headers=auth_headers(AdminFactory()), json={"email": "plain@example.com", "password": PASSWORD}
    )

    assert response.status_code == 201, response.text
    assert_user(response.json(), is_admin=False, name=None)


def test_non_admin_cannot_create_users(client, db, auth_headers):
    response = client.post(
        "/users",
        headers=auth_headers(UserFactory()),
        json={"email": "sneaky@example.com", "password": PASSWORD, "is_admin": True},
    )

    assert_forbidden(response)
    db.expire_all()
    assert db.scalar(select(User).where(User.email == "sneaky@example.com")) is None


def test_admin_create_duplicate_email(client, auth_headers):
    UserFactory(email="dup@example.com")

    response = client.post(
        "/users", headers=auth_headers(AdminFactory()), json={"email": "DUP@example.com", "password": PASSWORD}
    )

    assert response.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"email": "x@example.com", "password": "a" * 73},
        {"email": "x@example.com", "password": "short"},
        {"email": "bad", "password": PASSWORD},
        {"email": "x@example.com", "password": PASSWORD, "token_version": 3},
    ],
    ids=["password-73-bytes", "password-short", "bad-email", "unknown-field"],
)
def test_admin_create_validates(client, auth_headers, body):
    response = client.post("/users", headers=auth_headers(AdminFactory()), json=body)

    assert response.status_code == 422, response.text


def test_read_self_by_id(client, auth_headers):
    user = UserFactory()

    response = client.get(f"/users/{user.id}", headers=auth_headers(user))

    assert response.status_code == 200
    assert_user(response.json(), user, email=user.email)


def test_non_admin_cannot_read_another_user(client, auth_headers):
    user, other = UserFactory(), UserFactory()

    assert_forbidden(client.get(f"/users/{other.id}", headers=auth_headers(user)))


def test_non_admin_gets_403_for_missing_user(client, auth_headers):
    user = UserFactory()

    assert_forbidden(client.get(f"/users/{user.id + 1000}", headers=auth_headers(user)))


def test_admin_reads_any_user(client, auth_headers):
    other = UserFactory()

    response = client.get(f"/users/{other.id}", headers=auth_headers(AdminFactory()))

    assert response.status_code == 200
    assert_user(response.json(), other, email=other.email, is_admin=False)


def test_admin_gets_404_for_missing_user(client, auth_headers):
    admin = AdminFactory()

    response = client.get(f"/users/{admin.id + 1000}", headers=auth_headers(admin))

    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize("user_id", ["0", "-1", "abc", str(2**31)])
def test_invalid_user_id_is_422(client, auth_headers, user_id):
    response = client.get(f"/users/{user_id}", headers=auth_headers(AdminFactory()))

    assert response.status_code == 422


def test_put_self(client, db, auth_headers):
    user = UserFactory(name="Someone")

    response = client.put(
        f"/users/{user.id}",
        headers=auth_headers(user),
        json={"email": "Renamed@Example.com", "current_password": PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert_user(response.json(), user, email="renamed@example.com", name=None, is_admin=False)
    stored = fresh(db, user)
    assert (stored.email, stored.name) == ("renamed@example.com", None)


def test_put_self_with_name(client, auth_headers):
    user = UserFactory()

    response = client.put(f"/users/{user.id}", headers=auth_headers(user), json={"email": user.email, "name": "Named"})

    assert response.status_code == 200, response.text
    assert_user(response.json(), user, name="Named")


def test_put_requires_email(client, auth_headers):
    user = UserFactory()

    response = client.put(f"/users/{user.id}", headers=auth_headers(user), json={"name": "No Email"})

    assert response.status_code == 422


def test_put_email_taken(client, db, auth_headers):
    UserFactory(email="taken@example.com")
    user = UserFactory()

    body = {"email": "taken@example.com", "current_password": PASSWORD}
    response = client.put(f"/users/{user.id}", headers=auth_headers(user), json=body)

    assert response.status_code == 409
    assert fresh(db, user).email == user.email


def test_non_admin_cannot_make_self_admin(client, db, auth_headers):
    user = UserFactory(name="Plain")

    response = client.put(
        f"/users/{user.id}",
        headers=auth_headers(user),
        json={"email": "changed@example.com", "name": "Changed", "is_admin": True},
    )

    assert_forbidden(response)
    stored = fresh(db, user)
    assert (stored.is_admin, stored.email, stored.name) == (False, user.email, "Plain")


def test_non_admin_cannot_put_another_user(client, db, auth_headers):
    user, other = UserFactory(), UserFactory()

    response = client.put(f"/users/{other.id}", headers=auth_headers(user), json={"email": "hijack@example.com"})

    assert_forbidden(response)
    assert fresh(db, other).email == other.email


def test_admin_promotes_user(client, db, auth_headers):
    user = UserFactory(name="Promoted")

    response = client.put(
        f"/users/{user.id}",
        headers=auth_headers(AdminFactory()),
        json={"email": user.email, "name": "Promoted", "is_admin": True},
    )

    assert response.status_code == 200, response.text
    assert_user(response.json(), user, is_admin=True, name="Promoted")
    assert fresh(db, user).is_admin is True


def test_put_self_password_needs_current_password(client, db, auth_headers):
    user = UserFactory()

    response = client.put(
        f"/users/{user.id}", headers=auth_headers(user), json={"email": user.email, "password": NEW_PASSWORD}
    )

    assert response.status_code == 422
    assert fresh(db, user).token_version == 0


def test_admin_resets_password_and_revokes_tokens(client, db, auth_headers):
    user = UserFactory()
    tokens = login(client, user.email)

    response = client.put(
        f"/users/{user.id}",
        headers=auth_headers(AdminFactory()),
        json={"email": user.email, "password": NEW_PASSWORD},
    )

    assert response.status_code == 200, response.text
    assert_unauthorized(client.get("/users/me", headers=bearer(tokens["access_token"])))
    assert login(client, user.email, NEW_PASSWORD)["token_type"] == "bearer"


def test_non_admin_cannot_delete_another_user(client, db, auth_headers):
    user, other = UserFactory(), UserFactory()
    TaskFactory(owner=other)

    assert_forbidden(client.delete(f"/users/{other.id}", headers=auth_headers(user)))

    assert fresh(db, other) is not None
    assert task_count(db, other.id) == 1


def test_admin_deletes_user_with_tasks(client, db, auth_headers):
    user = UserFactory()
    user_id = user.id
    TaskFactory.create_batch(3, owner=user)
    user_headers = auth_headers(user)

    response = client.delete(f"/users/{user.id}", headers=auth_headers(AdminFactory()))

    assert response.status_code == 204
    assert response.content == b""
    assert fresh(db, user) is None
    assert task_count(db, user_id) == 0
    assert_unauthorized(client.get("/users/me", headers=user_headers))


def test_admin_delete_missing_user_is_404(client, auth_headers):
    admin = AdminFactory()

    assert client.delete(f"/users/{admin.id + 1000}", headers=auth_headers(admin)).status_code == 404


def test_user_deletes_self_by_id(client, db, auth_headers):
    user = UserFactory()
    user_id = user.id
    TaskFactory(owner=user)
    headers = auth_headers(user)

    assert client.delete(f"/users/{user.id}", headers=headers).status_code == 204

    assert fresh(db, user) is None
    assert task_count(db, user_id) == 0
    assert_unauthorized(client.get("/users/me", headers=headers))


def test_responses_never_leak_secrets(client, auth_headers):
    admin = AdminFactory()
    user = UserFactory()
    admin_headers = auth_headers(admin)
    user_headers = auth_headers(user)

    responses = [
        client.post("/register", json={"email": "leak@example.com", "password": PASSWORD}),
        client.get("/users/me", headers=user_headers),
        client.patch("/users/me", headers=user_headers, json={"name": "Leak"}),
        client.get(f"/users/{user.id}", headers=admin_headers),
        client.put(f"/users/{user.id}", headers=admin_headers, json={"email": user.email}),
        client.post("/users", headers=admin_headers, json={"email": "leak2@example.com", "password": PASSWORD}),
        client.get("/users", headers=admin_headers),
    ]

    for response in responses:
        assert response.status_code in {200, 201}, response.text
        assert "password" not in response.text
        assert "token_version" not in response.text
        assert "$2b$" not in response.text
