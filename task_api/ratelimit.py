"""Request budgets: slowapi's Limiter, on a Redis storage that answers in one round trip.

Two fixed-window budgets (slowapi's default strategy, `limits`' fixed window):
- `all`: one per client across every limited route: the user's with a valid access token,
  the client address's otherwise;
- `auth`: a stricter one per address for /login and /register.

slowapi checks a limit by asking its storage to increment the budget, then, for the
X-RateLimit-* headers, for the budget's count and TTL: three round trips. `BudgetStorage`
makes them one: its increment script returns the count and the TTL, which then answer the
two reads of the same check. The token check rides along: a bearer's budget is spent only
while the token's login (its family key) exists, and its address's budget otherwise, so a
revoked token cannot drain its owner's budget; the script says which it was.

What this relies on in slowapi 0.1.10 and limits 5.8 (pinned; tests/test_ratelimit.py
checks each): a check calls the storage's `incr`, then `get` and `get_expiry` for the
headers, in the thread that runs it; a shared limit's identifiers are `(key, scope)`;
`Limiter._inject_headers` writes the headers of the limit a check kept; and a request
marked `_rate_limiting_complete` skips its later checks.
"""

import math
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from fastapi.security.utils import get_authorization_scheme_param
from limits import parse
from limits.storage import RedisStorage
from redis import Redis
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.requests import Request
from starlette.responses import Response

from task_api.auth.tokens import Tokens, TokenType
from task_api.config import Settings
from task_api.errors import RateLimited
from task_api.metrics import RATE_LIMITED

ALL = "all"
AUTH = "auth"
HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

# KEYS: the budget to spend; optionally then the budget to spend instead and the key that
# decides between them: KEYS[1] while KEYS[3] exists (the token's login is alive), KEYS[2]
# otherwise. ARGV: the window in milliseconds, the cost.
# Returns the count, the milliseconds until the window resets, and 1 or 0 for KEYS[3].
SPEND_SCRIPT = """
local budget = KEYS[1]
local alive = 0
if #KEYS == 3 then
  alive = redis.call('EXISTS', KEYS[3])
  if alive == 0 then
    budget = KEYS[2]
  end
end
local count = redis.call('INCRBY', budget, ARGV[2])
local ttl = redis.call('PTTL', budget)
if ttl < 0 then
  redis.call('PEXPIRE', budget, ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl, alive}
"""


@dataclass
class Spend:
    """One check's exchange with the storage, beyond what `limits` passes it."""

    conditions: dict[str, tuple[str, str]] = field(default_factory=dict)  # budget: (key that must exist, else budget)
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # budget: (count, reset time)
    alive: bool = False


_spend: ContextVar[Spend | None] = ContextVar("spend", default=None)


class BudgetStorage(RedisStorage):
    """limits' Redis storage, spending a budget and learning its window in one script call."""

    STORAGE_SCHEME = ["task-api+redis"]

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self._spend_script = self.get_connection().register_script(SPEND_SCRIPT)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        spend = _spend.get() or Spend()
        keys = [self.prefixed_key(key)]
        if key in spend.conditions:
            alive_key, instead = spend.conditions[key]
            keys += [self.prefixed_key(instead), alive_key]
        count, ttl_ms, alive = self._spend_script(keys=keys, args=[expiry * 1000, amount])
        spend.alive = bool(alive)
        # The reset time in whole seconds, rounded down: slowapi adds one for X-RateLimit-Reset.
        spend.windows[key] = (int(count), math.floor(time.time() + int(ttl_ms) / 1000))
        return int(count)

    def get(self, key: str) -> int:
        window = self._window(key)
        return super().get(key) if window is None else window[0]

    def get_expiry(self, key: str) -> float:
        window = self._window(key)
        return super().get_expiry(key) if window is None else window[1]

    @staticmethod
    def _window(key: str) -> tuple[int, int] | None:
        spend = _spend.get()
        return None if spend is None else spend.windows.get(key)


def within_budget(request: Request, response: Response) -> None:
    """The `all` limit, checked by slowapi's decorator around it."""


