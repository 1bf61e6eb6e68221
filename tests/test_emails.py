"""One address, one account: every route that takes an e-mail reads it NFKC-normalised and lower-cased."""

import pytest
from sqlalchemy import select

from task_api.models import User
from tests.conftest import PASSWORD, bearer, login
from tests.factories import AdminFactory, UserFactory


def fullwidth(letters):
    return "".join(chr(ord(letter) + 0xFEE0) for letter in letters)  # "a" (U+0061) becomes U+FF41


FULLWIDTH_ALICE = f"{fullwidth('alice')}@example.com"


def emails(db):
    db.expire_all()
    return db.scalars(select(User.email).order_by(User.id)).all()


def test_a_fullwidth_copy_of_a_registered_address_is_a_409(client, db):
    assert client.post("/register", json={"email": "alice@example.com", "password": PASSWORD}).status_code == 201

    response = client.post("/register", json={"email": FULLWIDTH_ALICE, "password": PASSWORD})

    assert response.status_code == 409, response.text
    assert emails(db) == ["alice@example.com"]


@pytest.mark.parametrize(
    ("path", "field"), [("/register", "email"), ("/auth/register", "username"), ("/auth/register", "email")]
)
def test_a_fullwidth_upper_case_address_is_stored_plain_and_lower_case(client, db, path, field):
    response = client.post(path, json={field: f"{fullwidth('ALICE')}@Example.com", "password": PASSWORD})

    assert response.status_code == 201, response.text
    assert response.json()["email"] == "alice@example.com"
    assert emails(db) == ["alice@example.com"]


@pytest.mark.parametrize(
    ("path", "request_kwargs"),
    [
        pytest.param("/login", {"json": {"email": FULLWIDTH_ALICE, "password": PASSWORD}}, id="json"),
        pytest.param("/login", {"data": {"username": FULLWIDTH_ALICE, "password": PASSWORD}}, id="form"),
        pytest.param("/auth/login", {"json": {"username": FULLWIDTH_ALICE, "password": PASSWORD}}, id="auth-layout"),
    ],
)
def test_the_fullwidth_form_logs_in_to_the_plain_account(client, path, request_kwargs):
    user = UserFactory(email="alice@example.com")

    response = client.post(path, **request_kwargs)

    assert response.status_code == 200, response.text
    me = client.get("/users/me", headers=bearer(response.json()["access_token"]))
    assert me.json()["id"] == user.id


def test_changing_ones_address_to_a_fullwidth_copy_of_a_taken_one_is_a_409(client, db):
    UserFactory(email="alice@example.com")
    mallory = UserFactory(email="mallory@example.com")
    headers = bearer(login(client, mallory.email)["access_token"])
    change = {"email": FULLWIDTH_ALICE, "current_password": PASSWORD}

    patched = client.patch("/users/me", headers=headers, json=change)
    put = client.put(f"/users/{mallory.id}", headers=headers, json=change)

    assert (patched.status_code, put.status_code) == (409, 409), (patched.text, put.text)
    assert emails(db) == ["alice@example.com", "mallory@example.com"]


def test_an_admin_cannot_create_a_fullwidth_copy_of_a_taken_address(client, db):
    UserFactory(email="alice@example.com")
    admin = AdminFactory(email="admin@example.com")
    headers = bearer(login(client, admin.email)["access_token"])

    response = client.post("/users", headers=headers, json={"email": FULLWIDTH_ALICE, "password": PASSWORD})

    assert response.status_code == 409, response.text
    assert emails(db) == ["alice@example.com", "admin@example.com"]
