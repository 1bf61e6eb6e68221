from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from task_api.auth.deps import AdminUser, CurrentUser
from task_api.db import SessionDep
from task_api.errors import error_responses
from task_api.pagination import MAX_OFFSET, PageParams, page_params
from task_api.runtime import get_runtime
from task_api.schemas import Page
from task_api.users import service
from task_api.users.schemas import AdminUserCreate, UserOut, UserReplace, UserUpdate

router = APIRouter(prefix="/users", tags=["users"])
UserId = Annotated[int, Path(ge=1, le=MAX_OFFSET)]


def _rounds(request: Request) -> int:
    return get_runtime(request).settings.bcrypt_rounds


@router.get("/me", responses=error_responses(401))
def read_me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)


@router.patch("/me", responses=error_responses(401, 409, 413))
def update_me(data: UserUpdate, request: Request, session: SessionDep, user: CurrentUser) -> UserOut:
    changes = data.model_dump(exclude_unset=True)
    return UserOut.model_validate(service.update_user(session, user, changes, user, _rounds(request)))


@router.delete("/me", status_code=204, responses=error_responses(401))
def delete_me(session: SessionDep, user: CurrentUser) -> Response:
    service.delete_user(session, user)
    return Response(status_code=204)


@router.get("", responses=error_responses(401, 403))
def list_users(
    session: SessionDep, admin: AdminUser, page: Annotated[PageParams, Depends(page_params)]
) -> Page[UserOut]:
    users, total = service.list_users(session, page.limit, page.offset)
    items = [UserOut.model_validate(user) for user in users]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post("", status_code=201, responses=error_responses(401, 403, 409, 413))
def create_user(
    data: AdminUserCreate, request: Request, response: Response, session: SessionDep, admin: AdminUser
) -> UserOut:
    user = service.create_user(session, data, _rounds(request))
    response.headers["Location"] = f"/users/{user.id}"
    return UserOut.model_validate(user)


@router.get("/{user_id}", responses=error_responses(401, 403, 404))
def read_user(user_id: UserId, session: SessionDep, caller: CurrentUser) -> UserOut:
    return UserOut.model_validate(service.get_user(session, user_id, caller))


@router.put("/{user_id}", responses=error_responses(401, 403, 404, 409, 413))
def replace_user(
    user_id: UserId, data: UserReplace, request: Request, session: SessionDep, caller: CurrentUser
) -> UserOut:
    user = service.get_user(session, user_id, caller)
    changes = data.model_dump(exclude_unset=True)
    changes.setdefault("name", None)
    return UserOut.model_validate(service.update_user(session, user, changes, caller, _rounds(request)))


@router.delete("/{user_id}", status_code=204, responses=error_responses(401, 403, 404))
def delete_user(user_id: UserId, session: SessionDep, caller: CurrentUser) -> Response:
    service.delete_user(session, service.get_user(session, user_id, caller))
    return Response(status_code=204)
