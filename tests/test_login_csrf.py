"""A page on another site cannot log a browser in (login CSRF); Swagger UI's own form can."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import PASSWORD
from tests.factories import UserFactory

OWN_ORIGIN = "http://testserver"  # TestClient's host
FOREIGN_ORIGIN = "https://evil.example"


def form_login(client, user, **headers):
    return client.post("/login", data={"username": user.email, "password": PASSWORD}, headers=headers)


@pytest.mark.parametrize("path", ["/login", "/auth/login"])
def test_a_cross_site_login_form_is_refused_and_sets_no_cookie(client, db, path):
    user = UserFactory()

    response = client.post(
        path, data={"username": user.email, "password": PASSWORD}, headers={"Origin": FOREIGN_ORIGIN}
    )

    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert isinstance(response.json()["detail"], str)
    assert "set-cookie" not in response.headers


def test_a_cross_site_text_plain_post_shaped_as_json_is_refused(client, db):
    """What an HTML form with enctype=text/plain can send: JSON that needs no CORS preflight."""
    user = UserFactory()
    body = f'{{"email": "{user.email}", "password": "{PASSWORD}"}}'

    response = client.post("/login", content=body, headers={"Content-Type": "text/plain", "Origin": FOREIGN_ORIGIN})

    assert response.status_code == 403
    assert "set-cookie" not in response.headers


def test_the_services_own_pages_and_non_browsers_log_in_by_form(client, db):
    user = UserFactory()

    same_origin = form_login(client, user, Origin=OWN_ORIGIN)
    no_origin = form_login(client, user)

    assert same_origin.status_code == 200
    assert "set-cookie" in same_origin.headers
    assert no_origin.status_code == 200


def test_json_logins_from_other_origins_are_left_to_cors(client, db):
    user = UserFactory()

    response = client.post(
        "/login", json={"email": user.email, "password": PASSWORD}, headers={"Origin": FOREIGN_ORIGIN}
    )

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers  # no page there may read it


def test_an_origin_in_cors_origins_may_log_in_by_form_and_read_the_answer(make_app, db):
    user = UserFactory()
    front_end = "https://app.example"
    with TestClient(make_app(cors_origins=f"{front_end}, https://other.example")) as client:
        allowed = form_login(client, user, Origin=front_end)
        refused = form_login(client, user, Origin=FOREIGN_ORIGIN)
        refused_preflight = client.options(
            "/tasks", headers={"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "POST"}
        )
        preflight = client.options(
            "/tasks",
            headers={
                "Origin": front_end,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == front_end
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert refused.status_code == 403
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == front_end
    assert refused_preflight.status_code == 400
    assert refused_preflight.headers["content-type"] == "application/json"
    assert "origin" in refused_preflight.json()["detail"]
