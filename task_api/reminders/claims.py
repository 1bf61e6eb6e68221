"""The reminders' state in the database, and the statements that move it.

PostgreSQL is the source of truth; the broker only carries work that the database can hand
out again. A task's reminder is *armed* while `reminder_next_at` is set: the time a sweep
should next look at it. A sweep claims the armed reminders due by now, each in one UPDATE
that moves `reminder_next_at` a lease ahead and counts the claim in `reminder_attempt`
(`FOR UPDATE SKIP LOCKED`: two sweeps, from two beats or two workers, never claim one
reminder together). A delivery that dies lets its lease run out, and the next sweep claims
the reminder again.

Every later step names its claim (task id, `remind_at`, attempt) and changes the row only
while that claim is still the newest: a delivery that was overtaken, by a new claim, by a
client moving, clearing or completing the reminder, or by the task's deletion, finds no row
and sends nothing. A `remind_at` once claimed lies in the past and can never be set again
(API.md), so a claim names one reminder for good.

None of these writes touches `updated_at`, which says when the task's owner last changed it.
"""

from dataclasses import astuple, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, func, select, tuple_, update
from sqlalchemy.orm import Session

from task_api.db import utcnow
from task_api.tasks.models import Task, TaskStatus
from task_api.users.models import User

TASKS = Task.metadata.tables[Task.__tablename__]
USERS = User.metadata.tables[User.__tablename__]
UNCHANGED_UPDATED_AT = {"updated_at": TASKS.c.updated_at}  # a Core UPDATE would set it otherwise
WHEN = TASKS.c.remind_at.type


@dataclass(frozen=True)
class Claim:
    """One claimed reminder, as the broker carries it (`as_message`/`from_message`)."""

    task_id: int
    remind_at: datetime
    attempt: int

    def as_message(self) -> list[Any]:
        return [self.task_id, self.remind_at.isoformat(), self.attempt]

    @classmethod
    def from_message(cls, message: list[Any]) -> "Claim":
        task_id, remind_at, attempt = message
        return cls(int(task_id), datetime.fromisoformat(remind_at), int(attempt))

    @property
    def values(self) -> dict[str, Any]:
        return {"claimed_id": self.task_id, "claimed_remind_at": self.remind_at, "claimed_attempt": self.attempt}


@dataclass(frozen=True)
class Reminder:
    """What a reminder's mail says, read when its delivery begins."""

    claim: Claim
    title: str
    description: str
    due_date: datetime | None
    email: str


DUE = (
    select(TASKS.c.id)
    .where(TASKS.c.reminder_next_at <= bindparam("now", type_=WHEN))
    .order_by(TASKS.c.reminder_next_at)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)
# A completed task's reminder is dropped when it falls due (API.md: nothing is sent for it).
CLAIM_DUE = (
    update(TASKS)
    .where(TASKS.c.id.in_(DUE.scalar_subquery()))
    .values(
        reminder_next_at=case(
            (TASKS.c.status == TaskStatus.completed, None), else_=bindparam("lease_until", type_=WHEN)
        ),
        reminder_attempt=TASKS.c.reminder_attempt + 1,
        **UNCHANGED_UPDATED_AT,
    )
    .returning(TASKS.c.id, TASKS.c.remind_at, TASKS.c.reminder_attempt, TASKS.c.status)
)


STILL_ARMED = and_(TASKS.c.reminded_at.is_(None), TASKS.c.reminder_next_at.is_not(None))
# the claim (task id, remind_at, claim number) is still the newest, and the reminder still armed and unsent
HELD = and_(
    TASKS.c.id == bindparam("claimed_id"),
    TASKS.c.remind_at == bindparam("claimed_remind_at", type_=WHEN),
    TASKS.c.reminder_attempt == bindparam("claimed_attempt"),
    STILL_ARMED,
)
OWNER_EMAIL = select(USERS.c.email).where(USERS.c.id == TASKS.c.owner_id).scalar_subquery()
CLAIMS = tuple_(TASKS.c.id, TASKS.c.remind_at, TASKS.c.reminder_attempt)
BEGIN_DELIVERIES = (
    update(TASKS)
    .where(
        CLAIMS.in_(bindparam("claims", expanding=True)),
        STILL_ARMED,
        TASKS.c.status != TaskStatus.completed,
        TASKS.c.remind_at <= bindparam("now", type_=WHEN),  # never early, whatever the broker's message says
    )
    .values(reminder_next_at=bindparam("lease_until", type_=WHEN), **UNCHANGED_UPDATED_AT)
    .returning(*CLAIMS.clauses, TASKS.c.title, TASKS.c.description, TASKS.c.due_date, OWNER_EMAIL)
)
RECORD_SENT = (
    update(TASKS)
    .where(HELD)
    .values(reminded_at=bindparam("sent_at", type_=WHEN), reminder_next_at=None, **UNCHANGED_UPDATED_AT)
    .returning(TASKS.c.id)
)
RETRY_LATER = (
    update(TASKS).where(HELD).values(reminder_next_at=bindparam("retry_at", type_=WHEN), **UNCHANGED_UPDATED_AT)
)
GIVE_UP = update(TASKS).where(HELD).values(reminder_next_at=None, **UNCHANGED_UPDATED_AT)
PENDING = select(func.count()).select_from(TASKS).where(TASKS.c.reminder_next_at.is_not(None))


def claim_due(session: Session, lease: timedelta, limit: int) -> list[Claim]:
    """Claim up to `limit` armed reminders due by now, oldest first; a completed task's are
    disarmed instead, and not returned."""
    now = utcnow()
    rows = session.execute(CLAIM_DUE, {"now": now, "lease_until": now + lease, "limit": limit}).all()
    session.commit()
    return [Claim(row.id, row.remind_at, row.reminder_attempt) for row in rows if row.status != TaskStatus.completed]


def begin_delivery(session: Session, batch: list[Claim], lease: timedelta) -> list[Reminder]:
    """Renew the lease of every claim in `batch` that still holds, for the time their mails
    take, and read what each mail says; in `batch`'s order, without the claims overtaken or
    the reminders cancelled since. One statement for the whole batch."""
    now = utcnow()
    values = {"claims": [astuple(claim) for claim in batch], "now": now, "lease_until": now + lease}
    rows = session.execute(BEGIN_DELIVERIES, values).all()
    session.commit()
    held = {Claim(task_id, remind_at, attempt): rest for task_id, remind_at, attempt, *rest in rows}
    return [Reminder(claim, *held[claim]) for claim in batch if claim in held]


def record_sent(session: Session, claim: Claim, sent_at: datetime) -> bool:
    """Note the mail server's acceptance; False if the claim was overtaken meanwhile (the
    mail went anyway: a client's change in its last moments came too late to stop it)."""
    recorded = session.execute(RECORD_SENT, {**claim.values, "sent_at": sent_at}).one_or_none()
    session.commit()
    return recorded is not None


def retry_later(session: Session, claim: Claim, retry_at: datetime) -> None:
    session.execute(RETRY_LATER, {**claim.values, "retry_at": retry_at})
    session.commit()


def give_up(session: Session, claim: Claim) -> None:
    """Disarm a reminder the mail server refused for good; `reminded_at` stays null."""
    session.execute(GIVE_UP, claim.values)
    session.commit()


def count_pending(engine: Engine) -> int:
    """Reminders armed and not yet sent, due or not."""
    with engine.connect() as connection:
        return int(connection.scalar(PENDING) or 0)
