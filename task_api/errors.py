"""Domain exceptions and the one place that turns every error into its JSON answer."""

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException

from task_api.context import request_context
from task_api.metrics import DEPENDENCY_ERRORS

logger = logging.getLogger(__name__)

UNAVAILABLE_HEADERS = {"Retry-After": "5"}


class ErrorBody(BaseModel):
    detail: str


class AppError(Exception):
    status_code = 500
    headers: dict[str, str] = {}

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers is not None:
            self.headers = headers


class Unauthorized(AppError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class PreconditionFailed(AppError):
    status_code = 412


class RateLimited(AppError):
    status_code = 429


def _json(status_code: int, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def _app_error(_: Request, exc: AppError) -> JSONResponse:
    if isinstance(exc, InvalidField):
        error = {"type": "value_error", "loc": ["body", exc.field], "msg": exc.detail}
        return _json(exc.status_code, [error])
    return _json(exc.status_code, exc.detail, exc.headers)


def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 400:
        # FastAPI answers 400 to a body it cannot decode (not UTF-8, say); the contract says 422.
        error = {"type": "body_invalid", "loc": ["body"], "msg": "Request body could not be decoded"}
        return _json(422, [error])
    return _json(exc.status_code, exc.detail, exc.headers)


def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 shape, holding only what the contract names (`loc`, `msg`, `type`): the
    rejected input is not echoed back, so a refused password never travels in a response."""
    errors = [{"type": error["type"], "loc": error["loc"], "msg": error["msg"]} for error in exc.errors()]
    return _json(422, errors)


def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    DEPENDENCY_ERRORS.labels("postgresql").inc()
    logger.warning("database unavailable: %s", type(exc).__name__)
    return _json(503, "Database unavailable", UNAVAILABLE_HEADERS)


def _redis_unavailable(_: Request, exc: RedisError) -> JSONResponse:
    DEPENDENCY_ERRORS.labels("redis").inc()
    logger.warning("redis unavailable: %s", type(exc).__name__)
    return _json(503, "Token and rate-limit store unavailable", UNAVAILABLE_HEADERS)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    request_id = request_context(request).request_id
    logger.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {"detail": "Internal Server Error", "request_id": request_id},
        status_code=500,
        headers={"X-Request-ID": request_id},
    )


ErrorHandler = Callable[[Request, Any], Response]
HANDLERS: dict[type[Exception], ErrorHandler] = {
    AppError: _app_error,
    HTTPException: _http_error,
    RequestValidationError: _validation_error,
    OperationalError: _database_unavailable,
    InterfaceError: _database_unavailable,
    PoolTimeoutError: _database_unavailable,
    RedisError: _redis_unavailable,
    Exception: _unexpected,
}


def answer(request: Request, exc: Exception) -> Response:
    """The answer to `exc`, from the handler of its nearest class."""
    handler = next(HANDLERS[kind] for kind in type(exc).__mro__ if kind in HANDLERS)
    return handler(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)


class InvalidField(AppError):
    """A value that passed the schema but not a rule that needs the database; answered like a 422
    from FastAPI's own validation."""

    status_code = 422

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class ServerErrorBody(ErrorBody):
    request_id: str


_DESCRIPTIONS = {
    401: "Missing, invalid, expired or revoked token",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    412: "The If-Match ETag is stale",
    413: "Request body too large",
    429: "Rate limit exceeded",
    500: "Unexpected error",
    503: "Database or Redis unreachable",
}
_HEADERS = {
    401: {"WWW-Authenticate": "Bearer"},
    429: {"Retry-After": "Seconds until the budget allows another request"},
    503: {"Retry-After": "Seconds to wait before retrying"},
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the errors an operation can answer, beyond FastAPI's own 422.

    Every limited operation can answer 429, 500 and 503; pass the rest.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in sorted({*statuses, 429, 500, 503}):
        entry: dict[str, Any] = {
            "model": ServerErrorBody if status == 500 else ErrorBody,
            "description": _DESCRIPTIONS[status],
        }
        if status in _HEADERS:
            entry["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in _HEADERS[status].items()
            }
        responses[status] = entry
    return responses
