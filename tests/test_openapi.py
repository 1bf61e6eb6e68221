import pytest

CONTRACT = {
    "/register": {"post"},
    "/login": {"post"},
    "/refresh": {"post"},
    "/logout": {"post"},
    "/logout/all": {"post"},
    "/users/me": {"get", "patch", "delete"},
    "/users": {"get", "post"},
    "/users/{user_id}": {"get", "put", "delete"},
    "/tasks": {"get", "post"},
    "/tasks/{task_id}": {"get", "put", "patch", "delete"},
}
PUBLIC = {("/register", "post"), ("/login", "post"), ("/refresh", "post")}
OPERATIONS = {"/health", "/ready"}


@pytest.fixture
def schema(client):
    return client.get("/openapi.json").json()


def operations(schema):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_the_schema_lists_exactly_the_contract(schema):
    served = {path: set(methods) for path, methods in schema["paths"].items()}
    assert served == {**CONTRACT, "/health": {"get"}, "/ready": {"get"}}


def test_every_operation_is_in_one_group(schema):
    groups = {(path, method): operation["tags"] for path, method, operation in operations(schema)}

    assert {key: tags for key, tags in groups.items() if len(tags) != 1} == {}
    assert groups[("/logout", "post")] == ["auth"]


def test_every_operation_documents_its_errors_with_their_bodies(schema):
    for path, method, operation in operations(schema):
        if path in OPERATIONS:
            continue
        responses = operation["responses"]
        expected = {"429", "500", "503"}
        if (path, method) not in PUBLIC:
            expected.add("401")
        assert expected <= responses.keys(), (path, method)
        for status in expected:
            assert "application/json" in responses[status]["content"], (path, method, status)
        assert "Retry-After" in responses["429"]["headers"]
        if "401" in responses:
            assert "WWW-Authenticate" in responses["401"]["headers"]


def test_admin_and_ownership_errors_are_documented(schema):
    paths = schema["paths"]
    assert "403" in paths["/users"]["get"]["responses"]
    assert "404" in paths["/tasks/{task_id}"]["get"]["responses"]
    assert "412" in paths["/tasks/{task_id}"]["patch"]["responses"]
    assert "409" in paths["/register"]["post"]["responses"]
    assert "422" in paths["/login"]["post"]["responses"]


def test_login_takes_json_or_the_oauth2_form_and_swagger_can_authorize(schema):
    content = schema["paths"]["/login"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= content.keys()
    flows = schema["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]
    assert flows["password"]["tokenUrl"] == "/login"


def test_the_auth_aliases_are_served_but_hidden(schema, client):
    assert not any(path.startswith("/auth/") for path in schema["paths"])
    assert client.post("/auth/login", json={}).status_code == 422


def test_only_operations_that_need_a_token_declare_one(client):
    paths = client.get("/openapi.json").json()["paths"]
    public = {("get", "/health"), ("get", "/ready"), ("post", "/register"), ("post", "/login"), ("post", "/refresh")}

    for path, operations in paths.items():
        for method, operation in operations.items():
            assert ("security" in operation) != ((method, path) in public), (method, path)
