from dataclasses import dataclass
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


async def access_claims(request: Request, token: BearerToken) -> Claims | None:
    """The access token's claims when it is well signed and unexpired (no I/O: not yet checked for
    revocation)."""
    if token is None:
        return None
    return get_runtime(request).tokens.decode(token, TokenType.access)


AccessClaims = Annotated[Claims | None, Depends(access_claims)]


def rate_limit(request: Request, claims: AccessClaims) -> None:
    """The budget every limited route shares: the user's with a valid token, the address's without."""
    limiter = get_runtime(request).limiter
    client = f"user:{claims.sub}" if claims else f"addr:{client_address(request)}"
    limiter.spend(request, limiter.default, "all", client)


def auth_rate_limit(request: Request) -> None:
    """The stricter per-address budget of /login and /register."""
    limiter = get_runtime(request).limiter
    limiter.spend(request, limiter.auth, "auth", f"addr:{client_address(request)}")


@dataclass(frozen=True)
class Authenticated:
    user: User
    claims: Claims


def authenticate(request: Request, session: SessionDep, token: BearerToken, claims: AccessClaims) -> Authenticated:
    if token is None:
        raise Unauthorized("Not authenticated")
    if claims is None:
        raise Unauthorized("Invalid or expired token")
    if not get_runtime(request).tokens.is_live(claims):
        raise Unauthorized("Token has been revoked")
    user = session.get(User, claims.user_id)
    end_read(session)
    if user is None or user.token_version != claims.ver:
        raise Unauthorized("Token has been revoked")
    request.state.user_id = user.id
    return Authenticated(user, claims)


Caller = Annotated[Authenticated, Depends(authenticate)]


async def current_user(caller: Caller) -> User:
    return caller.user


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("Admin privileges required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]
