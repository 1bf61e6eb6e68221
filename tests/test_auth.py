import base64
import json
import time

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from task_api.auth.passwords import hash_password
from task_api.auth.tokens import Tokens
from task_api.models import User
from task_api.store import create_redis
from tests.conftest import PASSWORD, SECRET_KEY, bearer, login
from tests.factories import UserFactory

USER_FIELDS = {"id", "email", "name", "is_admin", "created_at"}
JSON = {"Content-Type": "application/json"}
SHORT_KEY_FOR_HS512 = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


def family_of(token: str) -> str:
    """The Redis key of the login a token belongs to."""
    claims = claims_of(token)
    return f"auth:family:{{{claims['sub']}}}:{claims['fam']}"


def sign(claims, algorithm="HS256", key=SECRET_KEY):
    return jwt.encode(claims, key, algorithm=algorithm)


def unsigned(claims):
    def part(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def refresh_cookies(response, name="refresh_token"):
    """The refresh cookies a response sets, by path: {path: (value, attributes)}."""
    cookies = {}
    for header in response.headers.get_list("set-cookie"):
        first, *rest = (part.strip() for part in header.split(";"))
        cookie_name, _, value = first.partition("=")
        if cookie_name == name:
            attributes = {}
            for attribute in rest:
                key, _, attribute_value = attribute.partition("=")
                attributes[key.lower()] = attribute_value
            cookies[attributes["path"]] = (value.strip('"'), attributes)
    assert cookies, f"no {name} cookie set"
    return cookies


def assert_unauthorized(response):
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


def me(client, access_token):
    return client.get("/users/me", headers=bearer(access_token))


def refresh(client, refresh_token):
    return client.post("/refresh", json={"refresh_token": refresh_token})


def count_users(db):
    db.expire_all()
    return db.scalar(select(func.count()).select_from(User))


def test_register_creates_user(client, db):
    response = client.post("/register", json={"email": "Alice@Example.COM", "password": PASSWORD, "name": "Alice"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == USER_FIELDS
    assert body["email"] == "alice@example.com"
    assert body["name"] == "Alice"
    assert body["is_admin"] is False
    assert response.headers["Location"] == f"/users/{body['id']}"
    db.expire_all()
    user = db.get(User, body["id"])
    assert user.email == "alice@example.com"
    assert user.password_hash != PASSWORD


def test_register_without_name(client):
    response = client.post("/register", json={"email": "bob@example.com", "password": PASSWORD})

    assert response.status_code == 201, response.text
    assert response.json()["name"] is None


def test_registered_user_can_log_in(client):
    client.post("/register", json={"email": "Carol@Example.com", "password": PASSWORD})

    tokens = login(client, "carol@example.com")

    assert me(client, tokens["access_token"]).json()["email"] == "carol@example.com"


def test_register_duplicate_email_in_other_case_conflicts(client, db):
    UserFactory(email="dave@example.com")

    response = client.post("/register", json={"email": "DAVE@example.com", "password": PASSWORD})

    assert response.status_code == 409
    assert isinstance(response.json()["detail"], str)
    assert count_users(db) == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "not-an-email", "password": PASSWORD}, id="bad-email"),
        pytest.param({"password": PASSWORD}, id="missing-email"),
        pytest.param({"email": "eve@example.com"}, id="missing-password"),
        pytest.param({"email": "eve@example.com", "password": "a" * 7}, id="password-7-bytes"),
        pytest.param({"email": "eve@example.com", "password": "a" * 73}, id="password-73-ascii-bytes"),
        pytest.param({"email": "eve@example.com", "password": "é" * 36 + "a"}, id="password-73-multibyte"),
        pytest.param({"email": "eve@example.com", "password": "€" * 24 + "a"}, id="password-73-three-byte"),
        pytest.param({"email": "eve@example.com", "password": PASSWORD, "is_admin": True}, id="is-admin"),
        pytest.param({"email": "eve@example.com", "password": PASSWORD, "id": 99}, id="id"),
        pytest.param({"email": "eve@example.com", "password": PASSWORD, "name": ""}, id="empty-name"),
    ],
)
def test_register_rejects_invalid_body(client, db, body):
    response = client.post("/register", json=body)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert count_users(db) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="malformed-json"),
        pytest.param(b"email=eve@example.com&password=whatever1", "application/x-www-form-urlencoded", id="form"),
        pytest.param(b"\xff\xfe\xfa", "application/json", id="not-utf8"),
    ],
)
def test_register_rejects_non_json_body(client, db, content, content_type):
    response = client.post("/register", content=content, headers={"Content-Type": content_type})

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert count_users(db) == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"email": "eve@example.com", "password": "\ud800 lone surrogate"}, id="password"),
        pytest.param({"email": "eve@example.com", "password": PASSWORD, "name": "\udfff"}, id="name"),
        pytest.param({"email": "\ud800eve@example.com", "password": PASSWORD}, id="email"),
    ],
)
def test_register_rejects_unencodable_text(client, db, body):
    response = client.post("/register", content=json.dumps(body), headers=JSON)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert count_users(db) == 0


