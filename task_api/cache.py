from fakeredis import FakeConnection, FakeServer
from redis import ConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from task_api.config import Settings


def create_redis_pool(settings: Settings) -> ConnectionPool:
    """One pool per process, shared by every thread; created after gunicorn forks.

    Without REDIS_URL the pool talks to fakeredis, a Redis that lives in this process.
    """
    if settings.redis_url is None:
        return ConnectionPool(connection_class=FakeConnection, server=FakeServer(), decode_responses=True)
    return ConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_connect_timeout=settings.redis_socket_timeout,
        socket_timeout=settings.redis_socket_timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        health_check_interval=30,
        decode_responses=True,
    )


def create_redis(pool: ConnectionPool) -> Redis:
    return Redis(connection_pool=pool)
