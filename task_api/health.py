"""Liveness and readiness: never rate-limited, no auth."""

import threading
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from task_api.errors import UNAVAILABLE_HEADERS, ServerErrorBody
from task_api.metrics import DEPENDENCY_ERRORS
from task_api.runtime import Runtime, get_runtime

router = APIRouter(tags=["operations"])

Check = Literal["ok", "unavailable"]


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Check
    database: Check
    redis: Check


UNEXPECTED: dict[int | str, dict[str, Any]] = {500: {"model": ServerErrorBody, "description": "Unexpected error"}}
READINESS_KEPT_SECONDS = 1.0


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
    body = last_readiness.get(get_runtime(request))
    healthy = body.status == "ok"
    return JSONResponse(
        body.model_dump(),
        status_code=200 if healthy else 503,
        headers=None if healthy else UNAVAILABLE_HEADERS,
    )


class LastReadiness:
    """The last readiness check of this process, answered again for a second, failures too: a
    flood of probes costs at most one PostgreSQL and one Redis round trip a second. Callers
    that come while a check runs wait for it and take its result."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last: tuple[Runtime, float, Readiness] | None = None  # checked for, kept until, found

    def get(self, runtime: Runtime) -> Readiness:
        with self.lock:
            if self.last is None or self.last[0] is not runtime or time.monotonic() >= self.last[1]:
                readiness = check_readiness(runtime)
                self.last = (runtime, time.monotonic() + READINESS_KEPT_SECONDS, readiness)
            return self.last[2]


def check_readiness(runtime: Runtime) -> Readiness:
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
    return Readiness(status="ok" if healthy else "unavailable", database=database, redis=redis)


last_readiness = LastReadiness()  # one per process; a check for another app's runtime (tests) is a new one
