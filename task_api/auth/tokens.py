"""JWT issue and verification, and the token state kept in Redis.

Every login starts a token family, whose Redis key names its user:
`auth:family:{<user id>}:<fam>` = `<jti>:<deadline>`, the jti of the one refresh token of
that family that may still be used and the moment (ms since the epoch) the login ends for
good, `SESSION_MAX_DAYS` after it began. Tokens carry their subject and family, and a token is
accepted only while the key built from both exists: a token that names one user with
another user's family names a key that does not exist, so even the signing key cannot turn
one login into another user. Deleting the key (logout, or a refresh token presented twice)
kills the refresh token and every access token of that login at once.
`auth:user-families:{<user id>}` lists a user's families, so revoking everything a user
holds (`/logout/all`, a password or e-mail change, deleting the account) deletes them all;
checking a token never needs the database. `users.token_version`, which every token carries
as `ver`, is bumped too and checked again whenever a refresh token is used. A user's keys
share the hash tag `{<user id>}`.
"""

import functools
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

import jwt
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, ConfigDict, ValidationError
from redis import Redis

from task_api.config import Settings

USER_ID = re.compile(r"[1-9][0-9]{0,9}")  # a users.id as a string: ASCII digits...
MAX_USER_ID = 2**31 - 1  # ...within PostgreSQL's integer


FAMILIES_KEPT = 64  # a user's set of families is pruned of ended ones past this many


def family_key(user_id: int | str, family: str) -> str:
    return f"auth:family:{{{user_id}}}:{family}"


def user_families_key(user_id: int | str) -> str:
    return f"auth:user-families:{{{user_id}}}"


def user_min_version_key(user_id: int | str) -> str:
    return f"auth:user-min-version:{{{user_id}}}"


# KEYS: the family, the user's set of families, the user's lowest live token version.
# ARGV: refresh jti, the family key's lifetime (ms), family id, the token version the login
# read, the login's deadline (ms since the epoch), the longest a login lives (ms), the user's
# family key prefix, how many families the set keeps before it forgets the ended ones.
# A login whose password check read the row before a revocation may not start a family. The
# set forgets ended families once it grows past that many, so revoking stays cheap.
START_FAMILY_SCRIPT = """
if tonumber(ARGV[4]) < tonumber(redis.call('GET', KEYS[3]) or '0') then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[5], 'PX', ARGV[2])
if redis.call('SADD', KEYS[2], ARGV[3]) == 1 and redis.call('SCARD', KEYS[2]) > tonumber(ARGV[8]) then
  for _, family in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', ARGV[7] .. family) == 0 then
      redis.call('SREM', KEYS[2], family)
    end
  end
end
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[6]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
return 1
"""

# KEYS: the family. ARGV: the presented refresh jti, the new one, the refresh token lifetime
# (ms), now (ms since the epoch).
# Returns the new refresh token's lifetime in ms: the usual one, or less where the login's
# deadline comes first; 0 when the family is dead or past its deadline; -1 when the presented
# jti is not the family's newest (a reuse: the family is deleted).
ROTATE_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
local separator = string.find(value, ':', 1, true)
local deadline = string.sub(value, separator + 1)
if string.sub(value, 1, separator - 1) ~= ARGV[1] then
  redis.call('DEL', KEYS[1])
  return -1
end
local lifetime = math.min(tonumber(ARGV[3]), tonumber(deadline) - tonumber(ARGV[4]))
if lifetime <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[2] .. ':' .. deadline, 'PX', lifetime)
return lifetime
"""

# KEYS: the user's set of families, the user's lowest live token version.
# ARGV: the user's family key prefix, the new lowest version, its lifetime (ms).
REVOKE_USER_SCRIPT = """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
local families = redis.call('SMEMBERS', KEYS[1])
for _, family in ipairs(families) do
  redis.call('DEL', ARGV[1] .. family)
