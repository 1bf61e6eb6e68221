"""Request budgets kept in Redis: one per client across every route, plus a stricter one for
/login and /register.

A budget is a fixed window that opens at the client's first request (the strategy of
slowapi's default, `limits`' fixed window; `limits` parses the limit strings). One Lua
script spends the budget and, in the same round trip, answers whether a given key
exists, which is how the token check rides along: a limited, authenticated
request costs one Redis round trip in all, where slowapi's storage calls took three.
"""

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis.asyncio import Redis
from starlette.requests import Request

from task_api.config import Settings
from task_api.errors import RateLimited

KEY_PREFIX = "rl:"

# KEYS: the budget to spend; optionally then the budget to spend instead, and the key that
# decides between them: spend KEYS[1] if KEYS[3] exists (the token's login is alive),
# KEYS[2] otherwise, so a revoked token cannot drain its owner's budget.
# ARGV: the window in milliseconds. Returns the count, the ms until reset, and 1 or 0 for KEYS[3].
SPEND_SCRIPT = """
local budget = KEYS[1]
local alive = 0
if #KEYS == 3 then
  alive = redis.call('EXISTS', KEYS[3])
  if alive == 0 then
    budget = KEYS[2]
  end
end
local count = redis.call('INCR', budget)
local ttl = redis.call('PTTL', budget)
if ttl < 0 then
  redis.call('PEXPIRE', budget, ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl, alive}
"""


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
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.default = parse(settings.rate_limit)
        self.auth = parse(settings.auth_rate_limit)
        self._spend = redis.register_script(SPEND_SCRIPT)

    async def spend(
        self, request: Request, item: RateLimitItem, key: str, unless_missing: tuple[str, str] | None = None
    ) -> bool:
        """Count this request against the `key` budget; 429 once it is spent.

        With `unless_missing=(check, other)`, the budget is `key` only while the Redis key
        `check` exists, `other` otherwise; returns whether `check` exists (False without one).
        The tightest quota seen is left on `request.state` for the X-RateLimit-* headers.
        """
        keys = [KEY_PREFIX + key]
        if unless_missing is not None:
            check, other = unless_missing
            keys += [KEY_PREFIX + other, check]
        count, ttl_ms, alive = await self._spend(keys=keys, args=[item.get_expiry() * 1000])
        reset_at = math.ceil(time.time() + ttl_ms / 1000)
        quota = Quota(limit=item.amount, remaining=max(item.amount - count, 0), reset_at=reset_at)
        previous: Quota | None = getattr(request.state, "quota", None)
        if previous is None or quota.remaining < previous.remaining:
            request.state.quota = quota
        if count > item.amount:
            retry_after = max(math.ceil(ttl_ms / 1000), 1)
            raise RateLimited(
                f"Rate limit exceeded: {item}. Try again in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        return bool(alive)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
