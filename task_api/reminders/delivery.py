"""Sending claimed reminders: the same steps under Celery and in the embedded default's thread."""

import logging
import math
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from task_api.config import Settings
from task_api.db import utcnow
from task_api.metrics import REMINDER_LAG, REMINDERS_FAILED, REMINDERS_SENT
from task_api.reminders import claims
from task_api.reminders.claims import Claim
from task_api.reminders.mail import MailDeferred, Mailer, MailRefused, MailServerUnavailable, reminder_message

logger = logging.getLogger(__name__)

LONGEST_RETRY = timedelta(hours=1)
# claims, lapsed leases included, before a deferred reminder is dropped: waits of 10 s doubling
# to an hour add up to about a day
MOST_ATTEMPTS = 30
RECORD_RETRY_SECONDS = 0.5
# How long a sent reminder's record is retried through a database outage. While PostgreSQL is
# down no other worker can claim the reminder again, so waiting for it costs nothing.
RECORD_PATIENCE_SECONDS = 120


def claim_batches(session_factory: sessionmaker[Session], settings: Settings, most: int) -> Iterator[list[Claim]]:
    """Claim reminders due by now, a batch of REMINDER_BATCH_SIZE at a time and at most `most`
    batches, each only when the caller asks for it: a claim's lease starts when it is made, so
    none is made long before its delivery can begin."""
    lease = timedelta(seconds=settings.reminder_lease_seconds)
    with session_factory() as session:
        for _ in range(most):
            batch = claims.claim_due(session, lease, settings.reminder_batch_size)
            if not batch:
                return
            yield batch


def deliver(
    batch: list[Claim],
    session_factory: sessionmaker[Session],
    mailer: Mailer,
    settings: Settings,
    give_back_after: float = math.inf,
) -> None:
    """Mail each reminder whose claim still holds, over one connection, and record the outcome.

    A deferral (4xx, unreachable) waits REMINDER_RETRY_SECONDS, doubling per claim up to an
    hour, and is dropped after MOST_ATTEMPTS claims; a refusal (5xx) is dropped at once.
    Neither raises: the worker goes on with the next reminder, unless the server itself is out
    of reach, when the rest of the batch is deferred without waiting for it once per mail.
    After `give_back_after` seconds the rest of the batch is left to lapse and be claimed
    again, so a broker that hands the batch out twice never finds it still being sent.
    """
    lease = timedelta(seconds=settings.reminder_lease_seconds)
    give_back_at = time.monotonic() + give_back_after
    renewed_at = time.monotonic()  # no later than the leases are renewed
    with session_factory() as session:
        pending = deque(claims.begin_delivery(session, batch, lease))
    with mailer.connect() as send:
        while pending:
            if time.monotonic() > give_back_at:
                logger.warning("%s reminders left to be claimed again: their batch ran too long", len(pending))
                return
            if time.monotonic() > renewed_at + lease.total_seconds() / 2:  # a slow server: renew the rest
                renewed_at = time.monotonic()
                with session_factory() as session:
                    pending = deque(claims.begin_delivery(session, [held.claim for held in pending], lease))
                continue
            reminder = pending.popleft()
            claim = reminder.claim
            try:
                send(reminder_message(reminder, settings.mail_from))
            except MailDeferred as exc:
                unavailable = isinstance(exc, MailServerUnavailable)
                for deferred in [reminder, *pending] if unavailable else [reminder]:
                    _defer(session_factory, deferred.claim, settings, str(exc))
                if unavailable:
                    return
                continue
            except MailRefused as exc:
                logger.error("reminder for task %s refused by the mail server, dropped: %s", claim.task_id, exc)
                REMINDERS_FAILED.labels("refused").inc()
                with session_factory() as session:
                    claims.give_up(session, claim)
                continue
            sent_at = utcnow()
            REMINDERS_SENT.inc()
            REMINDER_LAG.observe((sent_at - claim.remind_at).total_seconds())
            logger.info("reminder for task %s sent", claim.task_id)
            _record_sent(session_factory, claim, sent_at)


def _record_sent(session_factory: sessionmaker[Session], claim: Claim, sent_at: datetime) -> None:
    """Record a sent reminder, retrying through a database outage; past RECORD_PATIENCE_SECONDS
    another worker may send it again once the database is back (the one duplicate API.md allows)."""
    deadline = time.monotonic() + RECORD_PATIENCE_SECONDS
    while True:
        try:
            with session_factory() as session:
                claims.record_sent(session, claim, sent_at)
            return
        except DBAPIError as exc:
            if time.monotonic() > deadline:
                logger.error("reminder for task %s sent but not recorded; it may be sent again: %s", claim.task_id, exc)
                return
            time.sleep(RECORD_RETRY_SECONDS)


def _defer(session_factory: sessionmaker[Session], claim: Claim, settings: Settings, reason: str) -> None:
    if claim.attempt >= MOST_ATTEMPTS:
        logger.error("reminder for task %s deferred %s times, dropped: %s", claim.task_id, claim.attempt, reason)
        REMINDERS_FAILED.labels("expired").inc()
        with session_factory() as session:
            claims.give_up(session, claim)
        return
    doublings = min(claim.attempt - 1, MOST_ATTEMPTS)  # capped: 2 ** 44 seconds overflow a timedelta
    wait = min(timedelta(seconds=settings.reminder_retry_seconds * 2**doublings), LONGEST_RETRY)
    logger.warning("reminder for task %s deferred, trying again in %s: %s", claim.task_id, wait, reason)
    REMINDERS_FAILED.labels("deferred").inc()
    with session_factory() as session:
        claims.retry_later(session, claim, utcnow() + wait)
