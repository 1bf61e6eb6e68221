"""JWT issue and verification, and the token state kept in Redis.

Every login starts a token family. Redis holds `auth:family:<fam>` = the jti of
the one refresh token of that family that may still be used, with the refresh
token's lifetime as TTL. Access tokens carry their family id, so deleting the
key (logout, or a refresh token presented twice) kills the refresh token and
every access token of that login at once. `auth:user-families:<user id>` lists
a user's families, so revoking everything a user holds (`/logout/all`, a
password change, deleting the account) deletes them all; checking a token
never needs the database. `users.token_version`, which every token carries as
`ver`, is bumped too and checked again whenever a refresh token is used.
"""

import functools
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

import jwt
from pydantic import BaseModel, ConfigDict, ValidationError
from redis import Redis

from task_api.config import Settings

FAMILY_PREFIX = "auth:family:"
USER_ID = re.compile(r"[1-9][0-9]{0,8}")  # a users.id as a string: ASCII digits, within a 32-bit integer
USER_FAMILIES_PREFIX = "auth:user-families:"
USER_MIN_VERSION_PREFIX = "auth:user-min-version:"

# KEYS: the family, the user's set of families, the user's lowest live token version.
# ARGV: refresh jti, TTL in seconds, family id, the token version the login read.
# A login whose password check read the row before a revocation may not start a family.
START_FAMILY_SCRIPT = """
if tonumber(ARGV[4]) < tonumber(redis.call('GET', KEYS[3]) or '0') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: the user's set of families, the user's lowest live token version.
# ARGV: the family key prefix, the new lowest version, TTL in seconds.
REVOKE_USER_SCRIPT = """
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local families = redis.call('SMEMBERS', KEYS[1])
for _, family in ipairs(families) do
  redis.call('DEL', ARGV[1] .. family)
end
redis.call('DEL', KEYS[1])
return #families
"""


class TokenType(StrEnum):
    access = "access"
    refresh = "refresh"


class Claims(BaseModel):
    model_config = ConfigDict(frozen=True)  # one verified token's claims are shared by its requests

    sub: str
    type: TokenType
    jti: str
    fam: str
    ver: int
    exp: int

    @property
    def user_id(self) -> int:
        return int(self.sub)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class RotationResult(StrEnum):
    rotated = "rotated"
    reused = "reused"
    dead = "dead"


REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti", "iss", "aud", "type", "fam", "ver"]
VERIFIED_TOKENS_KEPT = 4096


class Tokens:
    def __init__(self, settings: Settings, redis: Redis) -> None:
        self._settings = settings
        self._redis = redis
        self.access_ttl = timedelta(minutes=settings.access_token_expire_minutes)
        self.refresh_ttl = timedelta(days=settings.refresh_token_expire_days)
        self._revoke_user = redis.register_script(REVOKE_USER_SCRIPT)
        self._start_family = redis.register_script(START_FAMILY_SCRIPT)
        # Checking a signature and its claims costs ~40 us of Python, on every request, for a
        # token a client sends many times: the claims of recently verified tokens are kept by
        # their exact text, and only their expiry is checked again. Rejected tokens raise and
        # are never kept.
        self._verified = functools.lru_cache(maxsize=VERIFIED_TOKENS_KEPT)(self._verify)

    def decode(self, token: str, expected: TokenType) -> Claims | None:
        """The token's claims if it is a well-signed, unexpired token of the expected type."""
        try:
            claims = self._verified(token)
        except (jwt.InvalidTokenError, ValidationError):
            return None
        if claims.type is not expected or claims.exp <= time.time():
            return None
        return claims

    def _verify(self, token: str) -> Claims:
        """The claims of a token we signed that carries every claim we issue; raises otherwise."""
        if not token.isascii():
            raise jwt.InvalidTokenError("not ASCII")
        payload = jwt.decode(
            token,
            self._settings.secret_key,
            algorithms=[self._settings.jwt_algorithm],
            audience=self._settings.jwt_audience,
            issuer=self._settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
        claims = Claims.model_validate(payload)
        if not USER_ID.fullmatch(claims.sub):
            raise jwt.InvalidTokenError("the subject is not a user id")
        return claims

    def start_family(self, user_id: int, token_version: int) -> TokenPair | None:
        """A new login's tokens; None when the user's tokens were revoked after `token_version` was read."""
        family, jti = uuid.uuid4().hex, uuid.uuid4().hex
        ttl = int(self.refresh_ttl.total_seconds())
        started = self._start_family(
            keys=[FAMILY_PREFIX + family, USER_FAMILIES_PREFIX + str(user_id), USER_MIN_VERSION_PREFIX + str(user_id)],
            args=[jti, ttl, family, token_version],
        )
        return self._issue_pair(user_id, token_version, family, jti) if started else None

    def rotate(self, claims: Claims, token_version: int) -> tuple[RotationResult, TokenPair | None]:
        """Swap a refresh token for a new pair; a refresh token seen twice kills its family.

        The family stays listed among the user's for as long as its newest refresh token lives.
        """
        jti = uuid.uuid4().hex
        key = FAMILY_PREFIX + claims.fam
        families = USER_FAMILIES_PREFIX + claims.sub
        with self._redis.pipeline(transaction=True) as pipeline:
            pipeline.set(key, jti, xx=True, get=True, ex=self.refresh_ttl)
            pipeline.sadd(families, claims.fam)
            pipeline.expire(families, self.refresh_ttl)
            previous = pipeline.execute()[0]
        if previous == claims.jti:
            return RotationResult.rotated, self._issue_pair(claims.user_id, token_version, claims.fam, jti)
        if previous is None:
            return RotationResult.dead, None
        self._redis.delete(key)
        return RotationResult.reused, None

    @staticmethod
    def family_key(claims: Claims) -> str:
        """The Redis key that exists while the login behind these claims is alive."""
        return FAMILY_PREFIX + claims.fam

    def revoke_family(self, *families: str) -> None:
        self._redis.delete(*(FAMILY_PREFIX + family for family in families))

    def revoke_user(self, user_id: int, new_version: int) -> None:
        """Every token the user holds stops working, and no login that read an older version of
        the user's row (a password check racing a password change) can start a new one."""
        self._revoke_user(
            keys=[USER_FAMILIES_PREFIX + str(user_id), USER_MIN_VERSION_PREFIX + str(user_id)],
            args=[FAMILY_PREFIX, new_version, int(self.refresh_ttl.total_seconds())],
        )

    def _issue_pair(self, user_id: int, token_version: int, family: str, refresh_jti: str) -> TokenPair:
        common = {"sub": str(user_id), "fam": family, "ver": token_version}
        return TokenPair(
            access_token=self._encode({**common, "type": TokenType.access, "jti": uuid.uuid4().hex}, self.access_ttl),
            refresh_token=self._encode({**common, "type": TokenType.refresh, "jti": refresh_jti}, self.refresh_ttl),
            expires_in=int(self.access_ttl.total_seconds()),
        )

    def _encode(self, claims: dict[str, object], ttl: timedelta) -> str:
        now = datetime.now(UTC)
        payload = {
            **claims,
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "iat": now,
            "exp": now + ttl,
        }
        return jwt.encode(payload, self._settings.secret_key, algorithm=self._settings.jwt_algorithm)
