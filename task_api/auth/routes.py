import json
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Cookie, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from task_api.auth import service
from task_api.auth.deps import Caller, CurrentUser
from task_api.auth.schemas import LoginRequest, RefreshRequest, UsernameAsEmail
from task_api.auth.tokens import TokenPair
from task_api.db import SessionDep
from task_api.errors import Forbidden, error_responses
from task_api.gate import spend_auth_budget
from task_api.responses import ModelResponse
from task_api.runtime import get_runtime
from task_api.users import service as users_service
from task_api.users.schemas import UserCreate, UserOut

REFRESH_COOKIE = "refresh_token"
# The cookie goes to the routes that read it, under either layout, and to no other: a
# cookie's Path is a prefix, and /refresh and /logout share none but "/". So it is set once
# per path.
REFRESH_COOKIE_PATHS = ("/refresh", "/logout", "/auth")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
LOGIN_FORM_SCHEMA = {
    "type": "object",
    "required": ["username", "password"],
    "properties": {
        "username": {"type": "string", "format": "email", "description": "The account's e-mail"},
        "password": {"type": "string", "description": "8 to 72 bytes in UTF-8"},
        "grant_type": {"type": "string", "enum": ["password"]},
        "scope": {"type": "string"},
    },
}

router = APIRouter(tags=["auth"])
tokens_router = APIRouter()  # tagged by the router that includes it
# The same routes for clients written against the `/auth/` layout, which send `username`
# for `email`; kept out of the schema.
auth_layout = APIRouter(prefix="/auth", include_in_schema=False)
RefreshCookie = Annotated[str | None, Cookie(alias=REFRESH_COOKIE, include_in_schema=False)]


class LoginCredentials:
    """Credentials from a JSON body, read by `json_body`, or from the OAuth2 password form
    (Swagger UI's *Authorize*)."""

    def __init__(self, json_body: TypeAdapter[LoginRequest]) -> None:
        self.json_body = json_body

    async def __call__(self, request: Request) -> LoginRequest:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            _refuse_cross_site(request)
        if content_type in FORM_TYPES:
            form = await request.form()
            data: Any = {"email": form.get("username"), "password": form.get("password")}
            adapter, rename = LOGIN_FORM, {"email": "username"}
        else:
            try:
                data = json.loads(await request.body())
            except (ValueError, RecursionError):
                error = {"type": "json_invalid", "loc": ["body"], "msg": "Body must be JSON or an OAuth2 form"}
                raise RequestValidationError([error]) from None
            adapter, rename = self.json_body, {}
        try:
            return adapter.validate_python(data)
        except ValidationError as exc:
            errors = [
                {**error, "loc": ["body", *(rename.get(str(part), part) for part in error["loc"])]}
                for error in exc.errors(include_url=False, include_context=False)
            ]
            raise RequestValidationError(errors) from None


def _refuse_cross_site(request: Request) -> None:
    """A page on any site can make a browser post a form (or text/plain, which this route would
    read as JSON) without asking: from another site's page it would log the browser in to an
    account of that site's choosing (login CSRF). Browsers send `Origin` with such posts;
    clients that send none are not browsers. Only JSON needs a CORS preflight, so it passes."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    # The host alone: behind a proxy that ends TLS the scheme seen here may not be the page's.
    own = urlsplit(origin).netloc == request.headers.get("host")
    if not own and origin not in get_runtime(request).settings.allowed_origins:
        raise Forbidden("Cross-site login forms are refused: post JSON, or from this service's own origin")


LOGIN_FORM = TypeAdapter(LoginRequest)
LOGIN_BY_USERNAME = TypeAdapter(Annotated[LoginRequest, UsernameAsEmail])


@router.post(
    "/register",
    status_code=201,
    response_model=UserOut,
    dependencies=[Depends(spend_auth_budget)],
    responses=error_responses(409, 413),
)
def register(data: UserCreate, request: Request, session: SessionDep) -> ModelResponse:
    user = users_service.create_user(session, data, get_runtime(request).settings.bcrypt_rounds)
    return ModelResponse(UserOut.model_validate(user), 201, {"Location": f"/users/{user.id}"})


@router.post(
    "/login",
    response_model=TokenPair,
    dependencies=[Depends(spend_auth_budget)],
    responses={
        422: {
            "description": "Validation Error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
        },
        **error_responses(401, 403, 413),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": LoginRequest.model_json_schema()},
                "application/x-www-form-urlencoded": {"schema": LOGIN_FORM_SCHEMA},
            },
        }
    },
)
def login(
    credentials: Annotated[LoginRequest, Depends(LoginCredentials(LOGIN_FORM))],
    request: Request,
    session: SessionDep,
) -> ModelResponse:
    runtime = get_runtime(request)
    pair = service.login(
        session, runtime.tokens, credentials.email, credentials.password, runtime.settings.bcrypt_rounds
    )
    return _pair_response(request, pair)


@auth_layout.post("/register", status_code=201, dependencies=[Depends(spend_auth_budget)])
def register_by_username(
    data: Annotated[UserCreate, UsernameAsEmail], request: Request, session: SessionDep
) -> ModelResponse:
    return register(data, request, session)


@auth_layout.post("/login", dependencies=[Depends(spend_auth_budget)])
def login_by_username(
    credentials: Annotated[LoginRequest, Depends(LoginCredentials(LOGIN_BY_USERNAME))],
    request: Request,
    session: SessionDep,
) -> ModelResponse:
    return login(credentials, request, session)


@tokens_router.post("/refresh", response_model=TokenPair, responses=error_responses(401, 413))
def refresh(
    request: Request,
    session: SessionDep,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> ModelResponse:
    pair = service.refresh(session, get_runtime(request).tokens, body.refresh_token if body else cookie)
    return _pair_response(request, pair)


@tokens_router.post("/logout", status_code=204, responses=error_responses(401, 413))
def logout(
    request: Request,
    caller: Caller,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> Response:
    service.logout(get_runtime(request).tokens, caller, body.refresh_token if body else cookie)
    response = Response(status_code=204)
    for path in _refresh_cookie_paths(request):
        response.delete_cookie(REFRESH_COOKIE, path=path, httponly=True, samesite="strict")
    return response


@tokens_router.post("/logout/all", status_code=204, responses=error_responses(401))
def logout_all(request: Request, user: CurrentUser, session: SessionDep) -> Response:
    service.logout_everywhere(session, get_runtime(request).tokens, user)
    return Response(status_code=204)


def _pair_response(request: Request, pair: TokenPair) -> ModelResponse:
    """The pair as JSON, and the refresh token again as cookies for the routes that read it."""
    runtime = get_runtime(request)
    response = ModelResponse(pair)
    for path in _refresh_cookie_paths(request):
        response.set_cookie(
            REFRESH_COOKIE,
            pair.refresh_token,
            max_age=int(runtime.tokens.refresh_ttl.total_seconds()),
            path=path,
            secure=runtime.settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )
    return response


def _refresh_cookie_paths(request: Request) -> list[str]:
    root = request.scope.get("root_path", "")
    return [root + path for path in REFRESH_COOKIE_PATHS]


router.include_router(tokens_router)
auth_layout.include_router(tokens_router)
