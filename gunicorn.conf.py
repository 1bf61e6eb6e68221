"""Production server: `gunicorn -c gunicorn.conf.py task_api.main:app`.

Every value comes from the same Settings as the app (WEB_CONCURRENCY, PORT, HOST,
FORWARDED_ALLOW_IPS, ...).

Connections, threads and workers, chosen together:
- Each worker runs sync endpoints and dependencies on THREADPOOL_SIZE threads. Measured
  with bench/ on 2 cores: 2 threads gave the most requests/s and the shortest tail (every
  step is a short wait on Redis or PostgreSQL; more threads only fight over the GIL).
  The price: two slow bcrypt checks (/login, ~0.2 s each) occupy a worker's threads.
- A request holds a database connection only while one of those threads runs it: every
  step ends its transaction before it returns (task_api.db.end_step). So at most
  THREADPOOL_SIZE connections are in use per worker, and with
  DB_POOL_SIZE + DB_MAX_OVERFLOW = 4 + 2 >= THREADPOOL_SIZE = 2 no thread ever waits for a
  connection: a burst queues for threads, never deadlocks on the pool. Settings refuses a
  THREADPOOL_SIZE above the pool.
- PostgreSQL's default max_connections is 100: WEB_CONCURRENCY x (DB_POOL_SIZE +
  DB_MAX_OVERFLOW) must stay below it, with room for migrations and psql.
- Redis: one asyncio pool per worker, used on the event loop; up to REDIS_MAX_CONNECTIONS (50)
  requests talk to Redis at once and the rest wait for a connection, never fail for want of one.
"""

import gc
import os

from task_api.config import Settings

settings = Settings()

workers = settings.web_concurrency or os.cpu_count() or 1
if settings.redis_url is None and workers > 1:
    raise SystemExit(
        "REDIS_URL is unset: the in-process Redis stand-in cannot share token revocation and rate limits "
        f"between {workers} workers. Set REDIS_URL, or WEB_CONCURRENCY=1."
    )

worker_class = "uvicorn_worker.UvicornWorker"
bind = f"{settings.host}:{settings.port}"
forwarded_allow_ips = settings.forwarded_allow_ips
# Each worker listens on its own SO_REUSEPORT socket and the kernel spreads connections by a
# hash of their addresses (evenly over many, not over a few); on one shared socket the first
# worker to wake accepts a whole burst of them.
reuse_port = True

timeout = 30
graceful_timeout = 30
keepalive = 5
max_requests = settings.max_requests  # recycle workers now and then, staggered so they never restart together
max_requests_jitter = settings.max_requests // 10

accesslog = None  # the app logs one line per request itself
errorlog = "-"
control_socket_disable = True  # two instances on one host would fight over ~/.gunicorn/gunicorn.ctl


def post_worker_init(worker: object) -> None:
    """The app's start-up objects live as long as the worker: freeze them out of the garbage
    collector, whose passes over them were the longest pauses in the benchmark's tail."""
    gc.freeze()
