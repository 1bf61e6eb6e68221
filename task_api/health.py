"""Liveness and readiness: never rate-limited, no auth."""

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from task_api.errors import UNAVAILABLE_HEADERS, ServerErrorBody
from task_api.metrics import DEPENDENCY_ERRORS
from task_api.runtime import get_runtime

router = APIRouter(tags=["operations"])

Check = Literal["ok", "unavailable"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Check
    database: Check
    redis: Check


UNEXPECTED = {500: {"model": ServerErrorBody, "description": "Unexpected error"}}


@router.get("/health", responses=UNEXPECTED)
async def health() -> Health:
    """The process is up; touches nothing."""
    return Health()


@router.get(
    "/ready",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "A dependency is unreachable; the failing part is named"},
        **UNEXPECTED,
    },
)
def ready(request: Request) -> JSONResponse:
    """PostgreSQL and Redis both answer."""
    runtime = get_runtime(request)
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        database: Check = "ok"
    except SQLAlchemyError:
        DEPENDENCY_ERRORS.labels("postgresql").inc()
        database = "unavailable"
    try:
        runtime.redis.ping()
        redis: Check = "ok"
    except RedisError:
        DEPENDENCY_ERRORS.labels("redis").inc()
        redis = "unavailable"
    healthy = database == redis == "ok"
    body = Readiness(status="ok" if healthy else "unavailable", database=database, redis=redis)
    return JSONResponse(
        body.model_dump(),
        status_code=200 if healthy else 503,
        headers=None if healthy else UNAVAILABLE_HEADERS,
    )
