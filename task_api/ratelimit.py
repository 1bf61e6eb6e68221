"""Request budgets: slowapi's Limiter decides, on a Redis storage that answers in one round trip.

Two fixed-window budgets (slowapi's default strategy, `limits`' fixed window):
- `all`: one per client across every limited route: the user's while their token's login
  lives, the client address's otherwise;
- `auth`: a stricter one per address, spent by every password check (/login, /register,
  `current_password`).

`BudgetStorage.incr` runs one script that spends the budget and returns its count and TTL,
which give the X-RateLimit-* headers without asking Redis again. The login check rides along:
given a login key (gate.py), the script spends the user's budget only while that key exists,
and the address's otherwise, and says which it was; so a revoked or forged token cannot drain
its owner's budget, and the request still costs one round trip.

What this relies on in slowapi 0.1.10 and limits 5.8, beyond their public API (both pinned;
`test_the_slowapi_internals_the_adapter_relies_on` checks each):
- a decorated check calls the storage's `incr` in the caller's thread and context, so the
  `Charge` in `_charging` reaches it;
- slowapi marks a checked request `request.state._rate_limiting_complete` and skips its later
  checks; one request may spend two budgets, so the mark is cleared before each;
- a shared limit's storage key is the limit's `key_for(key, scope)`, behind the storage's
  `prefixed_key`;
- `Limiter` reads RATELIMIT_* settings into `enabled`, `_swallow_errors`,
  `_in_memory_fallback_enabled`, `_key_prefix` and `_headers_enabled`, read back to refuse any
  that would let a request through unchecked or change the keys.
"""

import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import RedisStorage
from redis import Redis
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.requests import Request

from task_api.config import Settings
from task_api.context import RequestContext
from task_api.errors import RateLimited
from task_api.metrics import RATE_LIMITED

ALL = "all"
AUTH = "auth"
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")

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
class Charge:
    """One check's errand to the storage, and what the storage found.

    Three kinds of key: `key` is what slowapi's key function returns, which limits makes into
    a budget's storage key; `instead` is another budget's storage key, made by the limit's
    `key_for` as slowapi would; `login` is a token store key (auth/tokens.py), used as it is.
    """

    key: str  # whose budget: `user:<id>` or `addr:<address>`
    instead: str | None = None  # the budget spent instead while...
    login: str | None = None  # ...this key does not exist
    count: int = 0
    reset: int = 0  # when the window ends, in whole seconds since the epoch
    alive: bool = False  # whether `login` existed


_charging: ContextVar[Charge] = ContextVar("charging")


class BudgetStorage(RedisStorage):
    """limits' Redis storage, spending a budget and learning its window in one script call."""

    STORAGE_SCHEME = ["task-api+redis"]

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self._spend_script = self.get_connection().register_script(SPEND_SCRIPT.encode())

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        charge = _charging.get()
        keys = [self.prefixed_key(key)]
        if charge.login is not None and charge.instead is not None:
            keys += [self.prefixed_key(charge.instead), charge.login]
        count, ttl_ms, alive = self._spend_script(keys=keys, args=[expiry * 1000, amount])
        charge.count, charge.alive = int(count), bool(alive)
        charge.reset = math.floor(time.time() + int(ttl_ms) / 1000)
        return charge.count


def all_budget(request: Request) -> None:
    """Where slowapi hangs the `all` limit: its decorator checks it around this call."""


def auth_budget(request: Request) -> None:
    """Where slowapi hangs the `auth` limit."""


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _charged_key() -> str:
    return _charging.get().key


class RateLimits:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._all = parse(settings.rate_limit)
        self._auth = parse(settings.auth_rate_limit)
        self.limiter = Limiter(
            key_func=_charged_key,
            strategy="fixed-window",
            storage_uri=f"{BudgetStorage.STORAGE_SCHEME[0]}://",
            storage_options={"connection_pool": redis.connection_pool},  # type: ignore[dict-item]
            swallow_errors=False,  # fail closed: a storage error is a 503, never a request let through
            in_memory_fallback_enabled=False,
        )
        _refuse_fail_open(self.limiter)
        self._check_all = self.limiter.shared_limit(settings.rate_limit, scope=ALL)(all_budget)
        self._check_auth = self.limiter.shared_limit(settings.auth_rate_limit, scope=AUTH)(auth_budget)

    def spend(self, request: Request, context: RequestContext, user: str | None, login: str | None) -> bool:
        """Spend the `all` budget: `user`'s while the `login` key exists, else the address's.
        Whether the login exists (False without one)."""
        address = f"addr:{client_address(request)}"
        if user is None or login is None:
            charge = Charge(address)
        else:
            charge = Charge(f"user:{user}", instead=self._all.key_for(address, ALL), login=login)
        self._run(self._check_all, self._all, ALL, request, context, charge)
        return charge.alive

    def spend_auth(self, request: Request, context: RequestContext) -> None:
        self._run(self._check_auth, self._auth, AUTH, request, context, Charge(f"addr:{client_address(request)}"))

    @staticmethod
    def _run(
        check: Callable[..., None],
        limit: RateLimitItem,
        budget: str,
        request: Request,
        context: RequestContext,
        charge: Charge,
    ) -> None:
        """Run one slowapi check; keep the tightest budget's headers for the response."""
        request.state._rate_limiting_complete = False
        token = _charging.set(charge)
        try:
            check(request=request)
            refused = False
        except RateLimitExceeded:
            refused = True
        finally:
            _charging.reset(token)
        values = (limit.amount, max(limit.amount - charge.count, 0), charge.reset + 1)
        headers = dict(zip(RATE_LIMIT_HEADERS, map(str, values), strict=True))
        kept = context.rate_limit_headers
        if not kept or int(headers["X-RateLimit-Remaining"]) < int(kept["X-RateLimit-Remaining"]):
            context.rate_limit_headers = headers
        if refused:
            retry_after = str(max(int(charge.reset + 1 - time.time()), 1))
            RATE_LIMITED.labels(budget).inc()
            raise RateLimited(
                f"Rate limit exceeded: {limit}. Try again in {retry_after} seconds.",
                headers={"Retry-After": retry_after},
            )


def _refuse_fail_open(limiter: Limiter) -> None:
    """slowapi also reads RATELIMIT_* variables from the environment and `.env`; none may turn
    the limits off, make them fail open, or change their keys or headers."""
    if (
        not limiter.enabled
        or limiter._swallow_errors
        or limiter._in_memory_fallback_enabled
        or limiter._key_prefix
        or limiter._headers_enabled
    ):
        raise ValueError(
            "Unset the RATELIMIT_* variables: RATE_LIMIT and AUTH_RATE_LIMIT set the limits, and they fail closed"
        )
