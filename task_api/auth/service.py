from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from task_api.auth.tokens import Claims, RotationResult, TokenPair, Tokens, TokenType
from task_api.db import end_step
from task_api.errors import Unauthorized
from task_api.users.models import User
from task_api.users.service import authenticate

BAD_CREDENTIALS = "Incorrect e-mail or password"
BAD_REFRESH_TOKEN = "Invalid or expired refresh token"


def login(session: Session, tokens: Tokens, email: str, password: str, bcrypt_rounds: int) -> TokenPair:
    user = authenticate(session, email, password, bcrypt_rounds)
    if user is None:
        raise Unauthorized(BAD_CREDENTIALS)
    pair = tokens.start_family(user.id, user.token_version)
    if pair is None:  # the password changed while it was being checked
        raise Unauthorized(BAD_CREDENTIALS)
    return pair


def refresh(session: Session, tokens: Tokens, refresh_token: str | None) -> TokenPair:
    claims = tokens.decode(refresh_token, TokenType.refresh) if refresh_token else None
    if claims is None:
        raise Unauthorized(BAD_REFRESH_TOKEN)
    user = session.get(User, claims.user_id)
    end_step(session)
    if user is None or user.token_version != claims.ver:
        raise Unauthorized(BAD_REFRESH_TOKEN)
    result, pair = tokens.rotate(claims, user.token_version)
    if result is RotationResult.reused:
        raise Unauthorized("Refresh token reuse detected: this session has been revoked")
    if pair is None:
        raise Unauthorized(BAD_REFRESH_TOKEN)
    return pair


def logout(tokens: Tokens, access: Claims, refresh_token: str | None) -> None:
    """End the login behind `access`, and the one behind `refresh_token` if it is the same user's."""
    refresh_claims = tokens.decode(refresh_token, TokenType.refresh) if refresh_token else None
    if refresh_claims is not None and refresh_claims.sub == access.sub:
        tokens.end_logins(access, refresh_claims)
    else:
        tokens.end_logins(access)


def logout_everywhere(session: Session, tokens: Tokens, user: User) -> None:
    """Bump the user's token version, then, once that has committed, revoke in Redis."""
    user.token_version += 1
    try:
        session.commit()
    except StaleDataError:  # the user was deleted meanwhile: their tokens are dead already
        session.rollback()
        raise Unauthorized("Token has been revoked") from None
    tokens.revoke_user(user.id, user.token_version)
