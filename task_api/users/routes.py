from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from task_api.auth.deps import AdminUser, CurrentUser
from task_api.db import SessionDep
from task_api.errors import error_responses
from task_api.gate import Gate, spend_auth_budget
from task_api.pagination import MAX_OFFSET, PageParams, page_params
from task_api.responses import ModelResponse
from task_api.runtime import get_runtime
from task_api.schemas import Page
from task_api.users import service
from task_api.users.models import User
from task_api.users.schemas import AdminUserCreate, UserOut, UserReplace, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])


async def spend_auth_budget_if_password_sent(request: Request, context: Gate) -> None:
    """The auth budget, for a body that carries `current_password`: a password check.

    FastAPI has parsed a JSON body already, so reading it costs nothing; a body it could not
    parse is answered by its own validation. The spend takes a thread only when there is one.
    """
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        return
    if isinstance(body, dict) and body.get("current_password") is not None:
        await run_in_threadpool(spend_auth_budget, request, context)


# Spent before the user's row is loaded: a 429 does no database work.
PasswordCheckBudget = Annotated[None, Depends(spend_auth_budget_if_password_sent)]
UserId = Annotated[int, Path(ge=1, le=MAX_OFFSET)]


def _update(request: Request, session: Session, user: User, changes: dict[str, Any], actor: User) -> ModelResponse:
    runtime = get_runtime(request)
    user = service.update_user(session, runtime.tokens, user, changes, actor, runtime.settings.bcrypt_rounds)
    return ModelResponse(UserOut.model_validate(user))


@router.get("/me", response_model=UserOut, responses=error_responses(401))
def read_me(user: CurrentUser) -> ModelResponse:
    return ModelResponse(UserOut.model_validate(user))


@router.patch("/me", response_model=UserOut, responses=error_responses(401, 409, 413))
def update_me(
    data: UserUpdate, request: Request, session: SessionDep, _: PasswordCheckBudget, user: CurrentUser
) -> ModelResponse:
    changes = data.model_dump(exclude_unset=True)
    return _update(request, session, user, changes, user)


@router.delete("/me", status_code=204, responses=error_responses(401, 409))
def delete_me(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    service.delete_user(session, get_runtime(request).tokens, user)
    return Response(status_code=204)


@router.get("", response_model=Page[UserOut], responses=error_responses(401, 403))
def list_users(
    session: SessionDep, admin: AdminUser, page: Annotated[PageParams, Depends(page_params)]
) -> ModelResponse:
    users, total = service.list_users(session, page.limit, page.offset)
    items = [UserOut.model_validate(user) for user in users]
    return ModelResponse(Page(items=items, total=total, limit=page.limit, offset=page.offset))


@router.post("", status_code=201, response_model=UserOut, responses=error_responses(401, 403, 409, 413))
def create_user(data: AdminUserCreate, request: Request, session: SessionDep, admin: AdminUser) -> ModelResponse:
    user = service.create_user(session, data, get_runtime(request).settings.bcrypt_rounds)
    return ModelResponse(UserOut.model_validate(user), 201, {"Location": f"/users/{user.id}"})


@router.get("/{user_id}", response_model=UserOut, responses=error_responses(401, 403, 404))
def read_user(user_id: UserId, session: SessionDep, caller: CurrentUser) -> ModelResponse:
    return ModelResponse(UserOut.model_validate(service.get_user(session, user_id, caller)))


@router.put("/{user_id}", response_model=UserOut, responses=error_responses(401, 403, 404, 409, 413))
def replace_user(
    user_id: UserId,
    data: UserReplace,
    request: Request,
    session: SessionDep,
    _: PasswordCheckBudget,
    caller: CurrentUser,
) -> ModelResponse:
    user = service.get_user(session, user_id, caller)
    changes = data.model_dump(exclude_unset=True)
    changes.setdefault("name", None)
    return _update(request, session, user, changes, caller)


@router.delete("/{user_id}", status_code=204, responses=error_responses(401, 403, 404, 409))
def delete_user(user_id: UserId, request: Request, session: SessionDep, caller: CurrentUser) -> Response:
    service.delete_user(session, get_runtime(request).tokens, service.get_user(session, user_id, caller))
    return Response(status_code=204)
