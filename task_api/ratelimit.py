"""One request budget per client across every route, kept in Redis by slowapi's limiter.

slowapi's middleware and decorators are not used: its middleware does blocking Redis
I/O on the event loop, skips decorated routes and keys per URL, and its decorators run
only after the route's other dependencies. Instead a plain dependency, declared first
on every router, spends the budget before any other work happens.
"""

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis import ConnectionPool
from slowapi import Limiter
from starlette.requests import Request

from task_api.config import Settings
from task_api.errors import RateLimited


@dataclass(frozen=True)
class Quota:
    limit: int
    remaining: int
    reset_at: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class RateLimiter:
    def __init__(self, settings: Settings, pool: ConnectionPool) -> None:
        slowapi_limiter = Limiter(
            key_func=client_address,
            strategy="moving-window",
            storage_uri="redis://",  # the connection itself comes from the shared pool
            storage_options={"connection_pool": pool},
        )
        self._strategy = slowapi_limiter.limiter
        self.default = parse(settings.rate_limit)
        self.auth = parse(settings.auth_rate_limit)

    def spend(self, request: Request, item: RateLimitItem, scope: str, client: str) -> None:
        """Count this request against `client`'s budget; 429 once it is spent.

        The tightest quota seen while serving the request is left on `request.state`
        for the middleware that writes the X-RateLimit-* headers.
        """
        allowed = self._strategy.hit(item, "rl", scope, client)
        reset_at, remaining = self._strategy.get_window_stats(item, "rl", scope, client)
        quota = Quota(limit=item.amount, remaining=max(remaining, 0), reset_at=math.ceil(reset_at))
        previous: Quota | None = getattr(request.state, "quota", None)
        if previous is None or quota.remaining < previous.remaining:
            request.state.quota = quota
        if not allowed:
            retry_after = max(math.ceil(reset_at - time.time()), 1)
            raise RateLimited(
                f"Rate limit exceeded: {item}. Try again in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
