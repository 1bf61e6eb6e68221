"""The process's Redis client: one synchronous connection pool, used from threadpool threads."""

from fakeredis import FakeConnection, FakeServer
from redis import BlockingConnectionPool, Redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from task_api.config import Settings


def create_redis(settings: Settings) -> Redis:
    """One pool per process, created after gunicorn forks (each worker imports the app itself).

    The pool waits up to REDIS_SOCKET_TIMEOUT for a free connection, then fails (a 503), so a
    burst queues briefly instead of opening a connection each. Without REDIS_URL it talks to
    fakeredis, a Redis that lives in this process.
    """
    if settings.redis_url is None:
        pool = BlockingConnectionPool(connection_class=FakeConnection, server=FakeServer(), decode_responses=True)
    else:
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            timeout=settings.redis_socket_timeout,
            socket_connect_timeout=settings.redis_socket_timeout,
            socket_timeout=settings.redis_socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
            health_check_interval=30,
            decode_responses=True,
        )
    return Redis(connection_pool=pool)
