"""Who is calling, for the routes that need to know.

The gate (gate.py) has checked the bearer token's login in the request's one Redis round
trip; `Caller` only reads what it found, with no I/O. Routes that need the user's row ask
for `CurrentUser`, which loads it.
"""

from typing import Annotated

from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

from task_api.auth.tokens import Claims
from task_api.db import SessionDep, end_step
from task_api.errors import Forbidden, Unauthorized
from task_api.gate import Gate
from task_api.users.models import User

# Declares the scheme in the OpenAPI schema, so Swagger UI sends the token; the gate reads it.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/login", auto_error=False)
DeclaredBearer = Annotated[str | None, Depends(oauth2_scheme)]


async def require_caller(context: Gate, _: DeclaredBearer) -> Claims:
    """The claims of the caller's live token, as the gate found them."""
    if context.caller is None:
        raise Unauthorized(context.refusal)
    return context.caller


Caller = Annotated[Claims, Depends(require_caller)]


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
