"""Request budgets kept in Redis: one per client across every route, plus a stricter one for
/login and /register.

A budget is a fixed window that opens at the client's first request (the strategy of
slowapi's default, `limits`' fixed window; `limits` parses the limit strings). One Lua
script spends every budget of a request and, in the same round trip, answers whether a
given key exists, which is how the token check rides along: a limited, authenticated
request costs one Redis round trip in all, where slowapi's storage calls took three.
"""

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from redis import Redis
from starlette.requests import Request

from task_api.config import Settings
from task_api.errors import RateLimited

KEY_PREFIX = "rl:"

# KEYS: one counter per budget, then optionally a key whose existence is asked about.
# ARGV: for each budget, its window in milliseconds. Returns count and ms-to-reset per budget,
# then 1 or 0 for the extra key when there is one.
SPEND_SCRIPT = """
local budgets = #ARGV
local result = {}
for i = 1, budgets do
  local count = redis.call('INCR', KEYS[i])
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[i])
    ttl = tonumber(ARGV[i])
  end
  result[#result + 1] = count
  result[#result + 1] = ttl
end
if #KEYS > budgets then
  result[#result + 1] = redis.call('EXISTS', KEYS[#KEYS])
end
return result
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

    def spend(self, request: Request, budgets: list[tuple[RateLimitItem, str]], exists: str | None = None) -> bool:
        """Count this request against each (limit, client key) budget; 429 once one is spent.

        Returns whether the `exists` key is in Redis (False without one). The tightest quota
        is left on `request.state` for the middleware that writes the X-RateLimit-* headers.
        """
        keys = [KEY_PREFIX + key for _, key in budgets]
        windows = [item.get_expiry() * 1000 for item, _ in budgets]
        reply = self._spend(keys=[*keys, exists] if exists else keys, args=windows)
        now_ms = time.time() * 1000
        refused: tuple[RateLimitItem, int] | None = None
        for index, (item, _) in enumerate(budgets):
            count, ttl_ms = reply[2 * index], reply[2 * index + 1]
            quota = Quota(
                limit=item.amount, remaining=max(item.amount - count, 0), reset_at=math.ceil((now_ms + ttl_ms) / 1000)
            )
            previous: Quota | None = getattr(request.state, "quota", None)
            if previous is None or quota.remaining < previous.remaining:
                request.state.quota = quota
            if count > item.amount and refused is None:
                refused = (item, ttl_ms)
        if refused is not None:
            item, ttl_ms = refused
            retry_after = max(math.ceil(ttl_ms / 1000), 1)
            raise RateLimited(
                f"Rate limit exceeded: {item}. Try again in {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )
        return bool(exists) and bool(reply[-1])


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
