from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from task_api.auth.deps import CurrentUser
from task_api.db import SessionDep
from task_api.errors import error_responses
from task_api.pagination import MAX_OFFSET
from task_api.schemas import Page
from task_api.tasks import service
from task_api.tasks.models import Task
from task_api.tasks.schemas import TaskCreate, TaskOut, TaskQuery, TaskReplace, TaskUpdate

router = APIRouter(prefix="/tasks", tags=["tasks"])
TaskId = Annotated[int, Path(ge=1, le=MAX_OFFSET)]
IfMatch = Annotated[str | None, Header(description="Write only if the task still has this ETag")]

ETAG_HEADER = {"ETag": {"description": "The task's version, for If-Match", "schema": {"type": "string"}}}


def _with_etag(task: Task, response: Response) -> TaskOut:
    out = TaskOut.model_validate(task)
    response.headers["ETag"] = out.etag
    return out


@router.post(
    "",
    status_code=201,
    responses={
        201: {"headers": {**ETAG_HEADER, "Location": {"schema": {"type": "string"}}}},
        **error_responses(401, 413),
    },
)
def create_task(data: TaskCreate, response: Response, session: SessionDep, user: CurrentUser) -> TaskOut:
    task = service.create_task(session, user.id, data)
    response.headers["Location"] = f"/tasks/{task.id}"
    return _with_etag(task, response)


@router.get("", responses=error_responses(401))
def list_tasks(query: Annotated[TaskQuery, Query()], session: SessionDep, user: CurrentUser) -> Page[TaskOut]:
    tasks, total = service.list_tasks(session, user.id, query)
    items = [TaskOut.model_validate(task) for task in tasks]
    return Page(items=items, total=total, limit=query.limit, offset=query.offset)


@router.get("/{task_id}", responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404)})
def read_task(task_id: TaskId, response: Response, session: SessionDep, user: CurrentUser) -> TaskOut:
    return _with_etag(service.get_task(session, user.id, task_id), response)


@router.put("/{task_id}", responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404, 412, 413)})
def replace_task(
    task_id: TaskId,
    data: TaskReplace,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    if_match: IfMatch = None,
) -> TaskOut:
    task = service.update_task(session, user.id, task_id, data.model_dump(), if_match)
    return _with_etag(task, response)


@router.patch("/{task_id}", responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404, 412, 413)})
def update_task(
    task_id: TaskId,
    data: TaskUpdate,
    response: Response,
    session: SessionDep,
    user: CurrentUser,
    if_match: IfMatch = None,
) -> TaskOut:
    task = service.update_task(session, user.id, task_id, data.model_dump(exclude_unset=True), if_match)
    return _with_etag(task, response)


@router.delete("/{task_id}", status_code=204, responses=error_responses(401, 404))
def delete_task(task_id: TaskId, session: SessionDep, user: CurrentUser) -> Response:
    service.delete_task(session, user.id, task_id)
    return Response(status_code=204)
