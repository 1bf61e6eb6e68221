"""The gate every limited request passes first: who is calling, and may they spend.

auth/ decodes the bearer token (no I/O); then one Redis round trip checks that the token's
login is alive and belongs to its subject, and spends the caller's budget (ratelimit.py:
slowapi's Limiter decides). The route gets the typed RequestContext; a 429 comes before any
database work.

Every limited router includes `Depends(gate)`, and `Caller` depends on it too (FastAPI runs
it once a request), so a route that needs the caller is gated even if its router forgot;
`require_gate` refuses to build an app with a limited route that is not.
"""

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from task_api.auth.tokens import TokenType, bearer_token
from task_api.context import RequestContext, request_context
from task_api.errors import HANDLERS, ErrorHandler, RateLimited, answer
from task_api.runtime import get_runtime

# Never rate-limited: the probes, and the docs with the assets they load.
UNLIMITED = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
DOCS_ASSETS = "/static-offline-docs/"


def gate(request: Request) -> RequestContext:
    runtime = get_runtime(request)
    context = request_context(request)
    context.gated = True
    token = bearer_token(request.headers.get("Authorization"))
    claims = None if token is None else runtime.tokens.decode(token, TokenType.access)
    login = None if claims is None else runtime.tokens.login_key(claims)
    alive = runtime.rate_limits.spend(request, context, None if claims is None else claims.sub, login)
    if alive:
        context.caller = claims
    elif token is not None:
        context.refusal = "Invalid or expired token" if claims is None else "Token has been revoked"
    return context


Gate = Annotated[RequestContext, Depends(gate)]


def spend_auth_budget(request: Request, context: Gate) -> None:
    """The stricter per-address budget of every password check."""
    get_runtime(request).rate_limits.spend_auth(request, context)


def is_limited(path: str) -> bool:
    return path not in UNLIMITED and not path.startswith(DOCS_ASSETS)


def require_gate(app: FastAPI) -> None:
    """Refuse to build an app with a limited route that does not pass the gate."""
    for route in iter_route_contexts(app.routes):  # included routers' routes too, as the schema sees them
        dependant = getattr(route, "dependant", None)  # a FastAPI route's; the docs' plain routes have none
        if dependant is not None and is_limited(route.path or "") and not _depends_on_gate(dependant):
            raise RuntimeError(f"{route.path} is not gated: include its router with dependencies=[Depends(gate)]")


def _depends_on_gate(dependant: Dependant) -> bool:
    return dependant.call is gate or any(_depends_on_gate(sub) for sub in dependant.dependencies)


def gate_failures_before_routes(app: FastAPI) -> None:
    """A request that fails before its route's gate can run (an unknown path, a wrong method,
    a body that cannot be decoded) passes the gate on its way out, and may be refused there."""
    for error in (HTTPException, RequestValidationError):
        app.add_exception_handler(error, _gated(HANDLERS[error]))


def _gated(handler: ErrorHandler) -> ErrorHandler:
    def gated_handler(request: Request, exc: Exception) -> Response:
        if is_limited(request.url.path) and not request_context(request).gated:
            try:
                gate(request)
            except (RateLimited, RedisError) as refused:
                return answer(request, refused)
        return handler(request, exc)

    return gated_handler
