"""Production server: `gunicorn -c gunicorn.conf.py task_api.main:app`.

Every value comes from the same Settings as the app (WEB_CONCURRENCY, PORT, HOST,
FORWARDED_ALLOW_IPS, ...). FORWARDED_ALLOW_IPS names the proxies whose X-Forwarded-For
is believed (the address rate limits key on); by default none is.

Connections, threads and workers, chosen together:
- Each worker runs sync endpoints and dependencies on THREADPOOL_SIZE (4) threads. A
  request takes two steps there: the rate limit and token check (Redis), then the route
  (PostgreSQL). A login's bcrypt check holds a thread for ~0.3 s of CPU (it releases the
  GIL); with four threads the others keep serving meanwhile (bench/: `read with logins`).
- A request holds a database connection only while one of those threads runs it: every
  step ends its transaction before it returns (task_api.db.end_step). So at most
  THREADPOOL_SIZE connections are in use per worker, and with
  DB_POOL_SIZE + DB_MAX_OVERFLOW = 4 + 2 >= THREADPOOL_SIZE = 4 no thread ever waits for a
  connection: a burst queues for threads, never deadlocks on the pool. Settings refuses a
  THREADPOOL_SIZE above the pool.
- PostgreSQL's default max_connections is 100: WEB_CONCURRENCY x (DB_POOL_SIZE +
  DB_MAX_OVERFLOW) must stay below it, with room for migrations and psql.
- Redis: one synchronous pool per worker, used only from those threads, so at most
  THREADPOOL_SIZE connections are busy at once; REDIS_MAX_CONNECTIONS (50) is a ceiling.
"""

import gc
import os
import shutil
import tempfile
from pathlib import Path

from gunicorn.arbiter import Arbiter
from gunicorn.workers.base import Worker

from task_api.config import load_settings, refuse_weak_key
from task_api.logs import configure_logging

settings = load_settings()
refuse_weak_key(settings)  # before anything binds: a server that listens signs with a strong key only

workers = settings.web_concurrency or os.cpu_count() or 1
if settings.redis_url is None and workers > 1:
    raise SystemExit(
        "REDIS_URL is unset: the in-process Redis stand-in cannot share token revocation and rate limits "
        f"between {workers} workers. Set REDIS_URL, or WEB_CONCURRENCY=1."
    )

# Metrics: each worker writes its samples to files in one directory, and a scrape adds them up.
# It must be named before the app (and prometheus_client) is imported; a reload (SIGHUP) reads
# this file again and keeps the same directory. /tmp is an emptyDir in the Helm chart.
METRICS_DIR_PREFIX = "task_api-metrics-"
if settings.metrics_port:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    metrics_dir = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics_dir.mkdir(parents=True, exist_ok=True)

worker_class = "task_api.worker.DrainingUvicornWorker"
# The app is loaded once, before the fork, so a recycled worker is replaced in milliseconds
# rather than the second an import takes. Loading it opens no connection; post_fork makes
# each worker's own.
preload_app = True
bind = [f"{settings.host}:{settings.port}"]
if settings.metrics_port:
    bind.append(f"{settings.metrics_host}:{settings.metrics_port}")
forwarded_allow_ips = settings.forwarded_allow_ips
# One listening socket, the arbiter's, shared by the workers: while a worker is replaced,
# new connections wait in its backlog for the others. With SO_REUSEPORT each worker owned a
# socket, and a replaced worker's queued connections were reset, or refused outright while no
# worker was up (a recycling test under load lost a third of its requests that way).
reuse_port = False

timeout = 30
graceful_timeout = 30
keepalive = 5
# Recycling is off by default (MAX_REQUESTS=0): nothing here leaks, and at a few thousand
# requests a second any fixed count restarts a worker every few seconds. When it is set, a
# worker stops gracefully (task_api.worker), staggered by up to half the count.
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests // 2

accesslog = None  # the app logs one line per request itself
errorlog = "-"
control_socket_disable = True  # two instances on one host would fight over ~/.gunicorn/gunicorn.ctl


def post_worker_init(worker: Worker) -> None:
    """The app's start-up objects live as long as the worker: freeze them out of the garbage
    collector, whose passes over them were the longest pauses in the benchmark's tail."""
    gc.freeze()


def post_fork(server: Arbiter, worker: Worker) -> None:
    """Each worker starts its own log writer (a thread, which a fork does not copy) and opens
    its own database and Redis connections, never the arbiter's."""
    configure_logging(settings.effective_log_format, settings.log_level)
    worker.app.wsgi().state.runtime.after_fork()


def on_starting(server: Arbiter) -> None:
    """Samples that an earlier run left in the metrics directory would be added to this one's."""
    if settings.metrics_port:
        for samples in metrics_dir.glob("*.db"):
            samples.unlink()


def on_exit(server: Arbiter) -> None:
    """Remove the samples, and the directory if this file made it (never one an operator named)."""
    if settings.metrics_port:
        for samples in metrics_dir.glob("*.db"):
            samples.unlink()
        if metrics_dir.name.startswith(METRICS_DIR_PREFIX):
            shutil.rmtree(metrics_dir, ignore_errors=True)


def child_exit(server: Arbiter, worker: Worker) -> None:
    """A stopped worker's requests stay counted; its in-flight and pool gauges go."""
    if settings.metrics_port:
        from prometheus_client import multiprocess  # noqa: PLC0415  (only once the directory above is set)

        multiprocess.mark_process_dead(worker.pid)
