"""Reminders delivered end to end with the real parts (issue #20): `python -m task_api worker`
and `beat` as processes of their own, the suite's Redis as their broker, the test database,
and an SMTP server in a thread that keeps what it receives (tests/mail_sink.py). Reminders
are made through the API; what counts is the mail that arrives and the rows left behind.

The workers run with short times so that each failure heals within seconds: a lease of LEASE
seconds, a first retry after RETRY, a sweep every half second."""

import base64
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import Row, insert, select
from sqlalchemy.orm import Session

from task_api.models import Task, TaskPriority, TaskStatus, User
from tests.conftest import REDIS_URL, ROOT, THROUGH_PGBOUNCER, cli_environment, free_port
from tests.factories import UserFactory
from tests.mail_sink import MailSink, Received

pytestmark = [
    pytest.mark.postgres_only,  # two sweeps at once are kept apart by FOR UPDATE SKIP LOCKED
    pytest.mark.skipif(THROUGH_PGBOUNCER, reason="the workers connect to the database directly"),
]

# SMTP_TIMEOUT: a server slower than this to take a message gets it twice (the client gives up, and
# tries again). The sink shares its process with the test, and a busy machine can stall it for a second.
SMTP_TIMEOUT = 2
LEASE = 3 * SMTP_TIMEOUT  # REMINDER_LEASE_SECONDS, its least: a dead worker's claims are taken again after this
RETRY = 1  # REMINDER_RETRY_SECONDS: the first wait after a deferral, doubled on each claim
BATCH = 5  # REMINDER_BATCH_SIZE: reminders per delivery job
CONCURRENCY = 4  # WORKER_CONCURRENCY: delivery jobs a worker runs at once
SLOW = 0.3  # a slow mail server's wait before answering a message, well within SMTP_TIMEOUT
SETTLE = 1.0  # long enough for a second copy to arrive: two sweeps and a delivery
STOP_TIMEOUT = 10
QUEUE = "task_api.reminders"
DELIVER = "task_api.reminders.deliver"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
READY = {"worker": " ready.", "beat": "maxinterval"}  # the worker's last line when it starts; beat's banner
FAILED = "task_api_reminders_failed_total"
SENT = "task_api_reminders_sent_total"

T = TypeVar("T")


def wait_until(condition: Callable[[], T], what: str, timeout: float = 20) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


