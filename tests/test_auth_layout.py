"""The `/auth/` layout and trailing slashes, for clients written against them, and the refresh
cookie a browser sends to /refresh and /logout under either layout."""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from task_api.models import Task, User
from tests.conftest import PASSWORD, bearer
from tests.factories import UserFactory
from tests.test_auth import assert_unauthorized, family_of, me, refresh, refresh_cookies

LAYOUTS = ["", "/auth"]


@pytest.fixture
def strict_client(app, db):
    """A client that would show a redirect instead of following it."""
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def test_a_client_of_the_auth_layout_works_from_register_to_logout(strict_client, db):
    client = strict_client
    credentials = {"username": "Olga@Example.com", "password": PASSWORD}

    registered = client.post("/auth/register", json={**credentials, "name": "Olga"})
    assert registered.status_code == 201, registered.text
    assert registered.json()["email"] == "olga@example.com"
    logged_in = client.post("/auth/login", json=credentials)
    assert logged_in.status_code == 200, logged_in.text
    headers = bearer(logged_in.json()["access_token"])

    created = client.post("/tasks/", headers=headers, json={"title": "Slash-ended"})
    assert created.status_code == 201, created.text
    task = f"/tasks/{created.json()['id']}/"
    listed = client.get("/tasks/", headers=headers, params={"q": "slash"})
    assert listed.status_code == 200
    assert [item["id"] for item in listed.json()["items"]] == [created.json()["id"]]
    read = client.get(task, headers=headers)
    assert read.json() == created.json()
    assert read.headers["ETag"] == created.headers["ETag"]
    patched = client.patch(task, headers={**headers, "If-Match": read.headers["ETag"]}, json={"status": "completed"})
    assert patched.status_code == 200, patched.text
    assert client.put(task, headers=headers, json={"title": "Replaced"}).json()["status"] == "new"
    assert client.delete(task, headers=headers).status_code == 204
    assert client.get(task, headers=headers).status_code == 404

    refreshed = client.post("/auth/refresh", json={"refresh_token": logged_in.json()["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    headers = bearer(refreshed.json()["access_token"])
    assert client.post("/auth/logout", headers=headers).status_code == 204
    assert_unauthorized(client.get("/tasks/", headers=headers))
    assert db.scalar(select(func.count()).select_from(Task)) == 0
    assert db.scalar(select(User.name)) == "Olga"


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
def test_username_and_email_together_is_a_422(client, db, path):
    UserFactory(email="pat@example.com")

    response = client.post(path, json={"username": "pat@example.com", "email": "pat@example.com", "password": PASSWORD})

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"] == "Send email or username, not both"
    assert "set-cookie" not in response.headers
    assert db.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize("path", ["/register", "/login"])
def test_the_main_routes_take_only_email(client, db, path):
    UserFactory(email="pat@example.com")

    response = client.post(path, json={"username": "pat@example.com", "password": PASSWORD})

    assert response.status_code == 422, response.text
    assert db.scalar(select(func.count()).select_from(User)) == 1


@pytest.mark.parametrize("path", ["/tasks", "/tasks/{id}", "/users/me", "/users/{user}"])
def test_a_trailing_slash_is_answered_as_the_path_without_it(strict_client, auth_headers, path):
    user = UserFactory()
    headers = auth_headers(user)
    task = strict_client.post("/tasks", headers=headers, json={"title": "Either way"}).json()
    path = path.format(id=task["id"], user=user.id)

    without = strict_client.get(path, headers=headers)
    with_slash = strict_client.get(path + "/", headers=headers)

    assert without.status_code == 200
    assert (with_slash.status_code, with_slash.json()) == (without.status_code, without.json())


@pytest.mark.parametrize("path", ["/tasks//", "/nothing/", "/tasks/1//"])
def test_only_one_trailing_slash_is_forgiven(strict_client, auth_headers, path):
    response = strict_client.get(path, headers=auth_headers(UserFactory()))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("login_layout", LAYOUTS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_browser_refreshes_and_logs_out_with_the_cookie_alone(app, client, redis, login_layout, layout):
    user = UserFactory()
    logged_in = client.post(f"{login_layout}/login", data={"username": user.email, "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text

    refreshed = client.post(f"{layout}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    pair = refreshed.json()
    assert {cookie.value for cookie in client.cookies.jar} == {pair["refresh_token"]}
    # Logged out with another login's access token, only the cookie can end this login.
    elsewhere = TestClient(app).post("/login", json={"email": user.email, "password": PASSWORD}).json()
    logged_out = client.post(f"{layout}/logout", headers=bearer(elsewhere["access_token"]))

    assert logged_out.status_code == 204
    assert logged_out.request.headers["cookie"] == f"refresh_token={pair['refresh_token']}"
    assert list(client.cookies.jar) == []
    assert redis.exists(family_of(pair["refresh_token"])) == 0
    assert_unauthorized(refresh(client, pair["refresh_token"]))
    assert_unauthorized(me(client, pair["access_token"]))


def test_the_cookie_goes_only_to_the_routes_that_read_it(client):
    client.post("/login", json={"email": UserFactory().email, "password": PASSWORD})

    paths = {cookie.path for cookie in client.cookies.jar}

    assert paths == {"/refresh", "/logout", "/auth"}


def test_the_cookie_is_secure_when_asked(make_app, db):
    user = UserFactory()
    with TestClient(make_app(cookie_secure=True)) as client:
        response = client.post("/login", json={"email": user.email, "password": PASSWORD})

    cookies = refresh_cookies(response)
    assert set(cookies) == {"/refresh", "/logout", "/auth"}
    assert all("secure" in attributes and "httponly" in attributes for _, attributes in cookies.values())


def test_auth_prefixed_routes(client, db):
    registered = client.post("/auth/register", json={"email": "Heidi@Example.com", "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    assert registered.headers["Location"] == f"/users/{registered.json()['id']}"
    assert registered.json()["email"] == "heidi@example.com"

    logged_in = client.post("/auth/login", json={"email": "heidi@example.com", "password": PASSWORD})
    assert logged_in.status_code == 200, logged_in.text
    tokens = logged_in.json()
    assert tokens["token_type"] == "bearer"
    assert set(refresh_cookies(logged_in)) == {"/refresh", "/logout", "/auth"}

    form_login = client.post("/auth/login", data={"username": "heidi@example.com", "password": PASSWORD})
    assert form_login.status_code == 200, form_login.text

    refreshed = client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    pair = refreshed.json()
    assert me(client, pair["access_token"]).status_code == 200

    stolen = form_login.json()
    assert client.post("/auth/refresh", json={"refresh_token": stolen["refresh_token"]}).status_code == 200
    assert_unauthorized(client.post("/auth/refresh", json={"refresh_token": stolen["refresh_token"]}))
    assert_unauthorized(me(client, stolen["access_token"]))

    logged_out = client.post("/auth/logout", headers=bearer(pair["access_token"]))
    assert logged_out.status_code == 204
    assert_unauthorized(me(client, pair["access_token"]))
    assert_unauthorized(refresh(client, pair["refresh_token"]))


def test_auth_prefixed_refresh_accepts_its_cookie(client):
    UserFactory(email="ivan@example.com")
    client.post("/auth/login", json={"email": "ivan@example.com", "password": PASSWORD})

    response = client.post("/auth/refresh")

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/auth/register", {"email": "judy@example.com", "password": "a" * 73}),
        ("/auth/login", {"email": "judy@example.com", "password": "a" * 73}),
        ("/auth/register", {"email": "judy@example.com", "password": PASSWORD, "is_admin": True}),
        ("/auth/register", {"username": "not an e-mail", "password": PASSWORD}),
        ("/auth/login", {"username": "judy@example.com"}),
    ],
)
def test_auth_prefixed_routes_validate_the_same(client, path, body):
    assert client.post(path, json=body).status_code == 422


def test_auth_prefixed_routes_are_hidden_from_schema(client):
    paths = client.get("/openapi.json").json()["paths"]

    assert {"/register", "/login", "/refresh", "/logout", "/logout/all"} <= set(paths)
    assert not [path for path in paths if path.startswith("/auth/") or path.endswith("/")]
