"""What every API request meets first: its rate limit and its token's revocation check.

A pure ASGI middleware, on the event loop: one Redis round trip (redis.asyncio) spends the
caller's budget (the user's with a live token, the address's without) and learns whether the
token's login is alive, before routing, body parsing or any database work, and without a
threadpool step. Routes read what it found through `Caller` (auth/deps.py).
"""

from fastapi.security.utils import get_authorization_scheme_param
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from task_api.auth.tokens import TokenType
from task_api.errors import RateLimited, app_error, redis_unavailable
from task_api.ratelimit import client_address
from task_api.runtime import Runtime


class GuardMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime, unlimited: frozenset[str], unlimited_prefix: str) -> None:
        self.app = app
        self.runtime = runtime
        self.unlimited = unlimited
        self.unlimited_prefix = unlimited_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.unlimited or path.startswith(self.unlimited_prefix):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await self._check(request)
        except RateLimited as exc:
            await app_error(request, exc)(scope, receive, send)
        except RedisError as exc:
            await redis_unavailable(request, exc)(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _check(self, request: Request) -> None:
        """Spend the budget every limited route shares and leave the caller, or why there is
        none, on the request's state."""
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        bearer = scheme.lower() == "bearer" and bool(token)
        claims = self.runtime.tokens.decode(token, TokenType.access) if bearer else None
        limiter = self.runtime.limiter
        address = f"all:addr:{client_address(request)}"
        if claims is None:
            await limiter.spend(request, limiter.default, address)
            request.state.auth_error = "Invalid or expired token" if bearer else "Not authenticated"
            return
        family = self.runtime.tokens.family_key(claims)
        if await limiter.spend(request, limiter.default, f"all:user:{claims.sub}", unless_missing=(family, address)):
            request.state.user_id = claims.user_id
            request.state.caller = claims
        else:
            request.state.auth_error = "Token has been revoked"
