"""Who is calling, in as few threadpool steps and round trips as possible.

`guard` runs first on every limited route, on the event loop: it spends the caller's rate
limit and checks that the token's login is alive in one Redis round trip, with no database
work and no threadpool step. Routes that need the user's row ask for `CurrentUser`, which
loads it.
"""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from task_api.auth.tokens import Claims, TokenType
from task_api.db import SessionDep, end_read
from task_api.errors import Forbidden, Unauthorized
from task_api.ratelimit import client_address
from task_api.runtime import get_runtime
from task_api.users.models import User

bearer_token = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
BearerToken = Annotated[str | None, Depends(bearer_token)]


async def guard(request: Request, token: BearerToken) -> None:
    """Spend the budget every limited route shares (the user's with a live token, the address's
    without) and learn whether the token's login is alive."""
    runtime = get_runtime(request)
    claims = runtime.tokens.decode(token, TokenType.access) if token else None
    address = f"all:addr:{client_address(request)}"
    if claims is None:
        live = await runtime.limiter.spend(request, runtime.limiter.default, address)
    else:
        family = runtime.tokens.family_key(claims)
        live = await runtime.limiter.spend(
            request, runtime.limiter.default, f"all:user:{claims.sub}", unless_missing=(family, address)
        )
    if token is None:
        request.state.auth_error = "Not authenticated"
    elif claims is None:
        request.state.auth_error = "Invalid or expired token"
    elif not live:
        request.state.auth_error = "Token has been revoked"
    else:
        request.state.user_id = claims.user_id
        request.state.caller = claims


async def auth_rate_limit(request: Request) -> None:
    """The stricter per-address budget of /login and /register."""
    limiter = get_runtime(request).limiter
    await limiter.spend(request, limiter.auth, f"auth:addr:{client_address(request)}")


async def authenticate(request: Request, _: Annotated[None, Depends(guard)]) -> Claims:
    """The claims of the caller's live token, as `guard` found them (FastAPI runs `guard` once per
    request, however often it is named)."""
    caller: Claims | None = getattr(request.state, "caller", None)
    if caller is None:
        raise Unauthorized(request.state.auth_error)
    return caller


Caller = Annotated[Claims, Depends(authenticate)]


def current_user(caller: Caller, session: SessionDep) -> User:
    user = session.get(User, caller.user_id)
    end_read(session)
    if user is None or user.token_version != caller.ver:
        raise Unauthorized("Token has been revoked")
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("Admin privileges required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
