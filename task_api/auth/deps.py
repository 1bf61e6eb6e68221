"""Rate limits and who is calling.

Every limited route first runs `spend_budget` (a router dependency): one Redis round trip
spends the caller's budget and checks the bearer token's revocation, before any database
work. `Caller` then costs no I/O; routes that need the user's row ask for `CurrentUser`,
which loads it.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from task_api.auth.tokens import Claims
from task_api.db import SessionDep, end_step
from task_api.errors import Forbidden, Unauthorized
from task_api.runtime import get_runtime
from task_api.users.models import User

bearer_token = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
BearerToken = Annotated[str | None, Depends(bearer_token)]


def spend_budget(request: Request) -> None:
    """The budget every limited route shares, the user's or the address's."""
    get_runtime(request).guard.check(request)


def spend_auth_budget(request: Request) -> None:
    """The stricter per-address budget of /login and /register."""
    get_runtime(request).guard.check_auth(request)


async def authenticate(request: Request, _: BearerToken) -> Claims:
    """The claims of the caller's live token, as `spend_budget` found them (`BearerToken` declares the
    scheme in the OpenAPI schema, so Swagger UI sends the token)."""
    caller: Claims | None = getattr(request.state, "caller", None)
    if caller is None:
        raise Unauthorized(request.state.auth_error)
    return caller


Caller = Annotated[Claims, Depends(authenticate)]


def current_user(caller: Caller, session: SessionDep) -> User:
    user = session.get(User, caller.user_id)
    end_step(session)
    if user is None or user.token_version != caller.ver:
        raise Unauthorized("Token has been revoked")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("Admin privileges required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
