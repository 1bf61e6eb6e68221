import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_api.context import STATE_KEY, RequestContext
from task_api.logs import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
BODY_HEADERS = frozenset({"content-type", "content-length"})
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("task_api.access")


class RequestContextMiddleware:
    """Gives each request its RequestContext, writes the headers the gate left there, and
    logs one line per request.

    Pure ASGI, touching only headers, so it never blocks the event loop.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        request_id = sent_id if SANE_REQUEST_ID.fullmatch(sent_id) else uuid.uuid4().hex
        context = RequestContext(request_id)
        scope.setdefault("state", {})[STATE_KEY] = context
        request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                headers.update(context.rate_limit_headers)
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 2)
            user_id = context.user_id
            access_log.info(
                "%s %s %s %.2fms user=%s",
                scope["method"],
                scope["path"],
                status,
                duration_ms,
                user_id,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                    "user_id": user_id,
                },
            )


class TrailingSlashMiddleware:
    """Answers `/tasks/` as `/tasks` and `/tasks/7/` as `/tasks/7`, for clients written for
    layouts that end every path with a slash: the same route, with no redirect."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path[:-1]}
        await self.app(scope, receive, send)


class BodySizeLimitMiddleware:
    """Answers 413 to a body over `max_bytes`: at once from Content-Length, or as soon as a
    streamed body passes the limit, so an oversized body is never read whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._detail())
            return message

        await self.app(scope, receive_within_limit, send)

    def _detail(self) -> str:
        return f"Request body is larger than {self.max_bytes} bytes"

    def _too_large(self) -> JSONResponse:
        return JSONResponse({"detail": self._detail()}, status_code=413)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, answering preflights like every other answer: a 204 when allowed, a
    JSON 400 saying what is not."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        headers = {name: value for name, value in answer.headers.items() if name not in BODY_HEADERS}
        if answer.status_code == 200:
            return Response(status_code=204, headers=headers)
        return JSONResponse({"detail": bytes(answer.body).decode()}, status_code=answer.status_code, headers=headers)
