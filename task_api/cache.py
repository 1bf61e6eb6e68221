"""The process's Redis client: asyncio, so the per-request check runs on the event loop and
costs no threadpool step."""

from fakeredis import FakeAsyncConnection, FakeServer
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from task_api.config import Settings


def create_redis(settings: Settings) -> Redis:
    """One pool per process, created after gunicorn forks; its connections belong to the event
    loop that opens them, and the app closes them when that loop stops serving.

    The pool waits for a free connection rather than failing, so a burst of requests queues
    instead of opening a connection each. Without REDIS_URL it talks to fakeredis, a Redis
    that lives in this process.
    """
    if settings.redis_url is None:
        pool = BlockingConnectionPool(connection_class=FakeAsyncConnection, server=FakeServer(), decode_responses=True)
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