@pytest.mark.parametrize("password", ["é" * 36, "€" * 24, "a" * 72, "a" * 8])
def test_register_accepts_passwords_within_byte_limits(client, password):
    response = client.post("/register", json={"email": "frank@example.com", "password": password})

    assert response.status_code == 201, response.text
    assert login(client, "frank@example.com", password)["token_type"] == "bearer"


def test_login_with_json(client):
    user = UserFactory()

    response = client.post("/login", json={"email": user.email, "password": PASSWORD})

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert me(client, body["access_token"]).json()["id"] == user.id
    access, refresh_claims = claims_of(body["access_token"]), claims_of(body["refresh_token"])
    assert access["exp"] - access["iat"] == 15 * 60
    assert refresh_claims["exp"] - refresh_claims["iat"] == 7 * 24 * 3600
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_token_lifetimes_follow_settings(make_app, db, redis):
    user = UserFactory()
    with TestClient(make_app(access_token_expire_minutes=5, refresh_token_expire_days=1)) as client:
        response = client.post("/login", json={"email": user.email, "password": PASSWORD})

    assert response.status_code == 200, response.text
    assert response.json()["expires_in"] == 300
    access = claims_of(response.json()["access_token"])
    assert access["exp"] - access["iat"] == 300
    assert {attributes["max-age"] for _, attributes in refresh_cookies(response).values()} == {str(24 * 3600)}


@pytest.mark.parametrize("extra", [{}, {"grant_type": "password"}], ids=["plain", "grant-type"])
def test_login_with_oauth2_form(client, extra):
    user = UserFactory()

    response = client.post("/login", data={"username": user.email, "password": PASSWORD, **extra})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    assert me(client, body["access_token"]).json()["id"] == user.id


def test_login_email_is_case_insensitive(client):
    user = UserFactory(email="grace@example.com")

    tokens = login(client, "Grace@EXAMPLE.com")

    assert me(client, tokens["access_token"]).json()["id"] == user.id


def test_login_sets_refresh_cookie(client):
    user = UserFactory()

    response = client.post("/login", json={"email": user.email, "password": PASSWORD})

    cookies = refresh_cookies(response)
    assert set(cookies) == {"/refresh", "/logout", "/auth"}
    for value, attributes in cookies.values():
        assert value == response.json()["refresh_token"]
        assert "httponly" in attributes
        assert "secure" not in attributes
        assert attributes["samesite"].lower() == "strict"


def test_wrong_password_and_unknown_email_look_the_same(client):
    user = UserFactory()

    wrong_password = client.post("/login", json={"email": user.email, "password": "wrong password"})
    unknown_email = client.post("/login", json={"email": "nobody@example.com", "password": PASSWORD})

    assert_unauthorized(wrong_password)
    assert_unauthorized(unknown_email)
    assert wrong_password.json() == unknown_email.json()


@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"json": {"email": "x@example.com", "password": "a" * 73}}, id="json"),
        pytest.param({"data": {"username": "x@example.com", "password": "a" * 73}}, id="form"),
        pytest.param({"json": {"email": "x@example.com", "password": "é" * 37}}, id="json-multibyte"),
    ],
)
def test_login_with_overlong_password_is_422(client, request_kwargs):
    UserFactory(email="x@example.com")

    response = client.post("/login", **request_kwargs)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize("path", ["/login", "/auth/login"])
