"""The process's Redis client: one synchronous connection pool, used from threadpool threads.

REDIS_URL may name a plain Redis (`redis://`, `rediss://`, `unix://`) or a primary watched by
Sentinels (`redis+sentinel://`); either way the token store and slowapi's storage share the
one pool this returns.
"""

from contextlib import suppress
from typing import Any

from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.connection import ConnectionInterface
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from task_api.config import Settings
from task_api.sentinel import SENTINEL_SCHEME, parse_sentinel_url


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Connections to whichever server the Sentinels name primary, waiting for a free one
    like BlockingConnectionPool instead of failing at once.

    Each new connection asks a Sentinel for the primary's address, and one that finds the old
    primary demoted closes itself, so after a failover the pool reconnects to the new primary
    without help. Until then calls fail (a 503), and nothing is let through.
    """

    def release(self, connection: ConnectionInterface) -> None:
        """BlockingConnectionPool drops a connection to the old primary without forgetting it;
        forget it, or every failover would leave up to max_connections of them behind."""
        super().release(connection)
        if not self.owns_connection(connection):
            with suppress(ValueError):
                self._connections.remove(connection)


def create_redis(settings: Settings) -> Redis:
    """One pool per process, reset after gunicorn forks (runtime.after_fork).

    The pool waits up to REDIS_SOCKET_TIMEOUT for a free connection, then fails (a 503), so a
    burst queues briefly instead of opening a connection each. Without REDIS_URL it talks to
    fakeredis, a Redis that lives in this process, imported only then: the production image
    does not ship it.
    """
    if settings.redis_url is None:
        from fakeredis import FakeConnection, FakeServer  # noqa: PLC0415  (the embedded default alone)

        pool = BlockingConnectionPool(connection_class=FakeConnection, server=FakeServer(), decode_responses=True)
        return Redis(connection_pool=pool)
    timeouts: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_socket_timeout,
        "socket_timeout": settings.redis_socket_timeout,
    }
    connection: dict[str, Any] = {
        **timeouts,
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_socket_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        "health_check_interval": 30,
        "decode_responses": True,
    }
    if not settings.redis_url.startswith(f"{SENTINEL_SCHEME}://"):
        return Redis(connection_pool=BlockingConnectionPool.from_url(settings.redis_url, **connection))
    target = parse_sentinel_url(settings.redis_url)
    options = target.sentinel_options
    sentinel = Sentinel(
        target.sentinels,
        sentinel_kwargs={
            **timeouts,
            "username": options.get("sentinel_username"),
            "password": options.get("sentinel_password"),
        },
    )
    pool = BlockingSentinelPool(
        target.service,
        sentinel,
        db=target.db,
        username=target.username,
        password=target.password,
        **connection,
    )
    return Redis(connection_pool=pool)
