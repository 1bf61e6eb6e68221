"""The "Reminders" section of API.md without a Celery worker: the API's rules for `remind_at` and
`reminded_at`, the claims a sweep and a delivery move each reminder through, the mail a reminder
becomes, the embedded default's reminders in its log, and the settings that steer them."""

import email
import email.policy
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from typing import Any

import httpx2
import pytest
from kombu.utils.url import url_to_parts
from pydantic import ValidationError
from sqlalchemy import func, insert, select, update

from task_api.config import Settings, explain
from task_api.models import Task, User
from task_api.reminders import claims, delivery
from task_api.reminders.broker import broker
from task_api.reminders.claims import Claim, Reminder
from task_api.reminders.mail import LogMailer, MailDeferred, reminder_message
from tests.conftest import PASSWORD, REDIS_URL, ROOT, SECRET_KEY, free_port, run_cli
from tests.factories import TaskFactory

TASKS = Task.__table__
LEASE = timedelta(seconds=60)
MAIL_FROM = "Tasks <reminders@tasks.example.com>"
MISSING_ID = 999_999
WRITES = [("PUT", False), ("PUT", True), ("PATCH", False), ("PATCH", True)]
WRITE_IDS = ["PUT", "PUT-If-Match", "PATCH", "PATCH-If-Match"]


@pytest.fixture
def sessions(app):
    return app.state.runtime.session_factory


def now() -> datetime:
    return datetime.now(UTC)


def instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def row(db, task_id: int) -> dict[str, Any] | None:
    """Every column of the task as stored, the reminder's internal state included."""
    found = db.execute(select(TASKS).where(TASKS.c.id == task_id)).one_or_none()
    return None if found is None else found._asdict()


def set_row(db, task_id: int, **values: Any) -> None:
    """Change a task behind the API's back: time passing, a reminder sent or claimed."""
    db.execute(update(TASKS).where(TASKS.c.id == task_id).values(**values))
    db.commit()


def task_count(db) -> int:
    return db.scalar(select(func.count()).select_from(TASKS))


