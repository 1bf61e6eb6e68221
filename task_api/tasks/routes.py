from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from sqlalchemy import Row

from task_api.auth.deps import Caller
from task_api.db import SessionDep
from task_api.errors import error_responses
from task_api.pagination import MAX_OFFSET
from task_api.responses import ModelResponse
from task_api.tasks import service
from task_api.tasks.schemas import TaskCreate, TaskOut, TaskPage, TaskQuery, TaskReplace, TaskUpdate, etag_of

router = APIRouter(prefix="/tasks", tags=["tasks"])
TaskId = Annotated[int, Path(ge=1, le=MAX_OFFSET)]
IfMatch = Annotated[str | None, Header(description="Write only if the task still has this ETag")]

ETAG_HEADER = {"ETag": {"description": "The task's version, for If-Match", "schema": {"type": "string"}}}


def _task_response(task: Row[Any], status_code: int = 200, **headers: str) -> ModelResponse:
    response = ModelResponse(TaskOut.model_validate(task), status_code, headers)
    response.headers["ETag"] = etag_of(response.body)
    return response


@router.post(
    "",
    status_code=201,
    response_model=TaskOut,
    responses={
        201: {"headers": {**ETAG_HEADER, "Location": {"schema": {"type": "string"}}}},
        **error_responses(401, 413),
    },
)
def create_task(data: TaskCreate, session: SessionDep, caller: Caller) -> ModelResponse:
    task = service.create_task(session, caller.user_id, data)
    return _task_response(task, 201, Location=f"/tasks/{task.id}")


@router.get("", response_model=TaskPage, responses=error_responses(401))
def list_tasks(query: Annotated[TaskQuery, Query()], session: SessionDep, caller: Caller) -> ModelResponse:
    tasks, total = service.list_tasks(session, caller.user_id, query)
    return ModelResponse(TaskPage(items=tasks, total=total, limit=query.limit, offset=query.offset))


@router.get(
    "/{task_id}", response_model=TaskOut, responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404)}
)
def read_task(task_id: TaskId, session: SessionDep, caller: Caller) -> ModelResponse:
    return _task_response(service.get_task(session, caller.user_id, task_id))


@router.put(
    "/{task_id}",
    response_model=TaskOut,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404, 412, 413)},
)
def replace_task(
    task_id: TaskId,
    data: TaskReplace,
    session: SessionDep,
    caller: Caller,
    if_match: IfMatch = None,
) -> ModelResponse:
    return _task_response(service.update_task(session, caller.user_id, task_id, data.model_dump(), if_match))


@router.patch(
    "/{task_id}",
    response_model=TaskOut,
    responses={200: {"headers": ETAG_HEADER}, **error_responses(401, 404, 412, 413)},
)
def update_task(
    task_id: TaskId,
    data: TaskUpdate,
    session: SessionDep,
    caller: Caller,
    if_match: IfMatch = None,
) -> ModelResponse:
    changes = data.model_dump(exclude_unset=True)
    return _task_response(service.update_task(session, caller.user_id, task_id, changes, if_match))


@router.delete("/{task_id}", status_code=204, responses=error_responses(401, 404))
def delete_task(task_id: TaskId, session: SessionDep, caller: Caller) -> Response:
    service.delete_task(session, caller.user_id, task_id)
    return Response(status_code=204)