def test_login_with_unencodable_password_is_422(client, path):
    UserFactory(email="x@example.com")
    body = {"email": "x@example.com", "password": "\ud800 lone surrogate"}

    response = client.post(path, content=json.dumps(body), headers=JSON)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


@pytest.mark.parametrize("via", ["json", "form"])
def test_login_with_72_byte_multibyte_password(client, via):
    password = "é" * 36
    UserFactory(email="mb@example.com", password_hash=hash_password(password, rounds=4))
    sent = (
        {"json": {"email": "mb@example.com", "password": password}}
        if via == "json"
        else {"data": {"username": "mb@example.com", "password": password}}
    )

    response = client.post("/login", **sent)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "request_kwargs",
    [
        pytest.param({"json": {"email": "x@example.com"}}, id="json-missing-password"),
        pytest.param({"json": {"email": "nope", "password": PASSWORD}}, id="json-bad-email"),
        pytest.param({"data": {"username": "x@example.com"}}, id="form-missing-password"),
        pytest.param({"content": b"{oops", "headers": {"Content-Type": "application/json"}}, id="malformed-json"),
    ],
)
def test_login_rejects_invalid_body(client, request_kwargs):
    response = client.post("/login", **request_kwargs)

    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_no_token_is_401(client):
    assert_unauthorized(client.get("/users/me"))


def test_resigned_untouched_claims_are_accepted(client):
    tokens = login(client, UserFactory().email)

    response = me(client, sign(claims_of(tokens["access_token"])))

    assert response.status_code == 200


def _tampered_signature(claims, token):
    head, payload, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{head}.{payload}.{flipped}{signature[1:]}"


def _expired(claims, token):
    now = int(time.time())
    return sign({**claims, "iat": now - 3600, "exp": now - 60})


def _alg_none(claims, token):
    return unsigned(claims)


def _other_algorithm(claims, token):
    return sign(claims, algorithm="HS512")


def _other_secret(claims, token):
    return sign(claims, key="another-secret-key-that-is-long-enough-for-hs256")


def _wrong_issuer(claims, token):
    return sign({**claims, "iss": "someone-else"})


def _wrong_audience(claims, token):
    return sign({**claims, "aud": "someone-else"})


def _without(claim):
    def craft(claims, token):
        return sign({key: value for key, value in claims.items() if key != claim})

    return craft


def _garbage(claims, token):
    return "not.a.jwt"


@pytest.mark.parametrize(
    "craft",
    [
        pytest.param(_tampered_signature, id="tampered-signature"),
        pytest.param(_expired, id="expired"),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(_other_algorithm, id="hs512", marks=SHORT_KEY_FOR_HS512),
        pytest.param(_other_secret, id="other-secret"),
        pytest.param(_wrong_issuer, id="wrong-issuer"),
        pytest.param(_wrong_audience, id="wrong-audience"),
        pytest.param(_without("jti"), id="missing-jti"),
        pytest.param(_without("exp"), id="missing-exp"),
        pytest.param(_without("sub"), id="missing-sub"),
        pytest.param(_garbage, id="garbage"),
    ],
)
def test_bad_access_token_is_401(client, craft):
    tokens = login(client, UserFactory().email)
    token = tokens["access_token"]

    assert_unauthorized(me(client, craft(claims_of(token), token)))


@pytest.mark.parametrize(
    "craft",
    [
        pytest.param(_tampered_signature, id="tampered-signature"),
        pytest.param(_expired, id="expired"),
        pytest.param(_alg_none, id="alg-none"),
        pytest.param(_wrong_issuer, id="wrong-issuer"),
        pytest.param(_wrong_audience, id="wrong-audience"),
        pytest.param(_without("jti"), id="missing-jti"),
    ],
)
def test_bad_refresh_token_is_401(client, craft):
    tokens = login(client, UserFactory().email)
    token = tokens["refresh_token"]

    assert_unauthorized(refresh(client, craft(claims_of(token), token)))


def test_refresh_token_is_not_an_access_token(client):
    tokens = login(client, UserFactory().email)

    assert_unauthorized(me(client, tokens["refresh_token"]))


