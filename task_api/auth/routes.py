import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Cookie, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from task_api.auth import service
from task_api.auth.deps import Caller, CurrentUser, spend_auth_budget
from task_api.auth.schemas import LoginRequest, RefreshRequest
from task_api.auth.tokens import TokenPair
from task_api.db import SessionDep
from task_api.errors import error_responses
from task_api.responses import ModelResponse
from task_api.runtime import get_runtime
from task_api.users import service as users_service
from task_api.users.schemas import UserCreate, UserOut

REFRESH_COOKIE = "refresh_token"
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
RefreshCookie = Annotated[str | None, Cookie(alias=REFRESH_COOKIE, include_in_schema=False)]


async def login_credentials(request: Request) -> LoginRequest:
    """Credentials from a JSON body or from the OAuth2 password form (Swagger UI's *Authorize*)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in FORM_TYPES:
        form = await request.form()
        data: Any = {"email": form.get("username"), "password": form.get("password")}
        rename = {"email": "username"}
    else:
        try:
            data = json.loads(await request.body())
        except (ValueError, RecursionError):
            error = {"type": "json_invalid", "loc": ["body"], "msg": "Body must be JSON or an OAuth2 form"}
            raise RequestValidationError([error]) from None
        rename = {}
    try:
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        errors = [
            {**error, "loc": ["body", *(rename.get(str(part), part) for part in error["loc"])]}
            for error in exc.errors(include_url=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


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
        **error_responses(401, 413),
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
    credentials: Annotated[LoginRequest, Depends(login_credentials)],
    request: Request,
    session: SessionDep,
) -> ModelResponse:
    runtime = get_runtime(request)
    pair = service.login(
        session, runtime.tokens, credentials.email, credentials.password, runtime.settings.bcrypt_rounds
    )
    return _pair_response(request, pair)


@router.post("/refresh", response_model=TokenPair, responses=error_responses(401, 413))
def refresh(
    request: Request,
    session: SessionDep,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> ModelResponse:
    pair = service.refresh(session, get_runtime(request).tokens, body.refresh_token if body else cookie)
    return _pair_response(request, pair)


@router.post("/logout", status_code=204, responses=error_responses(401, 413))
def logout(
    request: Request,
    caller: Caller,
    cookie: RefreshCookie = None,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> Response:
    service.logout(get_runtime(request).tokens, caller, body.refresh_token if body else cookie)
    response = Response(status_code=204)
    response.delete_cookie(REFRESH_COOKIE, path=_refresh_cookie_path(request), httponly=True, samesite="strict")
    return response


@router.post("/logout/all", status_code=204, responses=error_responses(401))
def logout_all(request: Request, user: CurrentUser, session: SessionDep) -> Response:
    service.logout_everywhere(session, get_runtime(request).tokens, user)
    return Response(status_code=204)


def _pair_response(request: Request, pair: TokenPair) -> ModelResponse:
    """The pair as JSON, and the refresh token again as a cookie only /refresh receives."""
    runtime = get_runtime(request)
    response = ModelResponse(pair)
    response.set_cookie(
        REFRESH_COOKIE,
        pair.refresh_token,
        max_age=int(runtime.tokens.refresh_ttl.total_seconds()),
        path=_refresh_cookie_path(request),
        secure=runtime.settings.cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response


def _refresh_cookie_path(request: Request) -> str:
    """`/refresh`, or `/auth/refresh` for a call made under the `/auth/` aliases."""
    return request.scope.get("root_path", "") + request.scope["path"].rsplit("/", 1)[0] + "/refresh"
