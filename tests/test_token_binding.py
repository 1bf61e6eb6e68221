"""A token works only while its login lives and belongs to its subject, whoever holds the
signing key, and no login outlives SESSION_MAX_DAYS however often it is refreshed."""

import time
import uuid

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from task_api.auth.tokens import FAMILIES_KEPT, user_families_key
from task_api.config import Settings
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


def test_a_user_whose_id_has_ten_digits_is_served(client, db):
    # Ten digits, as ids reach after a billion: far enough below PostgreSQL's largest integer
    # that SQLite, which counts on from the largest id it has seen, can go on making users.
    user = UserFactory(id=1_000_000_000)

    tokens = login(client, user.email)

    assert client.get("/users/me", headers=bearer(tokens["access_token"])).json()["id"] == user.id
    assert refresh(client, tokens["refresh_token"]).status_code == 200


def test_a_login_ending_within_the_access_lifetime_gets_an_access_token_that_ends_with_it(short_sessions, db):
    tokens = login(short_sessions, UserFactory().email)

    access = claims_of(tokens["access_token"])
    assert access["exp"] - access["iat"] <= 3
    assert tokens["expires_in"] <= 3


def test_a_login_shorter_than_a_second_is_refused_at_start_up():
    with pytest.raises(ValidationError, match="session_max_days"):
        Settings(session_max_days=0.5 / 86400, _env_file=None)


def test_a_users_list_of_logins_forgets_the_ended_ones(make_app, db, redis):
    user = UserFactory()
    with TestClient(make_app(auth_rate_limit="1000/minute", rate_limit="1000/minute")) as client:
        for _ in range(FAMILIES_KEPT + 10):
            client.post("/logout", headers=bearer(login(client, user.email)["access_token"]))
        live = login(client, user.email)

    assert redis.scard(user_families_key(user.id)) <= FAMILIES_KEPT + 1
    assert redis.sismember(user_families_key(user.id), claims_of(live["access_token"])["fam"])