def test_access_token_is_not_a_refresh_token(client):
    tokens = login(client, UserFactory().email)

    assert_unauthorized(refresh(client, tokens["access_token"]))
    assert refresh(client, tokens["refresh_token"]).status_code == 200


def test_refresh_with_unencodable_token_is_401(client):
    response = client.post("/refresh", content=json.dumps({"refresh_token": "\ud800.a.b"}), headers=JSON)

    assert_unauthorized(response)


def test_refresh_without_token_is_401(client):
    assert_unauthorized(client.post("/refresh"))


def test_refresh_with_json_body(client):
    user = UserFactory()
    tokens = login(client, user.email)

    response = refresh(client, tokens["refresh_token"])

    assert response.status_code == 200, response.text
    pair = response.json()
    assert set(pair) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == 900
    assert pair["refresh_token"] != tokens["refresh_token"]
    assert me(client, pair["access_token"]).json()["id"] == user.id
    cookies = refresh_cookies(response)
    assert set(cookies) == {"/refresh", "/logout", "/auth"}
    assert {value for value, _ in cookies.values()} == {pair["refresh_token"]}


def test_refresh_with_cookie(client):
    user = UserFactory()
    tokens = login(client, user.email)

    response = client.post("/refresh")

    assert response.status_code == 200, response.text
    pair = response.json()
    assert pair["refresh_token"] != tokens["refresh_token"]
    assert me(client, pair["access_token"]).json()["id"] == user.id
    assert_unauthorized(refresh(client, tokens["refresh_token"]))


def test_refresh_with_explicit_cookie_header(client):
    tokens = login(client, UserFactory().email)
    client.cookies.clear()

    response = client.post("/refresh", headers={"Cookie": f"refresh_token={tokens['refresh_token']}"})

    assert response.status_code == 200, response.text


def test_refresh_rotates_in_redis(client, redis):
    tokens = login(client, UserFactory().email)
    family = family_of(tokens["refresh_token"])
    assert redis.get(family).partition(":")[0] == claims_of(tokens["refresh_token"])["jti"]

    pair = refresh(client, tokens["refresh_token"]).json()

    assert claims_of(pair["refresh_token"])["fam"] == claims_of(tokens["refresh_token"])["fam"]
    assert redis.get(family).partition(":")[0] == claims_of(pair["refresh_token"])["jti"]
    assert 0 < redis.ttl(family) <= 7 * 24 * 3600


def test_old_refresh_token_stops_working(client):
    tokens = login(client, UserFactory().email)
    refresh(client, tokens["refresh_token"])

    assert_unauthorized(refresh(client, tokens["refresh_token"]))


def test_refresh_token_reuse_revokes_the_chain(client, redis):
    user = UserFactory()
    other_login = login(client, user.email)
    first = login(client, user.email)
    second = refresh(client, first["refresh_token"]).json()
    third = refresh(client, second["refresh_token"]).json()

    assert_unauthorized(refresh(client, first["refresh_token"]))

    assert_unauthorized(refresh(client, third["refresh_token"]))
    for access_token in (first["access_token"], second["access_token"], third["access_token"]):
        assert_unauthorized(me(client, access_token))
    assert not redis.exists(family_of(first["refresh_token"]))
    assert me(client, other_login["access_token"]).status_code == 200
    assert refresh(client, other_login["refresh_token"]).status_code == 200


def test_logout(client, redis):
    tokens = login(client, UserFactory().email)
    family = family_of(tokens["access_token"])
    assert redis.exists(family)

    response = client.post("/logout", headers=bearer(tokens["access_token"]))

    assert response.status_code == 204
    assert response.content == b""
    assert_unauthorized(me(client, tokens["access_token"]))
    assert_unauthorized(refresh(client, tokens["refresh_token"]))
    assert not redis.exists(family)


def test_logout_requires_access_token(client):
    tokens = login(client, UserFactory().email)

    assert_unauthorized(client.post("/logout"))
    assert_unauthorized(client.post("/logout", headers=bearer(tokens["refresh_token"])))
    assert me(client, tokens["access_token"]).status_code == 200


