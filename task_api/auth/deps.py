"""Who is calling, as the guard (auth/guard.py) found out before the route ran.

`Caller` costs no I/O: the guard already checked the token and its revocation. Routes that
need the user's row ask for `CurrentUser`, which loads it.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from task_api.auth.tokens import Claims
from task_api.db import SessionDep, end_step
from task_api.errors import Forbidden, Unauthorized
from task_api.ratelimit import client_address
from task_api.runtime import get_runtime
from task_api.users.models import User

bearer_token = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
BearerToken = Annotated[str | None, Depends(bearer_token)]


async def auth_rate_limit(request: Request) -> None:
    """The stricter per-address budget of /login and /register."""
    limiter = get_runtime(request).limiter
    await limiter.spend(request, limiter.auth, f"auth:addr:{client_address(request)}")


async def authenticate(request: Request, _: BearerToken) -> Claims:
    """The claims of the caller's live token, as the guard found them (`BearerToken` declares the
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