def within_auth_budget(request: Request, response: Response) -> None:
    """The `auth` limit, checked by slowapi's decorator around it."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _address_key(request: Request) -> str:
    return f"addr:{client_address(request)}"


def _budget_key(request: Request) -> str:
    key: str = request.state.budget_key
    return key


class Guard:
    """Spends each limited request's budgets, and checks its bearer token on the way."""

    def __init__(
        self, settings: Settings, tokens: Tokens, redis: Redis, unlimited: frozenset[str], unlimited_prefix: str
    ) -> None:
        self._tokens = tokens
        self._unlimited = unlimited
        self._unlimited_prefix = unlimited_prefix
        self._all = parse(settings.rate_limit)
        self.limiter = Limiter(
            key_func=_address_key,
            strategy="fixed-window",
            storage_uri=f"{BudgetStorage.STORAGE_SCHEME[0]}://",
            storage_options={"connection_pool": redis.connection_pool},  # type: ignore[dict-item]
            headers_enabled=True,
            swallow_errors=False,  # fail closed: a storage error is a 503, never a request let through
            in_memory_fallback_enabled=False,
        )
        _refuse_fail_open(self.limiter)
        self._check_all = self.limiter.shared_limit(settings.rate_limit, scope=ALL, key_func=_budget_key)(within_budget)
        self._check_auth = self.limiter.shared_limit(settings.auth_rate_limit, scope=AUTH)(within_auth_budget)

    def check(self, request: Request) -> None:
        """Spend the `all` budget, and leave on the request's state the caller whose login is
        alive (`caller`), or why there is none (`auth_error`)."""
        request.state.budget_checked = True
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        bearer = scheme.lower() == "bearer" and bool(token)
        claims = self._tokens.decode(token, TokenType.access) if bearer else None
        address = _address_key(request)
        spend = Spend()
        if claims is None:
            request.state.budget_key = address
        else:
            request.state.budget_key = f"user:{claims.sub}"
            budget = self._all.key_for(request.state.budget_key, ALL)
            spend.conditions[budget] = (self._tokens.family_key(claims), self._all.key_for(address, ALL))
        self._run(self._check_all, ALL, request, spend)
        if claims is None:
            request.state.auth_error = "Invalid or expired token" if bearer else "Not authenticated"
        elif spend.alive:
            request.state.caller = claims
            request.state.user_id = claims.user_id
        else:
            request.state.auth_error = "Token has been revoked"

    def check_auth(self, request: Request) -> None:
        self._run(self._check_auth, AUTH, request, Spend())

    def check_late(self, request: Request) -> None:
        """Spend the budget of a request that failed before its route's dependencies ran (an
        unknown path, a wrong method, a body that could not be read), unless its path is unlimited."""
        path = request.url.path
        limited = path not in self._unlimited and not path.startswith(self._unlimited_prefix)
        if limited and not getattr(request.state, "budget_checked", False):
            self.check(request)

    def _run(self, check: object, budget: str, request: Request, spend: Spend) -> None:
        """Run one decorated check; keep the tightest budget's headers for the response."""
        sink = Response()
        request.state._rate_limiting_complete = False  # slowapi's mark that skips any later check of the request
        reset = _spend.set(spend)
        try:
            check(request=request, response=sink)  # type: ignore[operator]
        except RateLimitExceeded as exc:
            self.limiter._inject_headers(sink, request.state.view_rate_limit)
            _keep_tightest(request, sink)
            retry_after = str(max(int(sink.headers["Retry-After"]), 1))
            RATE_LIMITED.labels(budget).inc()
            raise RateLimited(
                f"Rate limit exceeded: {exc.detail}. Try again in {retry_after} seconds.",
                headers={"Retry-After": retry_after},
            ) from None
        finally:
            _spend.reset(reset)
        _keep_tightest(request, sink)


def _keep_tightest(request: Request, sink: Response) -> None:
    headers = {name: sink.headers[name] for name in HEADERS}
    kept: dict[str, str] | None = getattr(request.state, "rate_limit_headers", None)
    if kept is None or int(headers["X-RateLimit-Remaining"]) < int(kept["X-RateLimit-Remaining"]):
        request.state.rate_limit_headers = headers


def _refuse_fail_open(limiter: Limiter) -> None:
    """slowapi also reads RATELIMIT_* variables from the environment and `.env`; none may turn
    the limits off, make them fail open, or change their keys or headers."""
    if (
        not limiter.enabled
        or limiter._swallow_errors
        or limiter._in_memory_fallback_enabled
        or limiter._key_prefix
        or sorted(limiter._header_mapping.values()) != sorted([*HEADERS, "Retry-After"])
    ):
        raise ValueError(
            "Unset the RATELIMIT_* variables: RATE_LIMIT and AUTH_RATE_LIMIT set the limits, and they fail closed"
        )
