"""A token works only while its login lives and belongs to its subject, whoever holds the
signing key, and no login outlives SESSION_MAX_DAYS however often it is refreshed."""

import time
import uuid

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer, login
from tests.factories import AdminFactory, TaskFactory, UserFactory
from tests.test_auth import assert_unauthorized, claims_of, family_of, refresh, sign


def test_a_token_naming_another_user_with_ones_own_login_is_refused(client, db):
    admin, attacker = AdminFactory(), UserFactory()
    login(client, admin.email)  # the admin is logged in too: their login is live, just not this one
    own = login(client, attacker.email)
    forged = sign({**claims_of(own["access_token"]), "sub": str(admin.id)})

    for response in (
        client.get("/users", headers=bearer(forged)),
        client.get("/users/me", headers=bearer(forged)),
        client.get("/tasks", headers=bearer(forged)),
        client.post("/users", headers=bearer(forged), json={"email": "second@example.com", "password": "x" * 12}),
    ):
        assert_unauthorized(response)
    assert client.get("/users/me", headers=bearer(own["access_token"])).status_code == 200


def test_the_signing_key_alone_cannot_reach_another_users_tasks(client, db):
    victim, attacker = UserFactory(), UserFactory()
    task = TaskFactory(owner=victim)
    own = login(client, attacker.email)
    forged = sign({**claims_of(own["access_token"]), "sub": str(victim.id)})

    assert_unauthorized(client.get(f"/tasks/{task.id}", headers=bearer(forged)))
    assert_unauthorized(client.delete(f"/tasks/{task.id}", headers=bearer(forged)))


def test_a_minted_token_for_a_user_who_is_not_logged_in_is_refused(client, db):
    victim = UserFactory()
    template = claims_of(login(client, UserFactory().email)["access_token"])
    minted = sign({**template, "sub": str(victim.id), "fam": uuid.uuid4().hex, "ver": 0})

    assert_unauthorized(client.get("/users/me", headers=bearer(minted)))


def test_a_refresh_token_naming_another_user_with_ones_own_login_is_refused(client, db, redis):
    victim, attacker = UserFactory(), UserFactory()
    own = login(client, attacker.email)
    forged = sign({**claims_of(own["refresh_token"]), "sub": str(victim.id)})

    assert_unauthorized(refresh(client, forged))
    assert redis.exists(family_of(own["refresh_token"]))  # the attacker's own login is untouched


def test_logging_out_with_another_users_forged_refresh_token_ends_nothing_of_theirs(client, db):
    victim, attacker = UserFactory(), UserFactory()
    theirs = login(client, victim.email)
    own = login(client, attacker.email)
    client.cookies.clear()
    forged = sign({**claims_of(theirs["refresh_token"]), "sub": str(attacker.id)})

    logout = client.post("/logout", headers=bearer(own["access_token"]), json={"refresh_token": forged})

    assert logout.status_code == 204
    assert client.get("/users/me", headers=bearer(theirs["access_token"])).status_code == 200
    assert refresh(client, theirs["refresh_token"]).status_code == 200


@pytest.fixture
def short_sessions(make_app, db):
    """An app whose logins end 3 s after they begin, whose refresh tokens would live a week."""
    with TestClient(make_app(session_max_days=3 / 86400, refresh_token_expire_days=7)) as client:
        yield client


def test_refreshing_never_extends_a_login_past_its_deadline(short_sessions, db):
    client = short_sessions
    user = UserFactory()
    started = time.time()
    tokens = login(client, user.email)
    rotated = refresh(client, tokens["refresh_token"])
    assert rotated.status_code == 200
    newest = rotated.json()
    assert claims_of(newest["refresh_token"])["exp"] <= started + 4

    time.sleep(max(started + 3.2 - time.time(), 0))

    assert_unauthorized(refresh(client, newest["refresh_token"]))
    assert_unauthorized(client.get("/users/me", headers=bearer(newest["access_token"])))
    assert login(client, user.email)["access_token"]  # logging in again starts a new login
