"""Reminders on Celery: beat starts a sweep every REMINDER_SWEEP_SECONDS, a worker claims what
is due (task_api/reminders/claims.py) and queues it in batches, and workers deliver them.

The broker only carries work PostgreSQL can hand out again, so losing a message loses nothing:
a delivery acknowledged late, restored after a dead worker, or flushed with Redis is claimed
again once its lease runs out. Nothing is scheduled as a far-future ETA (on a Redis broker one
past the visibility timeout is delivered twice: celery #2599, #3270, kombu #337), and the queue
is bound to the default exchange, which routes by the queue's name alone: a publish after
FLUSHALL lands in the queue, where kombu's routing table (`_kombu.binding.*`, flushed too)
would send it to its dead-letter queue.

`celery -A task_api.reminders.jobs` works as usual; `python -m task_api worker` and
`python -m task_api beat` start the two with this service's settings and logging.
"""

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery, beat, signals
from kombu import Exchange, Queue
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from task_api import models  # noqa: F401  (maps every table)
from task_api.config import Settings, load_settings
from task_api.db import create_db_engine, create_session_factory
from task_api.reminders import claims, delivery
from task_api.reminders.broker import broker
from task_api.reminders.claims import Claim
from task_api.reminders.mail import LogMailer, Mailer, mailer_for

logger = logging.getLogger(__name__)

QUEUE = "task_api.reminders"
SWEEP = "task_api.reminders.sweep"
DELIVER = "task_api.reminders.deliver"
# A message unacknowledged this long is handed out again. Deliveries take seconds, and one
# handed out twice finds its claim overtaken and sends nothing.
VISIBILITY_TIMEOUT = 300
SWEEP_EXPIRES = 300  # seconds: far beyond any clock skew between beat and the workers
QUEUED_JOBS_PER_THREAD = 2  # delivery jobs kept waiting per worker thread, so none is ever idle for want of one
BEAT_HEARTBEAT = Path("/tmp/task_api-beat.alive")  # noqa: S108  (touched every tick: the chart's liveness probe)


def create_celery(settings: Settings) -> Celery:
    url, transport_options = broker(settings)
    app = Celery("task_api", set_as_current=False)
    app.conf.update(
        broker_url=url,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "socket_timeout": settings.redis_socket_timeout,
            "socket_connect_timeout": settings.redis_socket_timeout,
            "health_check_interval": 30,
            **transport_options,
        },
        broker_connection_retry_on_startup=True,
        task_queues=[Queue(QUEUE, Exchange(""), routing_key=QUEUE)],
        task_default_queue=QUEUE,
        task_default_exchange="",
        task_default_routing_key=QUEUE,
        task_ignore_result=True,
        task_acks_late=True,  # a delivery's message goes only once the delivery has run
        worker_prefetch_multiplier=1,
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,  # the service's own log format (task_api/logs.py)
        beat_scheduler="task_api.reminders.jobs:HeartbeatScheduler",
        beat_schedule={
            "sweep reminders": {
                "task": SWEEP,
                "schedule": settings.reminder_sweep_seconds,
                # sweeps left waiting while no worker ran are dropped, not run by the thousand
                "options": {"expires": SWEEP_EXPIRES},
            }
        },
    )
    return app


settings = load_settings()
app = create_celery(settings)


@functools.cache
def _worker() -> tuple[Engine, sessionmaker[Session], Mailer]:
    """What this worker process delivers with: one engine and one mail server for its threads."""
    engine = create_db_engine(settings)
    return engine, create_session_factory(engine), mailer_for(settings)


@app.task(name=SWEEP, acks_late=False)  # a lost sweep loses nothing: the next one claims the same
def sweep() -> None:
    _queue_due_reminders()


@app.task(name=DELIVER)
def deliver(batch: list[list[Any]]) -> None:
    _, session_factory, mailer = _worker()
    claimed = [Claim.from_message(message) for message in batch]
    delivery.deliver(claimed, session_factory, mailer, settings, give_back_after=VISIBILITY_TIMEOUT / 2)
    if len(batch) == settings.reminder_batch_size:  # more may be due: refill the queue at the pace of delivery
        _queue_due_reminders()


def _queue_due_reminders() -> None:
    """Claim due reminders and queue them, a delivery job per batch, until the queue holds
    QUEUED_JOBS_PER_THREAD x WORKER_CONCURRENCY jobs waiting.

    A claim's lease runs from when it is made, so reminders are claimed only as fast as the
    workers take them: a backlog of thousands waits in PostgreSQL, not in the queue, where
    leases would run out before their turn came. Every delivery of a full batch refills the
    queue, so delivery keeps pace with however many workers there are.
    """
    _, session_factory, _ = _worker()
    with app.pool.acquire(block=True) as connection:
        waiting = int(connection.default_channel.client.llen(QUEUE))
    room = QUEUED_JOBS_PER_THREAD * settings.worker_concurrency - waiting
    for batch in delivery.claim_batches(session_factory, settings, most=max(room, 0)):
        deliver.delay([claim.as_message() for claim in batch])


class PendingReminders(Collector):
    """`task_api_reminders_pending`, counted in the database at each scrape."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The series' name without counting, so registering it (and a scrape that filters it
        out, as the probes' does) never reaches the database."""
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            pending = claims.count_pending(self.engine)
        except SQLAlchemyError:
            logger.warning("could not count pending reminders for /metrics", exc_info=True)
            return
        family = self._family()
        family.add_metric([], pending)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("task_api_reminders_pending", "Reminders armed and not yet sent")


@signals.worker_init.connect
def _serve_metrics(**__: object) -> None:
    engine, _, mailer = _worker()
    if isinstance(mailer, LogMailer):
        logger.warning("SMTP_URL is not set: reminders are written to the log, not mailed")
    if settings.worker_metrics_port:
        REGISTRY.register(PendingReminders(engine))
        start_http_server(settings.worker_metrics_port, addr=settings.metrics_host)


class HeartbeatScheduler(beat.Scheduler):
    """Celery's scheduler, kept in memory (the sweep's schedule needs no memory of earlier
    runs), touching BEAT_HEARTBEAT at every tick for a liveness probe."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        BEAT_HEARTBEAT.touch()
        interval: float = super().tick(*args, **kwargs)
        return interval