def create(client, headers, **fields: Any) -> dict[str, Any]:
    response = client.post("/tasks", json={"title": "Call the plumber", **fields}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def write(client, method: str, task_id: int, headers, body: dict[str, Any], if_match: bool = False):
    """A PUT or PATCH, with the task's current ETag as If-Match when asked."""
    if if_match:
        current = client.get(f"/tasks/{task_id}", headers=headers)
        headers = {**headers, "If-Match": current.headers.get("ETag", '"missing"')}
    return client.request(method, f"/tasks/{task_id}", json=body, headers=headers)


def assert_refused_field(response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert [error["loc"] for error in response.json()["detail"]] == [["body", field]]


def due_task(owner, **fields: Any):
    """A task whose reminder fell due a minute ago and has not been claimed."""
    remind_at = fields.pop("remind_at", now() - timedelta(minutes=1))
    return TaskFactory(owner=owner, remind_at=remind_at, reminder_next_at=remind_at, **fields)


def claim_all(sessions, lease: timedelta = LEASE, limit: int = 100) -> list[Claim]:
    with sessions() as session:
        return claims.claim_due(session, lease, limit)


def only_claim(sessions, lease: timedelta = LEASE) -> Claim:
    claimed = claim_all(sessions, lease)
    assert len(claimed) == 1, claimed
    return claimed[0]


def begin(sessions, claim: Claim) -> Reminder | None:
    with sessions() as session:
        begun = claims.begin_delivery(session, [claim], LEASE)
    return begun[0] if begun else None


def record(sessions, claim: Claim, sent_at: datetime) -> bool:
    with sessions() as session:
        return claims.record_sent(session, claim, sent_at)


# --- the fields -------------------------------------------------------------------------------------------------


def test_every_task_body_carries_remind_at_and_reminded_at(client, headers):
    created = client.post("/tasks", json={"title": "Defaults"}, headers=headers)
    task_id = created.json()["id"]
    bodies = {
        "create": created.json(),
        "read": client.get(f"/tasks/{task_id}", headers=headers).json(),
        "list": client.get("/tasks", headers=headers).json()["items"][0],
        "put": client.put(f"/tasks/{task_id}", json={"title": "Replaced"}, headers=headers).json(),
        "patch": client.patch(f"/tasks/{task_id}", json={"priority": "high"}, headers=headers).json(),
    }

    reminders = {name: (body["remind_at"], body["reminded_at"]) for name, body in bodies.items()}
    assert reminders == dict.fromkeys(bodies, (None, None))


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_remind_at_is_stored_in_utc_on_create_put_and_patch(client, db, owner, headers, method):
    remind_at = (now() + timedelta(days=1)).replace(microsecond=0)
    sent = remind_at.astimezone(timezone(timedelta(hours=2))).isoformat()
    if method == "POST":
        response = client.post("/tasks", json={"title": "Renew the passport", "remind_at": sent}, headers=headers)
    else:
        task = TaskFactory(owner=owner)
        body = {"title": "Renew the passport", "remind_at": sent} if method == "PUT" else {"remind_at": sent}
        response = write(client, method, task.id, headers, body)

    assert response.status_code in {200, 201}, response.text
    body = response.json()
    assert body["remind_at"].endswith("Z") or body["remind_at"].endswith("+00:00")
    assert instant(body["remind_at"]) == remind_at
    assert body["reminded_at"] is None
    stored = row(db, body["id"])
    assert (stored["remind_at"], stored["reminded_at"]) == (remind_at, None)
    assert stored["reminder_next_at"] == remind_at  # armed for that time
    read = client.get(f"/tasks/{body['id']}", headers=headers).json()
    listed = client.get("/tasks", headers=headers).json()["items"][0]
    assert instant(read["remind_at"]) == instant(listed["remind_at"]) == remind_at


def test_the_openapi_schema_has_reminded_at_read_only_and_only_remind_at_writable(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]

    task_out = schemas["TaskOut"]
    assert {"remind_at", "reminded_at"} <= set(task_out["required"])
    assert task_out["properties"]["reminded_at"]["readOnly"] is True
    assert "readOnly" not in task_out["properties"]["remind_at"]
    for name in ("TaskCreate", "TaskReplace", "TaskUpdate"):
        properties = schemas[name]["properties"]
        assert "remind_at" in properties, name
        assert "reminded_at" not in properties, name
        assert {"type": "string", "format": "date-time"} in properties["remind_at"]["anyOf"], name


# --- when remind_at may be set ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reminded_at", lambda: now().isoformat()),  # read-only: an unknown field in a body
        ("remind_at", lambda: (now() + timedelta(days=1)).replace(tzinfo=None).isoformat()),  # naive
    ],
    ids=["reminded_at", "naive remind_at"],
)
def test_a_refused_reminder_field_is_a_422_and_changes_nothing(client, db, owner, headers, method, field, value):
    task = TaskFactory(owner=owner)
    before, count = row(db, task.id), task_count(db)

    if method == "POST":
        response = client.post("/tasks", json={"title": "Refused", field: value()}, headers=headers)
    else:
        body = {field: value()} | ({"title": "Refused"} if method == "PUT" else {})
        response = write(client, method, task.id, headers, body)

    assert_refused_field(response, field)
    assert row(db, task.id) == before
    assert task_count(db) == count


def test_a_remind_at_before_the_clock_is_a_422_on_create_and_creates_nothing(client, db, headers):
    response = client.post(
        "/tasks", json={"title": "Too late", "remind_at": (now() - timedelta(minutes=1)).isoformat()}, headers=headers
    )

    assert_refused_field(response, "remind_at")
    assert response.headers["content-type"] == "application/json"
    assert task_count(db) == 0