class Service:
    """`python -m task_api worker` or `beat`, its output in a file."""

    def __init__(self, command: str, environment: dict[str, str], log: Path) -> None:
        self.command = command
        self.log = log
        self.metrics_url = f"http://127.0.0.1:{environment['WORKER_METRICS_PORT']}/metrics"
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "task_api", command],
                cwd=ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self) -> None:
        wait_until(lambda: READY[self.command] in self.output() or not self.alive, f"{self.command} to start", 60)
        assert self.alive, self.output()

    def stop(self) -> int:
        """SIGTERM, and the exit code, which must come within STOP_TIMEOUT."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=STOP_TIMEOUT)

    def shut_down(self) -> None:
        if not self.alive:
            return
        try:
            self.stop()
        except subprocess.TimeoutExpired:
            self.kill()

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the worker's /metrics; 0 while the counter has not been touched."""
        text = httpx2.get(self.metrics_url, timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                    return sample.value
        return 0.0


class Fleet:
    """The worker and beat every test has, and any more a test starts (stopped after it)."""

    def __init__(self, environment: dict[str, str], directory: Path) -> None:
        self.environment = environment
        self.directory = directory
        self.services: list[Service] = []
        self.worker = self.start("worker")
        self.beat = self.start("beat")

    def start(self, command: str) -> Service:
        """Another worker or beat, starting (`wait_ready` waits for it)."""
        environment = {**self.environment, "WORKER_METRICS_PORT": str(free_port())}
        service = Service(command, environment, self.directory / f"{command}-{len(self.services)}.log")
        self.services.append(service)
        return service

    def ensure_running(self) -> None:
        if not self.worker.alive:
            self.worker = self.start("worker")
        if not self.beat.alive:
            self.beat = self.start("beat")
        self.worker.wait_ready()
        self.beat.wait_ready()

    def stop_extras(self) -> None:
        for service in self.services:
            if service not in (self.worker, self.beat):
                service.shut_down()

    def stop_all(self) -> None:
        for service in self.services:
            service.shut_down()


@pytest.fixture(scope="module")
def sink() -> Iterator[MailSink]:
    mail_sink = MailSink(free_port())
    mail_sink.start()
    yield mail_sink
    mail_sink.stop()


@pytest.fixture(scope="module")
def services(database_url: str, sink: MailSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    environment = cli_environment(
        database_url,
        APP_ENV="test",
        REDIS_URL=REDIS_URL,
        SMTP_URL=sink.url,
        SMTP_TIMEOUT=str(SMTP_TIMEOUT),
        REMINDER_LEASE_SECONDS=str(LEASE),
        REMINDER_RETRY_SECONDS=str(RETRY),
        REMINDER_SWEEP_SECONDS="0.5",
        REMINDER_BATCH_SIZE=str(BATCH),
        WORKER_CONCURRENCY=str(CONCURRENCY),
        PYTHONUNBUFFERED="1",
    )
    fleet = Fleet(environment, tmp_path_factory.mktemp("reminders"))
    try:
        fleet.ensure_running()
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def fleet(services: Fleet, sink: MailSink, db: Session) -> Iterator[Fleet]:
    """A worker and a beat running, and a mail server accepting at once, with nothing received yet."""
    if not sink.running:
        sink.start()
    sink.accept()
    sink.clear()
    services.ensure_running()
    yield services
    services.stop_extras()


@pytest.fixture
def owner(db: Session) -> User:
    return UserFactory()


@pytest.fixture
def headers(owner: User, auth_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return auth_headers(owner)


def due(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def create(client: TestClient, headers: dict[str, str], title: str, remind_at: datetime) -> dict[str, Any]:
    response = client.post("/tasks", json={"title": title, "remind_at": remind_at.isoformat()}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def create_many(client: TestClient, headers: dict[str, str], count: int, remind_at: datetime) -> list[dict[str, Any]]:
    return [create(client, headers, f"Reminder {number}", remind_at) for number in range(count)]


def sending_slowly(
    client: TestClient, headers: dict[str, str], sink: MailSink, count: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """`count` reminders due in 1.5 s, once the worker has begun mailing them to a slow sink."""
    sink.answer_slowly(SLOW)
    tasks = create_many(client, headers, count, due(1.5))
    ids = [task["id"] for task in tasks]
    wait_until(lambda: any(mails_for(sink, task_id) for task_id in ids), "the worker to be sending")
    return tasks, ids


def message_id(task_id: int, remind_at: datetime) -> str:
    return f"<reminder.{task_id}.{(remind_at - EPOCH) // timedelta(microseconds=1)}@localhost>"


def expected_message_id(task: dict[str, Any]) -> str:
    return message_id(task["id"], datetime.fromisoformat(task["remind_at"]))


def mails_for(sink: MailSink, task_id: int) -> list[Received]:
    return [mail for mail in sink.received if mail.message_id.startswith(f"<reminder.{task_id}.")]


def all_arrived(sink: MailSink, ids: list[int]) -> bool:
    return all(mails_for(sink, task_id) for task_id in ids)


def states(db: Session, ids: list[int]) -> dict[int, Row[Any]]:
    """The reminder columns of these tasks, as the database has them now."""
    rows = db.execute(
        select(Task.id, Task.remind_at, Task.reminded_at, Task.reminder_next_at, Task.reminder_attempt).where(
            Task.id.in_(ids)
        )
    ).all()
    db.commit()
    return {row.id: row for row in rows}


def all_recorded(db: Session, ids: list[int]) -> bool:
    return all(row.reminded_at is not None for row in states(db, ids).values())


def queued_deliveries(items: list[str]) -> list[list[Any]]:
    """The claims (task id, remind_at, attempt) in the broker's queued delivery messages."""
    claims = []
    for item in items:
        message = json.loads(item)
        if message["headers"]["task"] == DELIVER:
            args, _, _ = json.loads(base64.b64decode(message["body"]))
            claims += args[0]
    return claims


def test_a_reminder_arrives_once_at_its_time_to_its_owner(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, owner: User, headers: dict[str, str]
) -> None:
    titles = ["Pay the rent", "Überweisung für März — 家賃 ✓"]
    remind_at = due(2)
    tasks = [create(client, headers, title, remind_at) for title in titles]
    ids = [task["id"] for task in tasks]

    wait_until(lambda: all_arrived(sink, ids), "both reminders")
    wait_until(lambda: all_recorded(db, ids), "both reminders recorded")
    time.sleep(SETTLE)

    for task, title in zip(tasks, titles, strict=True):
        [mail] = mails_for(sink, task["id"])
        stored_remind_at = datetime.fromisoformat(task["remind_at"])
        assert mail.rcpt_tos == (owner.email,)
        assert mail.message["To"] == owner.email
        assert mail.message["Subject"] == f"Reminder: {title}"
        assert mail.message_id == expected_message_id(task)
        assert title in mail.message.get_content()
        assert stored_remind_at.timestamp() <= mail.at < stored_remind_at.timestamp() + 10
        body = client.get(f"/tasks/{task['id']}", headers=headers).json()
        reminded_at = datetime.fromisoformat(body["reminded_at"])
        assert reminded_at >= stored_remind_at
        assert abs(reminded_at.timestamp() - mail.at) < 2
    encoded = BytesParser(policy=policy.compat32).parsebytes(mails_for(sink, ids[1])[0].raw)["Subject"]
    assert encoded.isascii()
    assert "=?utf-8?" in encoded.lower()


def test_moving_clearing_completing_or_deleting_sends_nothing_at_the_old_time(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    old, new = due(2.5), due(4)
    moved, cleared, completed, deleted, kept = (
        create(client, headers, title, old) for title in ("moved", "cleared", "completed", "deleted", "kept")
    )
    response = client.patch(f"/tasks/{moved['id']}", json={"remind_at": new.isoformat()}, headers=headers)
    assert response.status_code == 200, response.text
    moved = response.json()
    assert datetime.fromisoformat(moved["remind_at"]) == new
    for task, change in ((cleared, {"remind_at": None}), (completed, {"status": "completed"})):
        response = client.patch(f"/tasks/{task['id']}", json=change, headers=headers)
        assert response.status_code == 200, response.text
    assert client.delete(f"/tasks/{deleted['id']}", headers=headers).status_code == 204

    wait_until(lambda: mails_for(sink, kept["id"]), "the unchanged reminder (the worker is sending)")
    wait_until(lambda: mails_for(sink, moved["id"]), "the moved reminder")
    time.sleep(SETTLE)

    for task in (cleared, completed, deleted):
        assert mails_for(sink, task["id"]) == [], task["title"]
    [mail] = mails_for(sink, moved["id"])
    assert mail.at >= new.timestamp()
    assert mail.message_id == expected_message_id(moved)
    assert len(mails_for(sink, kept["id"])) == 1
    for task in (cleared, completed):
        assert client.get(f"/tasks/{task['id']}", headers=headers).json()["reminded_at"] is None


def test_a_killed_workers_claimed_reminders_are_all_sent_by_another(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    tasks, ids = sending_slowly(client, headers, sink, 8)
    fleet.worker.kill()
    rows = states(db, ids).values()
    held = {row.id for row in rows if row.reminded_at is None}
    assert held, "the worker held no reminder when it was killed"
    assert all(row.reminder_attempt >= 1 and row.reminder_next_at is not None for row in rows if row.id in held)

    sink.accept()
    fleet.ensure_running()
    wait_until(lambda: all_arrived(sink, ids), "every reminder", timeout=30)
    wait_until(lambda: all_recorded(db, ids), "every reminder recorded")
    time.sleep(SETTLE)

    received = sink.received
    for task in tasks:
        copies = mails_for(sink, task["id"])
        assert {mail.message_id for mail in copies} == {expected_message_id(task)}
        if len(copies) > 1:  # only a mail the killed worker was sending: the last over its connection
            first = copies[0]
            assert len(copies) == 2
            assert first is [mail for mail in received if mail.connection == first.connection][-1]
    assert all(row.reminder_attempt >= 2 for row in states(db, list(held)).values())  # taken again


def test_a_temporary_refusal_is_retried_with_backoff_until_accepted(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, owner: User, headers: dict[str, str]
) -> None:
    worker = fleet.worker
    deferred = worker.metric(FAILED, outcome="deferred")
    sink.refuse_data("451 4.3.0 try later")
    task = create(client, headers, "Greylisted", due(1))

    wait_until(lambda: len(sink.refusals) >= 2, "two refusals")
    sink.accept()
    [mail] = wait_until(lambda: mails_for(sink, task["id"]), "the reminder once accepted")
    wait_until(lambda: all_recorded(db, [task["id"]]), "the reminder recorded")
    time.sleep(SETTLE)

    first, second = sink.refusals
    assert first.recipient == second.recipient == owner.email
    assert second.at - first.at >= RETRY
    assert mail.at - second.at >= 2 * RETRY
    assert len(mails_for(sink, task["id"])) == 1
    assert worker.metric(FAILED, outcome="deferred") == deferred + 2
    assert client.get(f"/tasks/{task['id']}", headers=headers).json()["reminded_at"] is not None
    assert worker.alive


def test_a_permanent_refusal_is_counted_and_dropped(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, owner: User, headers: dict[str, str]
) -> None:
    worker = fleet.worker
    refused = worker.metric(FAILED, outcome="refused")
    sink.refuse_recipients("550 5.1.1 no such user")
    task = create(client, headers, "Nobody reads this", due(1))

    wait_until(lambda: worker.metric(FAILED, outcome="refused") == refused + 1, "the refusal counted")
    sink.accept()
    time.sleep(SETTLE)

    assert [refusal.recipient for refusal in sink.refusals] == [owner.email]
    assert mails_for(sink, task["id"]) == []
    [row] = states(db, [task["id"]]).values()
    assert row.reminded_at is None
    assert row.reminder_next_at is None  # disarmed: nothing is sent later
    assert client.get(f"/tasks/{task['id']}", headers=headers).json()["reminded_at"] is None
    assert worker.alive


def test_an_unreachable_mail_server_is_retried_until_it_is_back(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    worker = fleet.worker
    deferred = worker.metric(FAILED, outcome="deferred")
    sink.stop()
    task = create(client, headers, "Mail server down", due(1))

    wait_until(lambda: worker.metric(FAILED, outcome="deferred") > deferred, "the failed attempt counted")
    assert all_recorded(db, [task["id"]]) is False
    sink.start()
    wait_until(lambda: mails_for(sink, task["id"]), "the reminder once the server is back")
    wait_until(lambda: all_recorded(db, [task["id"]]), "the reminder recorded")
    time.sleep(SETTLE)

    assert len(mails_for(sink, task["id"])) == 1
    assert worker.alive


@pytest.mark.timeout(180)
def test_500_reminders_due_in_one_second_are_each_sent_once_by_two_workers(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, owner: User, headers: dict[str, str]
) -> None:
    first_worker = fleet.worker
    remind_at = due(3)
    second_worker = fleet.start("worker")
    sent_before = first_worker.metric(SENT)
    through_the_api = create_many(client, headers, 5, remind_at)
    # The rest are written as the API writes them (checked on the first five): armed for remind_at, never claimed.
    for row in states(db, [task["id"] for task in through_the_api]).values():
        assert (row.reminder_next_at, row.reminder_attempt, row.reminded_at) == (row.remind_at, 0, None)
    times = [remind_at + timedelta(microseconds=1999 * number) for number in range(1, 496)]
    ids = db.scalars(
        insert(Task).returning(Task.id, sort_by_parameter_order=True),
        [
            {
                "owner_id": owner.id,
                "title": f"Bulk reminder {number}",
                "description": "",
                "status": TaskStatus.new,
                "priority": TaskPriority.medium,
                "remind_at": at,
                "reminder_next_at": at,
                "reminder_attempt": 0,
            }
            for number, at in enumerate(times)
        ],
    ).all()
    db.commit()
    second_worker.wait_ready()
    due_at = {expected_message_id(task): remind_at for task in through_the_api}
    due_at |= {message_id(task_id, at): at for task_id, at in zip(ids, times, strict=True)}
    assert len(due_at) == 500

    wait_until(lambda: {mail.message_id for mail in sink.received} >= due_at.keys(), "500 reminders", timeout=120)
    wait_until(lambda: all_recorded(db, [*ids, *(task["id"] for task in through_the_api)]), "500 recorded")
    time.sleep(SETTLE)

    received = sink.received
    assert Counter(mail.message_id for mail in received) == Counter(due_at.keys())
    assert all(mail.at >= due_at[mail.message_id].timestamp() for mail in received)
    sent_by_first, sent_by_second = first_worker.metric(SENT) - sent_before, second_worker.metric(SENT)
    assert sent_by_first + sent_by_second == 500
    assert sent_by_first > 0
    assert sent_by_second > 0
    assert second_worker.stop() == 0


def test_a_flushed_broker_loses_no_claimed_reminder(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str], redis: Redis
) -> None:
    # More delivery jobs than the worker runs at once, each slow: some wait in Redis meanwhile.
    sink.answer_slowly(0.25)
    tasks = create_many(client, headers, (CONCURRENCY + 2) * BATCH, due(1.5))
    ids = [task["id"] for task in tasks]

    wait_until(lambda: queued_deliveries(redis.lrange(QUEUE, 0, -1)), "deliveries waiting in the queue")
    with redis.pipeline(transaction=True) as pipeline:
        pipeline.lrange(QUEUE, 0, -1)
        pipeline.flushdb()
        queued, _ = pipeline.execute()
    flushed = {task_id for task_id, _, _ in queued_deliveries(queued)}
    assert flushed
    assert all(row.reminded_at is None for row in states(db, list(flushed)).values())

    wait_until(lambda: all_arrived(sink, ids), "every reminder", timeout=30)
    wait_until(lambda: all_recorded(db, ids), "every reminder recorded")
    time.sleep(SETTLE)

    assert Counter(mail.message_id for mail in sink.received) == Counter(expected_message_id(task) for task in tasks)
    assert all(row.reminder_attempt >= 2 for row in states(db, list(flushed)).values())  # taken again


def test_a_second_beat_sends_nothing_twice(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    second_beat = fleet.start("beat")
    tasks = create_many(client, headers, 20, due(2.5))
    ids = [task["id"] for task in tasks]
    second_beat.wait_ready()

    wait_until(lambda: all_arrived(sink, ids), "every reminder")
    wait_until(lambda: all_recorded(db, ids), "every reminder recorded")
    time.sleep(SETTLE)

    assert Counter(mail.message_id for mail in sink.received) == Counter(expected_message_id(task) for task in tasks)
    assert second_beat.alive
    assert second_beat.stop() == 0


def test_sigterm_stops_worker_and_beat_cleanly_and_the_worker_finishes_what_it_holds(
    fleet: Fleet, sink: MailSink, client: TestClient, db: Session, headers: dict[str, str]
) -> None:
    tasks, ids = sending_slowly(client, headers, sink, 4)

    assert fleet.worker.stop() == 0
    assert fleet.beat.stop() == 0

    assert Counter(mail.message_id for mail in sink.received) == Counter(expected_message_id(task) for task in tasks)
    assert all_recorded(db, ids)