end
redis.call('DEL', KEYS[1])
return #families
"""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it is."""
    scheme, token = get_authorization_scheme_param(authorization)
    return token if scheme.lower() == "bearer" and token else None


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
        self.session_ttl = timedelta(days=settings.session_max_days)
        self._revoke_user = redis.register_script(REVOKE_USER_SCRIPT)
        self._start_family = redis.register_script(START_FAMILY_SCRIPT)
        self._rotate = redis.register_script(ROTATE_SCRIPT)
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
        if not USER_ID.fullmatch(claims.sub) or int(claims.sub) > MAX_USER_ID:
            raise jwt.InvalidTokenError("the subject is not a user id")
        return claims

    def start_family(self, user_id: int, token_version: int) -> TokenPair | None:
        """A new login's tokens; None when the user's tokens were revoked after `token_version` was read."""
        family, jti = uuid.uuid4().hex, uuid.uuid4().hex
        session_ms = _ms(self.session_ttl)
        lifetime_ms = min(_ms(self.refresh_ttl), session_ms)
        started = self._start_family(
            keys=[family_key(user_id, family), user_families_key(user_id), user_min_version_key(user_id)],
            args=[
                jti,
                lifetime_ms,
                family,
                token_version,
                _now_ms() + session_ms,
                session_ms,
                family_key(user_id, ""),
                FAMILIES_KEPT,
            ],
        )
        if not started:
            return None
        return self._issue_pair(user_id, token_version, family, jti, timedelta(milliseconds=lifetime_ms))

    def rotate(self, claims: Claims, token_version: int) -> tuple[RotationResult, TokenPair | None]:
        """Swap a refresh token for a new pair; a refresh token seen twice kills its family.

        The new refresh token lives no longer than the login's deadline.
        """
        jti = uuid.uuid4().hex
        lifetime_ms = int(
            self._rotate(
                keys=[self.login_key(claims)],
                args=[claims.jti, jti, _ms(self.refresh_ttl), _now_ms()],
            )
        )
        if lifetime_ms > 0:
            lifetime = timedelta(milliseconds=lifetime_ms)
            return RotationResult.rotated, self._issue_pair(claims.user_id, token_version, claims.fam, jti, lifetime)
        return (RotationResult.dead if lifetime_ms == 0 else RotationResult.reused), None

    @staticmethod
    def login_key(claims: Claims) -> str:
        """The Redis key that exists while the login behind these claims is alive and is their subject's."""
        return family_key(claims.sub, claims.fam)

    def end_logins(self, *logins: Claims) -> None:
        """End the logins behind these claims (one user's: their keys share a hash slot)."""
        self._redis.delete(*{self.login_key(claims) for claims in logins})

    def revoke_user(self, user_id: int, new_version: int) -> None:
        """Every token the user holds stops working, and no login that read an older version of
        the user's row (a password check racing a password change) can start a new one."""
        self._revoke_user(
            keys=[user_families_key(user_id), user_min_version_key(user_id)],
            args=[family_key(user_id, ""), new_version, _ms(self.session_ttl)],
        )

    def _issue_pair(
        self, user_id: int, token_version: int, family: str, refresh_jti: str, refresh_lifetime: timedelta
    ) -> TokenPair:
        """The pair of a login whose key lives `refresh_lifetime` more: neither token outlives it."""
        common = {"sub": str(user_id), "fam": family, "ver": token_version}
        access_lifetime = min(self.access_ttl, refresh_lifetime)
        return TokenPair(
            access_token=self._encode({**common, "type": TokenType.access, "jti": uuid.uuid4().hex}, access_lifetime),
            refresh_token=self._encode({**common, "type": TokenType.refresh, "jti": refresh_jti}, refresh_lifetime),
            expires_in=max(int(access_lifetime.total_seconds()), 1),
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


def _ms(duration: timedelta) -> int:
    return int(duration.total_seconds() * 1000)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