@pytest.mark.parametrize(("method", "if_match"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("current", ["none", "future", "passed"])
def test_a_new_remind_at_before_the_clock_is_a_422_and_changes_nothing(
    client, db, owner, headers, method, if_match, current
):
    remind_at = {"none": None, "future": now() + timedelta(hours=1), "passed": now() - timedelta(hours=1)}[current]
    task = TaskFactory(owner=owner, title="Keep me", remind_at=remind_at, reminder_next_at=remind_at)
    before = row(db, task.id)
    past = (now() - timedelta(minutes=5)).isoformat()

    body = {"remind_at": past} | ({"title": "Changed"} if method == "PUT" else {})
    response = write(client, method, task.id, headers, body, if_match)

    assert_refused_field(response, "remind_at")
    assert row(db, task.id) == before


@pytest.mark.parametrize(("method", "if_match"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("state", ["sent", "held by a delivery"])
def test_repeating_a_passed_remind_at_is_accepted_and_leaves_the_reminder_alone(
    client, db, owner, headers, method, if_match, state
):
    task = create(client, headers, title="Book the vet", remind_at=(now() + timedelta(hours=1)).isoformat())
    passed = now() - timedelta(minutes=10)  # time went by
    if state == "sent":
        set_row(db, task["id"], remind_at=passed, reminded_at=passed, reminder_next_at=None, reminder_attempt=1)
    else:
        set_row(db, task["id"], remind_at=passed, reminder_next_at=now() + LEASE, reminder_attempt=1)
    before = row(db, task["id"])
    repeated = passed.astimezone(timezone(timedelta(hours=-5))).isoformat()  # the same instant, written otherwise

    body = {"title": "Book the vet", "priority": "high", "remind_at": repeated}
    response = write(client, method, task["id"], headers, body, if_match)

    assert response.status_code == 200, response.text
    assert instant(response.json()["remind_at"]) == passed
    assert instant(response.json()["reminded_at"]) == before["reminded_at"]
    after = row(db, task["id"])
    assert after["priority"] == "high"
    reminder = ("remind_at", "reminded_at", "reminder_next_at", "reminder_attempt")
    assert {key: after[key] for key in reminder} == {key: before[key] for key in reminder}


@pytest.mark.parametrize(("method", "if_match"), WRITES, ids=WRITE_IDS)
@pytest.mark.parametrize("whose", ["missing", "another user's"])
def test_a_missing_task_is_a_404_before_a_remind_at_in_the_past_is_a_422(
    client, db, owner, headers, method, if_match, whose
):
    task_id = MISSING_ID if whose == "missing" else TaskFactory(remind_at=now() - timedelta(hours=1)).id
    before = row(db, task_id)
    body = {"remind_at": (now() - timedelta(minutes=5)).isoformat()} | ({"title": "t"} if method == "PUT" else {})

    response = write(client, method, task_id, headers, body, if_match)

    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Task not found"}
    assert row(db, task_id) == before


# --- how a write moves the reminder -----------------------------------------------------------------------------


def test_a_put_without_remind_at_clears_it_and_disarms_it(client, db, headers):
    task = create(client, headers, remind_at=(now() + timedelta(hours=1)).isoformat())

    response = client.put(f"/tasks/{task['id']}", json={"title": "No reminder now"}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["remind_at"] is None
    stored = row(db, task["id"])
    assert (stored["remind_at"], stored["reminder_next_at"]) == (None, None)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_moving_remind_at_arms_the_reminder_afresh_for_the_new_time(client, db, headers, method):
    task = create(client, headers, title="Pay rent", remind_at=(now() + timedelta(hours=1)).isoformat())
    sent = now() - timedelta(minutes=1)
    set_row(db, task["id"], remind_at=sent, reminded_at=sent, reminder_next_at=None, reminder_attempt=2)
    moved = (now() + timedelta(days=30)).replace(microsecond=0)

    response = write(client, method, task["id"], headers, {"title": "Pay rent", "remind_at": moved.isoformat()})

    assert response.status_code == 200, response.text
    assert instant(response.json()["remind_at"]) == moved
    assert response.json()["reminded_at"] is None
    stored = row(db, task["id"])
    assert (stored["remind_at"], stored["reminded_at"], stored["reminder_next_at"], stored["reminder_attempt"]) == (
        moved,
        None,
        moved,
        0,
    )


def test_clearing_remind_at_disarms_the_reminder(client, db, headers):
    task = create(client, headers, remind_at=(now() + timedelta(hours=1)).isoformat())

    response = client.patch(f"/tasks/{task['id']}", json={"remind_at": None}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["remind_at"] is None
    stored = row(db, task["id"])
    assert (stored["remind_at"], stored["reminder_next_at"]) == (None, None)


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_reopening_a_completed_task_whose_remind_at_has_passed_sends_nothing(client, db, sessions, headers, method):
    task = create(client, headers, title="File taxes", remind_at=(now() + timedelta(hours=1)).isoformat())
    assert client.patch(f"/tasks/{task['id']}", json={"status": "completed"}, headers=headers).status_code == 200
    passed = now() - timedelta(minutes=1)
    set_row(db, task["id"], remind_at=passed, reminder_next_at=passed)  # time went by before a sweep ran

    body = {"status": "new"} | ({"title": "File taxes", "remind_at": passed.isoformat()} if method == "PUT" else {})
    response = write(client, method, task["id"], headers, body)

    assert response.status_code == 200, response.text
    assert row(db, task["id"])["reminder_next_at"] is None
    assert claim_all(sessions) == []
    assert row(db, task["id"])["reminded_at"] is None


def test_reopening_a_completed_task_before_its_remind_at_keeps_the_reminder(client, db, headers):
    remind_at = (now() + timedelta(hours=1)).replace(microsecond=0)
    task = create(client, headers, remind_at=remind_at.isoformat())
    client.patch(f"/tasks/{task['id']}", json={"status": "completed"}, headers=headers)

    response = client.patch(f"/tasks/{task['id']}", json={"status": "in_progress"}, headers=headers)

    assert response.status_code == 200, response.text
    assert row(db, task["id"])["reminder_next_at"] == remind_at


def test_a_completed_tasks_reminder_stays_armed_and_is_dropped_when_it_falls_due(client, db, sessions, headers):
    remind_at = (now() + timedelta(hours=1)).replace(microsecond=0)
    task = create(client, headers, remind_at=remind_at.isoformat())

    response = client.patch(f"/tasks/{task['id']}", json={"status": "completed"}, headers=headers)

    assert response.status_code == 200, response.text
    assert row(db, task["id"])["reminder_next_at"] == remind_at
    passed = now() - timedelta(seconds=1)
    set_row(db, task["id"], remind_at=passed, reminder_next_at=passed)
    assert claim_all(sessions) == []
    stored = row(db, task["id"])
    assert (stored["reminder_next_at"], stored["reminded_at"]) == (None, None)
    assert claims.count_pending(db.get_bind()) == 0


# --- the claims -------------------------------------------------------------------------------------------------


def test_a_sweep_claims_only_due_reminders_the_oldest_first_and_at_most_its_limit(db, sessions, owner):
    newest = due_task(owner, remind_at=now() - timedelta(minutes=1))
    oldest = due_task(owner, remind_at=now() - timedelta(minutes=3))
    middle = due_task(owner, remind_at=now() - timedelta(minutes=2))
    TaskFactory(owner=owner, remind_at=now() + timedelta(minutes=1), reminder_next_at=now() + timedelta(minutes=1))
    TaskFactory(owner=owner)

    firsts = claim_all(sessions, limit=2)
    rest = claim_all(sessions, limit=2)

    assert {claim.task_id for claim in firsts} == {oldest.id, middle.id}
    assert [claim.task_id for claim in rest] == [newest.id]
    assert all(claim.attempt == 1 for claim in firsts + rest)
    assert claim_all(sessions) == []


def test_a_claim_holds_for_its_lease_then_is_claimed_again_and_the_first_claim_is_void(db, sessions, owner):
    task = due_task(owner)

    first = only_claim(sessions, lease=timedelta(milliseconds=1))
    assert first == Claim(task.id, task.remind_at, 1)
    time.sleep(0.01)  # the lease runs out: the delivery died
    second = only_claim(sessions)
    assert second == Claim(task.id, task.remind_at, 2)
    assert claim_all(sessions) == []  # the second claim's lease holds

    assert begin(sessions, first) is None
    assert record(sessions, first, now()) is False
    with sessions() as session:
        claims.retry_later(session, first, now() + timedelta(hours=5))
        claims.give_up(session, first)
    held = row(db, task.id)
    assert held["reminded_at"] is None
    assert now() < held["reminder_next_at"] <= now() + LEASE
    assert begin(sessions, second) is not None
    assert record(sessions, second, now()) is True


def test_begin_delivery_renews_the_lease_and_reads_the_mail_to_the_owners_address_of_now(db, sessions, owner):
    due = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    task = due_task(owner, title="Service the boiler", description="Call first", due_date=due)
    claim = only_claim(sessions, lease=timedelta(seconds=5))
    db.execute(update(User).where(User.id == owner.id).values(email="new.address@example.com"))
    db.commit()

    reminder = begin(sessions, claim)

    assert reminder == Reminder(claim, "Service the boiler", "Call first", due, "new.address@example.com")
    assert row(db, task.id)["reminder_next_at"] > now() + LEASE - timedelta(seconds=5)


@pytest.mark.parametrize("change", ["moved", "cleared", "completed", "deleted"])
def test_a_reminder_changed_after_its_claim_is_not_delivered(client, db, sessions, owner, headers, change):
    task = due_task(owner)
    claim = only_claim(sessions)

    if change == "deleted":
        response = client.delete(f"/tasks/{task.id}", headers=headers)
    else:
        body = {
            "moved": {"remind_at": (now() + timedelta(hours=1)).isoformat()},
            "cleared": {"remind_at": None},
            "completed": {"status": "completed"},
        }[change]
        response = client.patch(f"/tasks/{task.id}", json=body, headers=headers)
    assert response.status_code in {200, 204}, response.text

    assert begin(sessions, claim) is None
    assert claim_all(sessions) == []
    if change != "deleted":
        assert row(db, task.id)["reminded_at"] is None


def test_a_batch_begins_in_its_own_order_without_the_reminders_cancelled_since(client, sessions, owner, headers):
    tasks = [due_task(owner, title=f"Batch {index}") for index in range(4)]
    claimed = claim_all(sessions)
    cancelled = tasks[1]
    assert client.patch(f"/tasks/{cancelled.id}", json={"remind_at": None}, headers=headers).status_code == 200
    batch = sorted(claimed, key=lambda claim: -claim.task_id)

    with sessions() as session:
        begun = claims.begin_delivery(session, batch, LEASE)

    assert [reminder.claim for reminder in begun] == [claim for claim in batch if claim.task_id != cancelled.id]
    assert [reminder.title for reminder in begun] == ["Batch 3", "Batch 2", "Batch 0"]


def test_a_claim_from_before_a_move_never_delivers_the_moved_reminder(client, db, sessions, owner, headers):
    task = due_task(owner)
    old = only_claim(sessions)
    moved = client.patch(
        f"/tasks/{task.id}", json={"remind_at": (now() + timedelta(hours=1)).isoformat()}, headers=headers
    )
    assert moved.status_code == 200, moved.text
    arrived = now() - timedelta(seconds=1)
    set_row(db, task.id, remind_at=arrived, reminder_next_at=arrived)  # the new time has come
    new = only_claim(sessions)
    assert (new.remind_at, new.attempt) == (arrived, old.attempt)  # counted afresh since the move

    assert begin(sessions, old) is None
    assert record(sessions, old, now()) is False
    assert row(db, task.id)["reminded_at"] is None
    assert begin(sessions, new) is not None


def test_a_reminder_is_never_delivered_before_its_remind_at_whoever_claims_it(db, sessions, owner):
    remind_at = now() + timedelta(hours=1)
    task = TaskFactory(owner=owner, remind_at=remind_at, reminder_next_at=now() - timedelta(seconds=1))
    claim = only_claim(sessions)

    assert begin(sessions, claim) is None
    assert row(db, task.id)["reminded_at"] is None


def test_record_sent_sets_reminded_at_and_disarms_without_touching_updated_at(client, db, sessions, owner, headers):
    task = due_task(owner)
    claim = only_claim(sessions)
    assert begin(sessions, claim) is not None
    updated_at = row(db, task.id)["updated_at"]
    sent_at = now()

    assert record(sessions, claim, sent_at) is True

    stored = row(db, task.id)
    assert (stored["reminded_at"], stored["reminder_next_at"], stored["updated_at"]) == (sent_at, None, updated_at)
    assert instant(client.get(f"/tasks/{task.id}", headers=headers).json()["reminded_at"]) == sent_at
    assert record(sessions, claim, now()) is False  # recorded once
    assert claim_all(sessions) == []


def test_retry_later_arms_the_reminder_for_the_given_time(db, sessions, owner):
    task = due_task(owner)
    claim = only_claim(sessions)
    retry_at = now() + timedelta(minutes=7)

    with sessions() as session:
        claims.retry_later(session, claim, retry_at)

    stored = row(db, task.id)
    assert (stored["reminder_next_at"], stored["reminded_at"]) == (retry_at, None)
    assert claim_all(sessions) == []
    set_row(db, task.id, reminder_next_at=now() - timedelta(seconds=1))  # the retry's time has come
    assert only_claim(sessions) == Claim(task.id, task.remind_at, 2)


def test_give_up_disarms_and_leaves_reminded_at_null(client, db, sessions, owner, headers):
    task = due_task(owner)
    claim = only_claim(sessions)

    with sessions() as session:
        claims.give_up(session, claim)

    stored = row(db, task.id)
    assert (stored["reminder_next_at"], stored["reminded_at"]) == (None, None)
    assert client.get(f"/tasks/{task.id}", headers=headers).json()["reminded_at"] is None
    assert claim_all(sessions) == []


def test_count_pending_counts_armed_reminders_due_or_not(db, sessions, owner):
    engine = db.get_bind()
    assert claims.count_pending(engine) == 0
    due_task(owner)
    due_task(owner)
    TaskFactory(owner=owner, remind_at=now() + timedelta(days=1), reminder_next_at=now() + timedelta(days=1))
    TaskFactory(owner=owner, remind_at=now() - timedelta(days=1), reminded_at=now() - timedelta(days=1))
    TaskFactory(owner=owner)
    assert claims.count_pending(engine) == 3

    claim = claim_all(sessions)[0]
    assert claims.count_pending(engine) == 3  # claimed, not yet sent
    record(sessions, claim, now())
    assert claims.count_pending(engine) == 2


@pytest.mark.postgres_only
def test_two_sweeps_at_once_claim_disjoint_sets_that_cover_every_due_reminder(db, sessions, owner):
    due = now() - timedelta(seconds=1)
    db.execute(
        insert(TASKS),
        [{"owner_id": owner.id, "title": f"Due {n}", "remind_at": due, "reminder_next_at": due} for n in range(200)],
    )
    db.commit()
    start = threading.Barrier(2)
    claimed: list[list[int]] = [[], []]

    def sweep(mine: list[int]) -> None:
        with sessions() as session:
            start.wait()
            while batch := claims.claim_due(session, LEASE, 10):
                mine.extend(claim.task_id for claim in batch)

    threads = [threading.Thread(target=sweep, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    first, second = claimed
    assert set(first).isdisjoint(second)
    assert len(first) + len(second) == 200
    assert set(first) | set(second) == set(db.scalars(select(TASKS.c.id)))


@pytest.mark.postgres_only
def test_a_sweep_passes_over_a_reminder_another_sweep_holds_instead_of_waiting_for_it(db, sessions, owner):
    held, free = due_task(owner), due_task(owner)
    engine = db.get_bind()
    with engine.connect().execution_options(isolation_level="READ COMMITTED") as other, other.begin():
        other.execute(select(TASKS.c.id).where(TASKS.c.id == held.id).with_for_update())
        started = time.monotonic()
        claimed = claim_all(sessions)  # a sweep that waited would hit the 5 s statement timeout
        waited = time.monotonic() - started

    assert [claim.task_id for claim in claimed] == [free.id]
    assert waited < 2
    assert only_claim(sessions).task_id == held.id


# --- the mail ---------------------------------------------------------------------------------------------------


def test_deliver_to_the_log_names_the_title_and_records_the_reminder(db, sessions, settings, owner, caplog):
    task = due_task(owner, title="Water the ficus")
    batch = claim_all(sessions)
    caplog.set_level(logging.INFO, logger="task_api.reminders")

    delivery.deliver(batch, sessions, LogMailer(), settings)

    lines = [record.getMessage() for record in caplog.records if record.name == "task_api.reminders.mail"]
    assert len(lines) == 1
    assert f"reminder for {owner.email}: Reminder: Water the ficus" in lines[0]
    stored = row(db, task.id)
    assert stored["reminded_at"] is not None
    assert stored["reminded_at"] >= task.remind_at
    assert stored["reminder_next_at"] is None


class RefusingForNow:
    """A mail server answering 451 to every message, as the Mailer protocol sees it."""

    @contextmanager
    def connect(self) -> Iterator[Callable[[EmailMessage], None]]:
        def send(_: EmailMessage) -> None:
            raise MailDeferred("451 try again later")

        yield send


@pytest.mark.parametrize(("claims_before", "armed"), [(9, True), (delivery.MOST_ATTEMPTS - 1, False), (60, False)])
def test_a_deferred_reminder_waits_at_most_an_hour_and_is_dropped_after_its_last_attempt(
    db, sessions, settings, owner, claims_before, armed
):
    task = due_task(owner, reminder_attempt=claims_before)

    delivery.deliver(claim_all(sessions), sessions, RefusingForNow(), settings)

    stored = row(db, task.id)
    assert stored["reminded_at"] is None
    if armed:  # 10 s doubled nine times is over an hour: an hour it is
        assert now() + timedelta(minutes=59) < stored["reminder_next_at"] <= now() + timedelta(hours=1)
    else:
        assert stored["reminder_next_at"] is None


def test_a_delivery_past_its_time_gives_its_batch_back_unsent(db, sessions, settings, owner, caplog):
    tasks = [due_task(owner, title=f"Late {index}") for index in range(3)]
    caplog.set_level(logging.INFO, logger="task_api.reminders")

    delivery.deliver(claim_all(sessions), sessions, LogMailer(), settings, give_back_after=0)

    assert not [record for record in caplog.records if record.name == "task_api.reminders.mail"]
    for task in tasks:
        stored = row(db, task.id)
        assert stored["reminded_at"] is None
        assert stored["reminder_next_at"] > now()  # still claimed: claimed again once the lease lapses


def mail_for(client, sessions, headers, db, **fields: Any):
    """The message for a task created through the API, once its reminder has fallen due."""
    task = create(client, headers, remind_at=(now() + timedelta(hours=1)).isoformat(), **fields)
    passed = now() - timedelta(seconds=1)
    set_row(db, task["id"], remind_at=passed, reminder_next_at=passed)
    reminder = begin(sessions, only_claim(sessions))
    assert reminder is not None
    return reminder_message(reminder, MAIL_FROM)


def raw_headers(message) -> bytes:
    return message.as_bytes(policy=email.policy.SMTP).split(b"\r\n\r\n", 1)[0]


def test_the_mail_goes_from_mail_from_to_the_owner_with_the_title_as_subject(client, db, sessions, owner, headers):
    message = mail_for(client, sessions, headers, db, title="Renew the lease")

    assert message["Subject"] == "Reminder: Renew the lease"
    assert message["From"] == MAIL_FROM
    assert message["To"] == owner.email
    assert message["Date"]


def test_the_subject_drops_the_titles_control_characters(client, db, sessions, headers):
    title = "Pay\tthe\x1b[31m rent\u2028now\x7f!"
    assert create(client, headers, title=title)["title"] == title  # the API keeps them

    message = mail_for(client, sessions, headers, db, title=title)

    assert message["Subject"] == "Reminder: Paythe[31m rentnow!"
    subject = [line for line in raw_headers(message).split(b"\r\n") if line.startswith(b"Subject:")]
    assert subject == [b"Subject: Reminder: Paythe[31m rentnow!"]


def test_a_non_ascii_subject_is_rfc_2047_encoded(client, db, sessions, headers):
    title = "Café ☕ 予定を確認"

    message = mail_for(client, sessions, headers, db, title=title)

    head = raw_headers(message)
    assert head.isascii()
    assert b"=?utf-8?" in head.lower()
    parsed = email.message_from_bytes(message.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)
    assert parsed["Subject"] == f"Reminder: {title}"
    assert title in parsed.get_content()


def test_the_message_id_names_the_task_and_its_remind_at(db, sessions, owner):
    remind_at = now() - timedelta(minutes=1)
    task = due_task(owner, remind_at=remind_at)
    first = begin(sessions, only_claim(sessions))
    set_row(db, task.id, reminder_next_at=now() - timedelta(seconds=1))  # its delivery died; the lease ran out
    again = begin(sessions, only_claim(sessions))
    assert first is not None
    assert again is not None
    assert again.claim.attempt == 2

    message_id = reminder_message(first, MAIL_FROM)["Message-ID"]

    assert message_id == f"<reminder.{task.id}.{int(remind_at.timestamp() * 1_000_000)}@tasks.example.com>"
    assert reminder_message(again, MAIL_FROM)["Message-ID"] == message_id
    moved = Reminder(Claim(task.id, remind_at + timedelta(minutes=5), 1), "t", "", None, owner.email)
    other = Reminder(Claim(task.id + 1, remind_at, 1), "t", "", None, owner.email)
    assert reminder_message(moved, MAIL_FROM)["Message-ID"] != message_id
    assert reminder_message(other, MAIL_FROM)["Message-ID"] != message_id


def test_the_body_has_the_title_the_due_date_and_the_start_of_the_description(client, db, sessions, headers):
    description = "".join(f"{n:04d}|" for n in range(200))  # 1000 characters, no two spans alike
    due_date = "2031-05-06T07:08:09Z"

    message = mail_for(
        client, sessions, headers, db, title="Submit the report", description=description, due_date=due_date
    )

    body = message.get_content()
    assert "Submit the report" in body
    assert "2031-05-06T07:08:09" in body
    assert description[:500] in body
    assert description[:501] not in body


def test_the_body_of_a_task_without_a_due_date_or_description_has_the_title_alone(client, db, sessions, headers):
    message = mail_for(client, sessions, headers, db, title="Stretch")

    assert [line for line in message.get_content().splitlines() if line] == ["Reminder: Stretch"]


# --- the embedded default ---------------------------------------------------------------------------------------


def test_the_embedded_default_writes_a_due_reminder_to_its_log(tmp_path):
    """`make run`: no DATABASE_URL, no REDIS_URL, no SMTP_URL; the reminder shows in the log."""
    settings_names = {name.upper() for name in Settings.model_fields}
    environment = {key: value for key, value in os.environ.items() if key.upper() not in settings_names}
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "task_api", "serve", "--port", str(port)],
            cwd=tmp_path,
            env={**environment, "PYTHONPATH": str(ROOT), "BCRYPT_ROUNDS": "4"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url) or server.poll() is not None, timeout=60)
        assert server.poll() is None, log.read_text()
        account = {"email": "newcomer@example.com", "password": PASSWORD}
        assert httpx2.post(f"{url}/register", json=account, timeout=30).status_code == 201
        token = httpx2.post(f"{url}/login", json=account, timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        remind_at = now() + timedelta(seconds=3)
        created = httpx2.post(
            f"{url}/tasks", json={"title": "Feed the cat", "remind_at": remind_at.isoformat()}, headers=headers
        )
        assert created.status_code == 201, created.text
        task = created.json()

        def reminder_lines() -> list[str]:
            return [line for line in log.read_text().splitlines() if "Reminder: Feed the cat" in line]

        wait_until(lambda: bool(reminder_lines()), timeout=(remind_at - now()).total_seconds() + 15)
        assert len(reminder_lines()) == 1, log.read_text()
        assert "newcomer@example.com" in reminder_lines()[0]
        reminded_at = instant(httpx2.get(f"{url}/tasks/{task['id']}", headers=headers).json()["reminded_at"])
        assert reminded_at is not None
        assert reminded_at >= remind_at
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (tmp_path / "task_api.sqlite3").exists()  # the default database, a file beside it


def healthy(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/health", timeout=1).status_code == 200
    except httpx2.TransportError:
        return False


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s")
        time.sleep(0.1)


# --- settings ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        pytest.param({"smtp_url": "http://mail.example.com"}, "SMTP_URL", id="SMTP_URL-scheme"),
        pytest.param({"smtp_url": "mail.example.com:25"}, "SMTP_URL", id="SMTP_URL-no-scheme"),
        pytest.param({"mail_from": "reminders"}, "MAIL_FROM", id="MAIL_FROM-no-at"),
        pytest.param({"mail_from": "Tasks <a@b.example>\r\nBcc: x@y.example"}, "MAIL_FROM", id="MAIL_FROM-newline"),
        pytest.param({"smtp_timeout": 10, "reminder_lease_seconds": 29}, "REMINDER_LEASE_SECONDS", id="lease"),
    ],
)
def test_settings_refuse_a_bad_mail_setting_naming_its_variable(overrides, variable):
    with pytest.raises(ValidationError) as refused:
        Settings(secret_key=SECRET_KEY, _env_file=None, **overrides)

    assert variable in explain(refused.value)


def test_settings_accept_the_documented_mail_settings():
    settings = Settings(
        secret_key=SECRET_KEY,
        smtp_url="smtps://user:secret@mail.example.com:465",
        mail_from=MAIL_FROM,
        smtp_timeout=10,
        reminder_lease_seconds=30,
        _env_file=None,
    )

    assert (settings.smtp_url, settings.mail_from) == ("smtps://user:secret@mail.example.com:465", MAIL_FROM)
    assert Settings(secret_key=SECRET_KEY, smtp_url="smtp://localhost:1025", _env_file=None).smtp_url


# --- the migration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("redis_url", "hosts", "password"),
    [
        ("redis+sentinel://sent-0:26379,sent-1/mymaster/2", [("sent-0", 26379), ("sent-1", 26379)], None),
        ("redis+sentinel://:p%40ss%2Fword@10.0.0.5:26380/mymaster/2", [("10.0.0.5", 26380)], "p@ss/word"),
        ("redis+sentinel://[::1]:26379/mymaster/2", [("::1", 26379)], None),
    ],
)
def test_a_sentinel_redis_url_becomes_a_broker_url_kombu_reads_back(redis_url, hosts, password):
    url, options = broker(Settings(redis_url=redis_url, secret_key=SECRET_KEY, _env_file=None))

    parts = [url_to_parts(part) for part in url.split(";")]
    assert [(part.hostname, part.port) for part in parts] == hosts
    assert {part.password for part in parts} == {password}
    assert {part.path for part in parts} == {"2"}
    assert options == {"master_name": "mymaster"}


def test_a_plain_redis_url_is_the_broker_as_it_is():
    assert broker(Settings(redis_url="redis://cache:6379/3", secret_key=SECRET_KEY, _env_file=None)) == (
        "redis://cache:6379/3",
        {},
    )


def test_a_worker_with_more_threads_than_connections_refuses_to_start(database_url):
    # the worker's own budget: the API, which runs no worker threads, may well have a smaller pool
    refused = run_cli(
        database_url, "worker", REDIS_URL=REDIS_URL, WORKER_CONCURRENCY="7", DB_POOL_SIZE="4", DB_MAX_OVERFLOW="2"
    )

    assert refused.returncode != 0
    assert "WORKER_CONCURRENCY must not exceed DB_POOL_SIZE + DB_MAX_OVERFLOW" in refused.stderr
