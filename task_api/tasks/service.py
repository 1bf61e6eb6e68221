from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Row, ScalarSelect, Select, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from task_api.db import end_read, utcnow, writing
from task_api.errors import NotFound, PreconditionFailed, Unauthorized
from task_api.tasks.models import Task, TaskCount, TaskPriority
from task_api.tasks.schemas import TaskCreate, TaskOut, TaskQuery

TASK_NOT_FOUND = "Task not found"

PRIORITY_RANK = case({TaskPriority.low: 0, TaskPriority.medium: 1, TaskPriority.high: 2}, value=Task.priority)
SORT_KEYS: dict[str, ColumnElement[Any]] = {
    "created_at": Task.created_at,
    "due_date": Task.due_date,
    "priority": PRIORITY_RANK,
    "title": Task.title,
}


def create_task(session: Session, owner_id: int, data: TaskCreate) -> Task:
    task = Task(owner_id=owner_id, **data.model_dump())
    session.add(task)
    try:
        session.commit()
    except IntegrityError:
        # the owner was deleted after their token was checked: the token is dead now
        raise Unauthorized("Token has been revoked") from None
    return task


def get_task(session: Session, owner_id: int, task_id: int) -> Task:
    task = _owned_task(session, owner_id, task_id)
    end_read(session)
    return task


def list_tasks(session: Session, owner_id: int, filters: TaskQuery) -> tuple[Sequence[Row[Any]], int]:
    """One page of the owner's tasks (plain rows: a read-only page needs no ORM objects) and the
    count of all that match, in one query where it can."""
    rows = session.execute(page_statement(owner_id, filters)).all()
    total = rows[0].total if rows else session.scalar(select(_total(owner_id, filters))) or 0
    end_read(session)
    return rows, total


def page_statement(owner_id: int, filters: TaskQuery) -> Select[Any]:
    """The page of tasks, each row carrying the count of all matches (`total`)."""
    descending = filters.sort.startswith("-")
    key = SORT_KEYS[filters.sort.removeprefix("-")]
    order = (key.desc(), Task.id.desc()) if descending else (key.asc(), Task.id.asc())
    if filters.sort.endswith("due_date"):
        order = (order[0].nulls_last(), order[1])
    return (
        _filtered(select(*Task.__table__.columns), owner_id, filters)
        .add_columns(_total(owner_id, filters).label("total"))
        .order_by(*order)
        .limit(filters.limit)
        .offset(filters.offset)
    )


def _total(owner_id: int, filters: TaskQuery) -> ScalarSelect[int]:
    """How many tasks match: read from `task_counts` when at most status and priority filter (a
    few rows, however many tasks the owner has), counted over the matching rows otherwise."""
    if filters.q is not None or filters.due_before is not None or filters.due_after is not None:
        return _filtered(select(func.count()).select_from(Task), owner_id, filters).scalar_subquery()
    counted = select(func.coalesce(func.sum(TaskCount.n), 0)).where(TaskCount.owner_id == owner_id)
    if filters.status:
        counted = counted.where(TaskCount.status.in_(filters.status))
    if filters.priority:
        counted = counted.where(TaskCount.priority.in_(filters.priority))
    return counted.scalar_subquery()


def update_task(session: Session, owner_id: int, task_id: int, changes: dict[str, Any], if_match: str | None) -> Task:
    """Apply `changes`; with `If-Match`, only to the version the client last saw.

    Without If-Match the write is one UPDATE ... RETURNING. With it, the row is locked while
    its ETag is compared and it is written, so no concurrent write can slip in between.
    """
    if if_match is None:
        if not changes:
            return get_task(session, owner_id, task_id)
        updated = session.scalar(
            update(Task)
            .where(Task.id == task_id, Task.owner_id == owner_id)
            .values(**changes, updated_at=utcnow())
            .returning(Task)
        )
        session.commit()
        if updated is None:
            raise NotFound(TASK_NOT_FOUND)
        return updated
    with writing(session):
        task = _owned_task(session, owner_id, task_id, for_update=True)
        if not etag_matches(if_match, TaskOut.model_validate(task).etag):
            raise PreconditionFailed("The task has changed since the given ETag")
        for field, value in changes.items():
            setattr(task, field, value)
    return task


def delete_task(session: Session, owner_id: int, task_id: int) -> None:
    deleted = session.scalar(delete(Task).where(Task.id == task_id, Task.owner_id == owner_id).returning(Task.id))
    session.commit()
    if deleted is None:
        raise NotFound(TASK_NOT_FOUND)


def etag_matches(if_match: str, etag: str) -> bool:
    """RFC 9110 strong comparison against an If-Match list (`*` matches any current version)."""
    candidates = [candidate.strip() for candidate in if_match.split(",")]
    return "*" in candidates or etag in candidates


def _owned_task(session: Session, owner_id: int, task_id: int, *, for_update: bool = False) -> Task:
    """The task if `owner_id` owns it: another user's task is missing by construction."""
    stmt = select(Task).where(Task.id == task_id, Task.owner_id == owner_id)
    task = session.scalar(stmt.with_for_update() if for_update else stmt)
    if task is None:
        raise NotFound(TASK_NOT_FOUND)
    return task


def _filtered(stmt: Select[Any], owner_id: int, filters: TaskQuery) -> Select[Any]:
    stmt = stmt.where(Task.owner_id == owner_id)
    if filters.status:
        stmt = stmt.where(Task.status.in_(filters.status))
    if filters.priority:
        stmt = stmt.where(Task.priority.in_(filters.priority))
    if filters.q:
        pattern = "%" + filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(Task.title.ilike(pattern, escape="\\"), Task.description.ilike(pattern, escape="\\")))
    if filters.due_before is not None:
        stmt = stmt.where(Task.due_date < filters.due_before)
    if filters.due_after is not None:
        stmt = stmt.where(Task.due_date > filters.due_after)
    return stmt