def test_logout_leaves_other_logins_alone(client):
    user = UserFactory()
    kept = login(client, user.email)
    ended = login(client, user.email)

    assert client.post("/logout", headers=bearer(ended["access_token"])).status_code == 204

    assert me(client, kept["access_token"]).status_code == 200
    assert refresh(client, kept["refresh_token"]).status_code == 200


@pytest.mark.parametrize("via", ["json", "cookie"])
def test_logout_with_refresh_token_of_another_login(client, redis, via):
    user = UserFactory()
    first = login(client, user.email)
    second = login(client, user.email)
    client.cookies.clear()
    sent = (
        {"json": {"refresh_token": second["refresh_token"]}}
        if via == "json"
        else {"headers": {"Cookie": f"refresh_token={second['refresh_token']}"}}
    )
    headers = {**bearer(first["access_token"]), **sent.pop("headers", {})}

    response = client.post("/logout", headers=headers, **sent)

    assert response.status_code == 204
    for tokens in (first, second):
        assert_unauthorized(me(client, tokens["access_token"]))
        assert_unauthorized(refresh(client, tokens["refresh_token"]))
        assert not redis.exists(family_of(tokens["refresh_token"]))


@pytest.mark.parametrize("refresh_token", ["not.a.jwt", "\ud800.a.b"], ids=["garbage", "lone-surrogate"])
def test_logout_ignores_unusable_refresh_token(client, redis, refresh_token):
    tokens = login(client, UserFactory().email)

    response = client.post(
        "/logout",
        headers={**bearer(tokens["access_token"]), **JSON},
        content=json.dumps({"refresh_token": refresh_token}),
    )

    assert response.status_code == 204, response.text
    assert_unauthorized(me(client, tokens["access_token"]))
    assert not redis.exists(family_of(tokens["access_token"]))


def test_logout_with_another_users_refresh_token_does_not_touch_it(client):
    mine = login(client, UserFactory().email)
    theirs = login(client, UserFactory().email)

    response = client.post(
        "/logout", headers=bearer(mine["access_token"]), json={"refresh_token": theirs["refresh_token"]}
    )

    assert response.status_code == 204
    assert me(client, theirs["access_token"]).status_code == 200
    assert refresh(client, theirs["refresh_token"]).status_code == 200


def test_logout_all(client, db):
    user = UserFactory()
    other_user = UserFactory()
    first = login(client, user.email)
    second = login(client, user.email)
    refreshed = refresh(client, second["refresh_token"]).json()
    bystander = login(client, other_user.email)

    response = client.post("/logout/all", headers=bearer(first["access_token"]))

    assert response.status_code == 204
    assert response.content == b""
    for tokens in (first, refreshed):
        assert_unauthorized(me(client, tokens["access_token"]))
        assert_unauthorized(refresh(client, tokens["refresh_token"]))
    assert_unauthorized(me(client, second["access_token"]))
    assert me(client, bystander["access_token"]).status_code == 200
    assert refresh(client, bystander["refresh_token"]).status_code == 200
    assert me(client, login(client, user.email)["access_token"]).status_code == 200


def test_logout_all_requires_access_token(client):
    assert_unauthorized(client.post("/logout/all"))


def test_a_login_that_read_the_row_before_a_password_change_gets_no_tokens(client, db, settings, auth_headers):
    user = UserFactory()
    headers = auth_headers(user)
    change = {"password": "brand new password", "current_password": PASSWORD}
    assert client.patch("/users/me", json=change, headers=headers).status_code == 200

    redis = create_redis(settings)
    tokens = Tokens(settings, redis)
    stale, current = (tokens.start_family(user.id, token_version=version) for version in (0, 1))
    redis.connection_pool.disconnect()

    assert stale is None
    assert current is not None


def test_a_token_that_worked_still_expires_on_time(client):
    token = login(client, UserFactory().email)["access_token"]
    expiring = sign({**claims_of(token), "exp": int(time.time()) + 2})
    assert me(client, expiring).status_code == 200

    time.sleep(max(claims_of(expiring)["exp"] - time.time(), 0) + 0.1)

    assert_unauthorized(me(client, expiring))
    assert me(client, token).status_code == 200
