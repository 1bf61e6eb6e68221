from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from task_api.auth.passwords import hash_password, verify_password
from task_api.auth.tokens import Tokens
from task_api.db import end_step, writing
from task_api.errors import Conflict, Forbidden, InvalidField, NotFound
from task_api.users.models import User
from task_api.users.schemas import AdminUserCreate, UserCreate

EMAIL_TAKEN = "A user with this e-mail already exists"
LAST_ADMIN = "This is the last admin: make another admin first"
USER_NOT_FOUND = "User not found"


def create_user(session: Session, data: UserCreate | AdminUserCreate, bcrypt_rounds: int) -> User:
    user = User(
        email=data.email,
        name=data.name,
        password_hash=hash_password(data.password, bcrypt_rounds),
        is_admin=getattr(data, "is_admin", False),
    )
    with _committed(session):
        session.add(user)
    return user


def authenticate(session: Session, email: str, password: str, bcrypt_rounds: int) -> User | None:
    user = get_user_by_email(session, email)
    end_step(session)
    password_hash = user.password_hash if user else None
    return user if verify_password(password, password_hash, bcrypt_rounds) else None


def get_user(session: Session, user_id: int, actor: User) -> User:
    """The user `actor` may see: themselves, or anyone for an admin."""
    if user_id == actor.id:
        return actor
    if not actor.is_admin:
        raise Forbidden("You may only access your own account")
    user = session.get(User, user_id)
    end_step(session)
    if user is None:
        raise NotFound(USER_NOT_FOUND)
    return user


def list_users(session: Session, limit: int, offset: int) -> tuple[list[User], int]:
    users = list(session.scalars(select(User).order_by(User.id).limit(limit).offset(offset)))
    total = session.scalar(select(func.count()).select_from(User)) or 0
    end_step(session)
    return users, total


def update_user(
    session: Session, tokens: Tokens, user: User, changes: dict[str, Any], actor: User, bcrypt_rounds: int
) -> User:
    """Apply `changes` (already validated) to `user` as `actor`.

    Users changing their own e-mail or password confirm it with the current one. A new e-mail
    or password revokes every token the user holds, once the change has committed: a change
    that fails (a taken e-mail, the last admin) leaves every token working.
    """
    if changes.get("is_admin", user.is_admin) != user.is_admin and not actor.is_admin:
        raise Forbidden("Only an admin may change is_admin")
    current_password = changes.pop("current_password", None)
    password = changes.pop("password", None)
    if changes.get("email") == user.email:  # the address it already has: no change
        del changes["email"]
    revokes = password is not None or "email" in changes
    if revokes and actor.id == user.id:
        if current_password is None:
            raise InvalidField("current_password", "current_password is required to change your e-mail or password")
        if not verify_password(current_password, user.password_hash, bcrypt_rounds):
            raise InvalidField("current_password", "current_password is incorrect")
    if password is not None:
        changes["password_hash"] = hash_password(password, bcrypt_rounds)
    if revokes:
        changes["token_version"] = user.token_version + 1
    changes = {field: value for field, value in changes.items() if getattr(user, field) != value}
    if not changes:
        return user
    with _committed(session, unseating=user if changes.get("is_admin") is False else None):
        for field, value in changes.items():
            setattr(user, field, value)
    if revokes:
        tokens.revoke_user(user.id, user.token_version)
    return user


def delete_user(session: Session, tokens: Tokens, user: User) -> None:
    """Delete the user and their tasks, then, once that has committed, revoke their tokens."""
    user_id, new_version = user.id, user.token_version + 1
    with _committed(session, unseating=user if user.is_admin else None):
        session.delete(user)
    tokens.revoke_user(user_id, new_version)


def _keep_another_admin(session: Session, user: User) -> None:
    """Refuse to leave no admin once `user` is one no more.

    Every admin's row is locked (on SQLite `writing` holds the write lock already), so two
    admins demoting or deleting each other at once cannot both succeed.
    """
    admins = session.scalars(select(User.id).where(User.is_admin).with_for_update()).all()
    if set(admins) <= {user.id}:
        raise Conflict(LAST_ADMIN)


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == email))


def promote_to_admin(session: Session, user: User, password: str, bcrypt_rounds: int) -> bool:
    """For the command line: make `user` an admin, given that account's own password; False when it
    already was one.

    Whoever registered an address first does not become an admin just because the operator
    names that address: only someone who knows the account's password may promote it.
    """
    if not verify_password(password, user.password_hash, bcrypt_rounds):
        raise Forbidden(
            f"{user.email} is already registered and the password given is not its own:"
            " an existing account is made an admin only with its own password"
        )
    if user.is_admin:
        return False
    user.is_admin = True
    session.commit()
    return True


@contextmanager
def _committed(session: Session, unseating: User | None = None) -> Iterator[None]:
    """Commit what the block changes, answering the failures that are the client's to hear: an
    e-mail another account has (409), a user deleted by another request after this one loaded
    the row (404).

    A change that is one statement commits as it runs. One `unseating` an admin (a demotion, a
    deletion) runs in a transaction that first locks every admin's row, so that it can refuse
    to leave no admin.
    """
    try:
        if unseating is None:
            yield
            session.commit()
        else:
            with writing(session):
                _keep_another_admin(session, unseating)
                yield
    except IntegrityError:
        session.rollback()
        raise Conflict(EMAIL_TAKEN) from None
    except StaleDataError:
        session.rollback()
        raise NotFound(USER_NOT_FOUND) from None
