"""The "Tasks" section of API.md, as a user of the HTTP API sees it."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from task_api.errors import PreconditionFailed
from task_api.models import Task, TaskPriority, TaskStatus
from task_api.tasks import service
from task_api.tasks.schemas import TaskOut
from tests.factories import TaskFactory, UserFactory

MISSING_ID = 999_999
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
ITEM_ROUTES = ["GET", "PUT", "PATCH", "DELETE"]
WRITES = ["PUT", "PATCH"]


def utc(value: str) -> datetime:
    """Parse an ISO 8601 datetime from a response, insisting that it carries a UTC offset."""
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0), value
    return parsed


def stored(db, task_id: int) -> Task | None:
    db.expire_all()
    return db.get(Task, task_id)


def snapshot(db, task_id: int) -> dict[str, Any]:
    task = stored(db, task_id)
    assert task is not None
    columns = ("title", "description", "status", "priority", "due_date", "owner_id", "created_at", "updated_at")
    return {column: getattr(task, column) for column in columns}


def task_count(db) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(Task))


def assert_validation_error(response) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail
    assert {"loc", "msg", "type"} <= detail[0].keys()


def assert_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body.keys() == {"detail"}
    assert isinstance(body["detail"], str)
    assert body["detail"]


def list_tasks(client, headers, **params) -> dict[str, Any]:
    response = client.get("/tasks", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def listed_ids(client, headers, **params) -> list[int]:
    return [item["id"] for item in list_tasks(client, headers, **params)["items"]]


# --- POST /tasks ------------------------------------------------------------------------------------------------


def test_create_answers_201_with_the_task_location_and_etag(client, db, owner, headers):
    response = client.post("/tasks", json={"title": "Write the report"}, headers=headers)

    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body.keys() == {
        "id",
        "title",
        "description",
        "status",
        "priority",
        "due_date",
        "owner_id",
        "created_at",
        "updated_at",
        "remind_at",
        "reminded_at",
    }
    assert body["remind_at"] is None
    assert body["reminded_at"] is None
    assert response.headers["Location"] == f"/tasks/{body['id']}"
    assert response.headers["ETag"]
    task = stored(db, body["id"])
    assert task is not None
    assert task.title == "Write the report"
    assert task.owner_id == owner.id


def test_create_applies_the_defaults_and_makes_the_caller_the_owner(client, db, owner, headers):
    body = client.post("/tasks", json={"title": "Defaults"}, headers=headers).json()

    assert body["title"] == "Defaults"
    assert body["description"] == ""
    assert body["status"] == "new"
    assert body["priority"] == "medium"
    assert body["due_date"] is None
    assert body["owner_id"] == owner.id
    task = stored(db, body["id"])
    assert (task.description, task.status, task.priority, task.due_date) == (
        "",
        TaskStatus.new,
        TaskPriority.medium,
        None,
    )


def test_create_stores_every_field_sent(client, db, headers):
    sent = {
        "title": "Full",
        "description": "All the fields",
        "status": "in_progress",
        "priority": "high",
        "due_date": "2030-05-01T10:00:00+00:00",
    }

    body = client.post("/tasks", json=sent, headers=headers).json()

    assert {key: body[key] for key in ("title", "description", "status", "priority")} == {
        key: sent[key] for key in ("title", "description", "status", "priority")
    }
    assert utc(body["due_date"]) == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)
    task = stored(db, body["id"])
    assert task.status == TaskStatus.in_progress
    assert task.priority == TaskPriority.high
    assert task.due_date == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)


def test_create_trims_the_title(client, db, headers):
    body = client.post("/tasks", json={"title": "  \tPadded title \n "}, headers=headers).json()

    assert body["title"] == "Padded title"
    assert stored(db, body["id"]).title == "Padded title"


@pytest.mark.parametrize("title", ["x" * 200, "  " + "x" * 200 + "  "], ids=["200 chars", "200 chars once trimmed"])
def test_a_200_character_title_is_accepted(client, headers, title):
    response = client.post("/tasks", json={"title": title}, headers=headers)

    assert response.status_code == 201, response.text
    assert response.json()["title"] == "x" * 200


def test_a_10000_character_description_is_accepted(client, headers):
    response = client.post("/tasks", json={"title": "Long", "description": "d" * 10_000}, headers=headers)

    assert response.status_code == 201
    assert response.json()["description"] == "d" * 10_000


def test_datetimes_are_iso_8601_in_utc_and_a_due_date_is_converted_to_utc(client, db, headers):
    before = datetime.now(UTC)
    body = client.post(
        "/tasks", json={"title": "Offset", "due_date": "2030-05-01T12:00:00+02:00"}, headers=headers
    ).json()

    assert utc(body["due_date"]) == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)
    created_at, updated_at = utc(body["created_at"]), utc(body["updated_at"])
    assert before - timedelta(seconds=5) <= created_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert updated_at >= created_at
    assert stored(db, body["id"]).due_date == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)
    fetched = client.get(f"/tasks/{body['id']}", headers=headers).json()
    listed = list_tasks(client, headers)["items"][0]
    for task in (fetched, listed):
        assert utc(task["due_date"]) == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)
        utc(task["created_at"])
        utc(task["updated_at"])


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing title"),
        pytest.param({"title": ""}, id="empty title"),
        pytest.param({"title": "   "}, id="blank title"),
        pytest.param({"title": None}, id="null title"),
        pytest.param({"title": 42}, id="number title"),
        pytest.param({"title": "x" * 201}, id="201-char title"),
        pytest.param({"title": "nul\x00here"}, id="NUL in title"),
        pytest.param({"title": "t", "description": "d" * 10_001}, id="10001-char description"),
        pytest.param({"title": "t", "due_date": "2030-05-01T10:00:00"}, id="naive due_date"),
        pytest.param({"title": "t", "due_date": "not a date"}, id="unparseable due_date"),
        pytest.param({"title": "t", "status": "done"}, id="bad status"),
        pytest.param({"title": "t", "priority": "urgent"}, id="bad priority"),
        pytest.param({"title": "t", "owner_id": 1}, id="unknown field owner_id"),
        pytest.param({"title": "t", "id": 1}, id="unknown field id"),
        pytest.param({"title": "t", "created_at": "2020-01-01T00:00:00Z"}, id="unknown field created_at"),
        pytest.param({"title": "t", "updated_at": "2020-01-01T00:00:00Z"}, id="unknown field updated_at"),
        pytest.param({"title": "t", "colour": "red"}, id="unknown field colour"),
    ],
)
def test_create_refuses_an_invalid_body_with_422(client, db, headers, body):
    response = client.post("/tasks", json=body, headers=headers)

    assert_validation_error(response)
    assert task_count(db) == 0


@pytest.mark.parametrize("body", [[], ["title"], "title", 42, None], ids=["[]", "list", "string", "number", "null"])
def test_create_refuses_a_body_that_is_not_an_object(client, db, headers, body):
    response = client.post("/tasks", json=body, headers=headers)

    assert_validation_error(response)
    assert task_count(db) == 0


# --- GET /tasks/{id} --------------------------------------------------------------------------------------------


def test_read_answers_the_task_with_the_etag_given_at_creation(client, headers):
    created = client.post(
        "/tasks",
        json={"title": "Read me", "description": "body", "priority": "low", "due_date": "2031-01-01T00:00:00Z"},
        headers=headers,
    )

    response = client.get(created.headers["Location"], headers=headers)

    assert response.status_code == 200
    assert response.json() == created.json()
    assert response.headers["ETag"] == created.headers["ETag"]


def test_read_answers_a_task_made_directly_in_the_database(client, owner, headers):
    task = TaskFactory(owner=owner, title="Seeded", description="d", due_date=T0, created_at=T0)

    response = client.get(f"/tasks/{task.id}", headers=headers)

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == task.id
    assert body["title"] == "Seeded"
    assert body["owner_id"] == owner.id
    assert utc(body["due_date"]) == T0
    assert utc(body["created_at"]) == T0
    assert response.headers["ETag"]


# --- GET /tasks: envelope, ownership, filters ------------------------------------------------------------------


def test_list_answers_the_envelope_with_only_the_callers_tasks(client, db, owner, headers):
    mine = TaskFactory.create_batch(3, owner=owner)
    TaskFactory.create_batch(2, owner=UserFactory())

    body = list_tasks(client, headers)

    assert body.keys() == {"items", "total", "limit", "offset"}
    assert body["total"] == 3
    assert body["limit"] == 20
    assert body["offset"] == 0
    assert sorted(item["id"] for item in body["items"]) == sorted(task.id for task in mine)
    assert {item["owner_id"] for item in body["items"]} == {owner.id}


def test_list_is_empty_for_a_user_without_tasks(client, headers):
    TaskFactory.create_batch(2, owner=UserFactory())

    assert list_tasks(client, headers) == {"items": [], "total": 0, "limit": 20, "offset": 0}


def test_listed_items_equal_the_single_task_representation(client, owner, headers):
    task = TaskFactory(owner=owner, description="same", due_date=T0, created_at=T0, updated_at=T0 + timedelta(days=1))

    item = list_tasks(client, headers)["items"][0]

    assert item == client.get(f"/tasks/{task.id}", headers=headers).json()
    assert (utc(item["created_at"]), utc(item["updated_at"])) == (T0, T0 + timedelta(days=1))


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["new"], {"a"}),
        (["in_progress"], {"b"}),
        (["completed"], {"c"}),
        (["new", "completed"], {"a", "c"}),
        (["new", "in_progress", "completed"], {"a", "b", "c"}),
    ],
)
def test_list_filters_by_status_repeatable(client, owner, headers, statuses, expected):
    TaskFactory(owner=owner, title="a", status=TaskStatus.new)
    TaskFactory(owner=owner, title="b", status=TaskStatus.in_progress)
    TaskFactory(owner=owner, title="c", status=TaskStatus.completed)

    body = list_tasks(client, headers, status=statuses)

    assert {item["title"] for item in body["items"]} == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize(
    ("priorities", "expected"),
    [
        (["low"], {"a"}),
        (["high"], {"c"}),
        (["low", "high"], {"a", "c"}),
        (["medium", "high"], {"b", "c"}),
    ],
)
def test_list_filters_by_priority_repeatable(client, owner, headers, priorities, expected):
    TaskFactory(owner=owner, title="a", priority=TaskPriority.low)
    TaskFactory(owner=owner, title="b", priority=TaskPriority.medium)
    TaskFactory(owner=owner, title="c", priority=TaskPriority.high)

    body = list_tasks(client, headers, priority=priorities)

    assert {item["title"] for item in body["items"]} == expected
    assert body["total"] == len(expected)


def test_status_and_priority_filters_combine(client, owner, headers):
    TaskFactory(owner=owner, title="new-high", status=TaskStatus.new, priority=TaskPriority.high)
    TaskFactory(owner=owner, title="new-low", status=TaskStatus.new, priority=TaskPriority.low)
    TaskFactory(owner=owner, title="done-high", status=TaskStatus.completed, priority=TaskPriority.high)

    body = list_tasks(client, headers, status="new", priority="high")

    assert [item["title"] for item in body["items"]] == ["new-high"]
    assert body["total"] == 1


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("milk", {"title match", "description match"}),
        ("MILK", {"title match", "description match"}),
        ("mIlK", {"title match", "description match"}),
        ("oat", {"description match"}),
        ("buy", {"title match"}),
        ("nothing like it", set()),
    ],
)
def test_q_is_a_case_insensitive_substring_of_title_or_description(client, owner, headers, q, expected):
    TaskFactory(owner=owner, title="Buy MILK today", description="")
    TaskFactory(owner=owner, title="Groceries", description="oat Milk and bread")
    TaskFactory(owner=owner, title="Unrelated", description="something else")
    TaskFactory(owner=UserFactory(), title="milk of someone else")

    body = list_tasks(client, headers, q=q)

    titles = {item["title"] for item in body["items"]}
    names = {"Buy MILK today": "title match", "Groceries": "description match"}
    assert {names[title] for title in titles} == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", {"100% done"}),
        ("0%", {"100% done"}),
        ("_", {"snake_case"}),
        ("e_c", {"snake_case"}),
        ("\\", {"back\\slash"}),
    ],
)
def test_q_matches_wildcard_characters_literally(client, owner, headers, q, expected):
    for title in ("100% done", "1000 done", "snake_case", "snakeXcase", "back\\slash", "plain"):
        TaskFactory(owner=owner, title=title)

    body = list_tasks(client, headers, q=q)

    assert {item["title"] for item in body["items"]} == expected
    assert body["total"] == len(expected)


def test_due_before_and_due_after_filter_by_due_date(client, owner, headers):
    early = TaskFactory(owner=owner, title="early", due_date=T0)
    middle = TaskFactory(owner=owner, title="middle", due_date=T0 + timedelta(days=10))
    late = TaskFactory(owner=owner, title="late", due_date=T0 + timedelta(days=20))
    TaskFactory(owner=owner, title="undated", due_date=None)

    before = list_tasks(client, headers, due_before=(T0 + timedelta(days=5)).isoformat())
    after = list_tasks(client, headers, due_after=(T0 + timedelta(days=15)).isoformat())
    between = list_tasks(
        client,
        headers,
        due_after=(T0 + timedelta(days=5)).isoformat(),
        due_before=(T0 + timedelta(days=15)).isoformat(),
    )

    assert [item["id"] for item in before["items"]] == [early.id]
    assert before["total"] == 1
    assert [item["id"] for item in after["items"]] == [late.id]
    assert after["total"] == 1
    assert [item["id"] for item in between["items"]] == [middle.id]
    assert between["total"] == 1


def test_due_filters_honour_the_offset_they_are_given(client, owner, headers):
    task = TaskFactory(owner=owner, due_date=datetime(2030, 1, 1, 10, 0, tzinfo=UTC))

    # 11:30+02:00 is 09:30 UTC: before the due date, although 11:30 > 10:00 on the wall clock
    after = listed_ids(client, headers, due_after="2030-01-01T11:30:00+02:00")
    before = listed_ids(client, headers, due_before="2030-01-01T11:30:00+02:00")

    assert after == [task.id]
    assert before == []


# --- GET /tasks: sorting ----------------------------------------------------------------------------------------


@pytest.fixture
def sortable(owner):
    """Five tasks, labelled a-e in id order, with ties in every sort key.

    label  title   priority  created_at  due_date
    a      banana  high      T0+2h       T0+1d
    b      apple   low       T0+1h       T0+3d
    c      cherry  medium    T0+2h       T0+1d
    d      apple   medium    T0+3h       T0+2d
    e      banana  high      T0+1h       T0+3d
    """
    rows = [
        ("a", "banana", TaskPriority.high, 2, 1),
        ("b", "apple", TaskPriority.low, 1, 3),
        ("c", "cherry", TaskPriority.medium, 2, 1),
        ("d", "apple", TaskPriority.medium, 3, 2),
        ("e", "banana", TaskPriority.high, 1, 3),
    ]
    tasks = [
        TaskFactory(
            owner=owner,
            description=label,
            title=title,
            priority=priority,
            created_at=T0 + timedelta(hours=hours),
            due_date=T0 + timedelta(days=days),
        )
        for label, title, priority, hours, days in rows
    ]
    assert [task.id for task in tasks] == sorted(task.id for task in tasks)
    return tasks


ASCENDING = {
    "created_at": "beacd",
    "due_date": "acdbe",
    "priority": "bcdae",  # low < medium < high, not alphabetical
    "title": "bdaec",
}
SORTS = [*ASCENDING.items(), *((f"-{key}", order[::-1]) for key, order in ASCENDING.items())]


@pytest.mark.parametrize(("sort", "expected"), SORTS)
def test_sort_orders_by_the_key_with_ties_broken_by_id(client, headers, sortable, sort, expected):
    body = list_tasks(client, headers, sort=sort)

    assert "".join(item["description"] for item in body["items"]) == expected
    assert body["total"] == 5


def test_the_default_sort_is_newest_first(client, headers, sortable):
    default = list_tasks(client, headers)["items"]
    explicit = list_tasks(client, headers, sort="-created_at")["items"]

    assert "".join(item["description"] for item in default) == ASCENDING["created_at"][::-1]
    assert default == explicit


@pytest.mark.parametrize("sort", [sort for sort, _ in SORTS])
def test_paging_through_ties_shows_every_task_exactly_once(client, headers, sortable, sort):
    pages = [list_tasks(client, headers, sort=sort, limit=2, offset=offset) for offset in (0, 2, 4)]

    labels = "".join(item["description"] for page in pages for item in page["items"])
    assert labels == dict(SORTS)[sort]
    assert [page["total"] for page in pages] == [5, 5, 5]


# --- GET /tasks: paging and query validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "offset", "expected_count"),
    [
        (None, None, 20),
        (10, 0, 10),
        (10, 20, 5),
        (100, 0, 25),
        (1, 24, 1),
        (10, 25, 0),
        (10, 1000, 0),
    ],
)
def test_limit_and_offset_page_through_the_tasks_with_the_full_total(
    client, owner, headers, limit, offset, expected_count
):
    tasks = [TaskFactory(owner=owner, created_at=T0 + timedelta(minutes=n)) for n in range(25)]
    newest_first = [task.id for task in reversed(tasks)]
    params = {key: value for key, value in {"limit": limit, "offset": offset}.items() if value is not None}

    body = list_tasks(client, headers, **params)

    start = offset or 0
    assert [item["id"] for item in body["items"]] == newest_first[start : start + expected_count]
    assert body["total"] == 25
    assert body["limit"] == (limit or 20)
    assert body["offset"] == start


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"limit": 0}, id="limit 0"),
        pytest.param({"limit": 101}, id="limit 101"),
        pytest.param({"limit": -1}, id="limit -1"),
        pytest.param({"limit": "ten"}, id="limit not a number"),
        pytest.param({"offset": -1}, id="offset -1"),
        pytest.param({"offset": "x"}, id="offset not a number"),
        pytest.param({"sort": "id"}, id="sort id"),
        pytest.param({"sort": "bogus"}, id="sort bogus"),
        pytest.param({"sort": "+title"}, id="sort +title"),
        pytest.param({"sort": "--title"}, id="sort --title"),
        pytest.param({"status": "done"}, id="bad status"),
        pytest.param({"status": ["new", "done"]}, id="one bad status of two"),
        pytest.param({"priority": "urgent"}, id="bad priority"),
        pytest.param({"due_before": "2030-01-01T00:00:00"}, id="naive due_before"),
        pytest.param({"due_after": "2030-01-01T00:00:00"}, id="naive due_after"),
        pytest.param({"due_before": "tomorrow"}, id="unparseable due_before"),
    ],
)
def test_list_refuses_out_of_range_or_invalid_query_values_with_422(client, owner, headers, params):
    TaskFactory(owner=owner)

    response = client.get("/tasks", params=params, headers=headers)

    assert_validation_error(response)


# --- PUT /tasks/{id} --------------------------------------------------------------------------------------------


def full_task(owner, **overrides):
    fields = {
        "title": "Original",
        "description": "original description",
        "status": TaskStatus.in_progress,
        "priority": TaskPriority.high,
        "due_date": T0 + timedelta(days=30),
        "created_at": T0,
        "updated_at": T0,
    }
    return TaskFactory(owner=owner, **{**fields, **overrides})


def test_put_replaces_every_field(client, db, owner, headers):
    task = full_task(owner)
    replacement = {
        "title": "  Replaced  ",
        "description": "new description",
        "status": "completed",
        "priority": "low",
        "due_date": "2032-02-02T08:00:00-03:00",
    }

    response = client.put(f"/tasks/{task.id}", json=replacement, headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == task.id
    assert body["owner_id"] == owner.id
    assert body["title"] == "Replaced"
    assert body["description"] == "new description"
    assert body["status"] == "completed"
    assert body["priority"] == "low"
    assert utc(body["due_date"]) == datetime(2032, 2, 2, 11, 0, tzinfo=UTC)
    assert utc(body["created_at"]) == T0
    assert utc(body["updated_at"]) > T0
    saved = stored(db, task.id)
    assert (saved.title, saved.description, saved.status, saved.priority, saved.due_date) == (
        "Replaced",
        "new description",
        TaskStatus.completed,
        TaskPriority.low,
        datetime(2032, 2, 2, 11, 0, tzinfo=UTC),
    )
    assert saved.created_at == T0


def test_put_resets_omitted_optional_fields_to_their_defaults(client, db, owner, headers):
    task = full_task(owner)

    response = client.put(f"/tasks/{task.id}", json={"title": "Only a title"}, headers=headers)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["title"] == "Only a title"
    assert body["description"] == ""
    assert body["status"] == "new"
    assert body["priority"] == "medium"
    assert body["due_date"] is None
    saved = stored(db, task.id)
    assert (saved.title, saved.description, saved.status, saved.priority, saved.due_date) == (
        "Only a title",
        "",
        TaskStatus.new,
        TaskPriority.medium,
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"description": "no title"}, id="missing title"),
        pytest.param({}, id="empty body"),
        pytest.param({"title": None}, id="null title"),
        pytest.param({"title": "   "}, id="blank title"),
        pytest.param({"title": "x" * 201}, id="201-char title"),
        pytest.param({"title": "t", "due_date": "2030-01-01T00:00:00"}, id="naive due_date"),
        pytest.param({"title": "t", "status": "done"}, id="bad status"),
        pytest.param({"title": "t", "owner_id": 1}, id="owner_id"),
        pytest.param({"title": "t", "id": 1}, id="id"),
        pytest.param({"title": "t", "created_at": "2020-01-01T00:00:00Z"}, id="created_at"),
        pytest.param([], id="not an object"),
    ],
)
def test_put_refuses_an_invalid_body_and_changes_nothing(client, db, owner, headers, body):
    task = full_task(owner)
    before = snapshot(db, task.id)

    response = client.put(f"/tasks/{task.id}", json=body, headers=headers)

    assert_validation_error(response)
    assert snapshot(db, task.id) == before


# --- PATCH /tasks/{id} ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ({"title": " Renamed "}, "title", "Renamed"),
        ({"description": "changed"}, "description", "changed"),
        ({"description": ""}, "description", ""),
        ({"status": "completed"}, "status", TaskStatus.completed),
        ({"priority": "low"}, "priority", TaskPriority.low),
        ({"due_date": "2031-03-03T03:00:00+01:00"}, "due_date", datetime(2031, 3, 3, 2, 0, tzinfo=UTC)),
        ({"due_date": None}, "due_date", None),
    ],
)
def test_patch_changes_only_the_fields_sent(client, db, owner, headers, change, field, expected):
    task = full_task(owner)
    before = snapshot(db, task.id)

    response = client.patch(f"/tasks/{task.id}", json=change, headers=headers)

    assert response.status_code == 200, response.text
    after = snapshot(db, task.id)
    assert after[field] == expected
    unchanged = {key for key in before if key not in {field, "updated_at"}}
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}
    body = response.json()
    if field == "due_date":
        assert (utc(body["due_date"]) if body["due_date"] else None) == expected
    else:
        assert body[field] == expected
    assert body["title"] == after["title"]
    assert body["description"] == after["description"]
    assert body["status"] == after["status"]
    assert body["priority"] == after["priority"]


def test_patch_with_an_empty_body_changes_nothing(client, db, owner, headers):
    task = full_task(owner)
    before = snapshot(db, task.id)

    response = client.patch(f"/tasks/{task.id}", json={}, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["title"] == "Original"
    assert snapshot(db, task.id) == before


def test_patch_advances_updated_at_but_not_created_at(client, db, owner, headers):
    task = full_task(owner)

    body = client.patch(f"/tasks/{task.id}", json={"status": "completed"}, headers=headers).json()

    assert utc(body["created_at"]) == T0
    assert utc(body["updated_at"]) > T0
    saved = stored(db, task.id)
    assert saved.created_at == T0
    assert saved.updated_at > T0
    assert utc(body["updated_at"]) == saved.updated_at


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"title": None}, id="null title"),
        pytest.param({"title": ""}, id="empty title"),
        pytest.param({"title": "  "}, id="blank title"),
        pytest.param({"title": "x" * 201}, id="201-char title"),
        pytest.param({"title": "a\x00b"}, id="NUL in title"),
        pytest.param({"description": "d" * 10_001}, id="10001-char description"),
        pytest.param({"due_date": "2030-01-01T00:00:00"}, id="naive due_date"),
        pytest.param({"status": "done"}, id="bad status"),
        pytest.param({"priority": "urgent"}, id="bad priority"),
        pytest.param({"owner_id": 1}, id="owner_id"),
        pytest.param({"id": 1}, id="id"),
        pytest.param({"created_at": "2020-01-01T00:00:00Z"}, id="created_at"),
        pytest.param({"updated_at": "2020-01-01T00:00:00Z"}, id="updated_at"),
        pytest.param(["title"], id="not an object"),
    ],
)
def test_patch_refuses_an_invalid_body_and_changes_nothing(client, db, owner, headers, body):
    task = full_task(owner)
    before = snapshot(db, task.id)

    response = client.patch(f"/tasks/{task.id}", json=body, headers=headers)

    assert_validation_error(response)
    assert snapshot(db, task.id) == before


# --- ETag and If-Match ------------------------------------------------------------------------------------------


def write(client, method: str, task_id: int, headers: dict[str, str], **extra_headers: str):
    body = {"title": f"Written by {method}", "status": "completed"}
    return client.request(method, f"/tasks/{task_id}", json=body, headers={**headers, **extra_headers})


@pytest.mark.parametrize("method", WRITES)
def test_a_write_answers_a_new_etag_equal_to_the_one_a_read_then_gives(client, owner, headers, method):
    task = full_task(owner)
    old_etag = client.get(f"/tasks/{task.id}", headers=headers).headers["ETag"]

    response = write(client, method, task.id, headers)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] != old_etag
    read = client.get(f"/tasks/{task.id}", headers=headers)
    assert read.headers["ETag"] == response.headers["ETag"]
    assert read.json() == response.json()


@pytest.mark.parametrize("method", WRITES)
def test_if_match_with_the_current_etag_lets_the_write_through(client, db, owner, headers, method):
    task = full_task(owner)
    etag = client.get(f"/tasks/{task.id}", headers=headers).headers["ETag"]

    response = write(client, method, task.id, headers, **{"If-Match": etag})

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] != etag
    assert stored(db, task.id).title == f"Written by {method}"


@pytest.mark.parametrize("method", WRITES)
def test_if_match_with_a_stale_etag_is_a_412_and_changes_nothing(client, db, owner, headers, method):
    task = full_task(owner)
    stale = client.get(f"/tasks/{task.id}", headers=headers).headers["ETag"]
    assert client.patch(f"/tasks/{task.id}", json={"description": "someone else"}, headers=headers).status_code == 200
    current = client.get(f"/tasks/{task.id}", headers=headers)
    before = snapshot(db, task.id)

    response = write(client, method, task.id, headers, **{"If-Match": stale})

    assert_error(response, 412)
    assert snapshot(db, task.id) == before
    again = client.get(f"/tasks/{task.id}", headers=headers)
    assert again.json() == current.json()
    assert again.headers["ETag"] == current.headers["ETag"]


@pytest.mark.parametrize("method", WRITES)
def test_if_match_with_an_unknown_etag_is_a_412(client, db, owner, headers, method):
    task = full_task(owner)
    before = snapshot(db, task.id)

    response = write(client, method, task.id, headers, **{"If-Match": '"not-the-etag"'})

    assert_error(response, 412)
    assert snapshot(db, task.id) == before


@pytest.mark.parametrize("method", WRITES)
def test_if_match_star_lets_the_write_through(client, db, owner, headers, method):
    task = full_task(owner)

    response = write(client, method, task.id, headers, **{"If-Match": "*"})

    assert response.status_code == 200, response.text
    assert stored(db, task.id).title == f"Written by {method}"


@pytest.mark.parametrize("method", WRITES)
def test_without_if_match_the_write_goes_through_even_after_other_changes(client, db, owner, headers, method):
    task = full_task(owner)
    client.get(f"/tasks/{task.id}", headers=headers)
    assert client.patch(f"/tasks/{task.id}", json={"description": "meanwhile"}, headers=headers).status_code == 200

    response = write(client, method, task.id, headers)

    assert response.status_code == 200, response.text
    assert stored(db, task.id).title == f"Written by {method}"


def test_the_etag_changes_whenever_the_task_does(client, owner, headers):
    task = full_task(owner)
    etags = [client.get(f"/tasks/{task.id}", headers=headers).headers["ETag"]]
    for change in ({"status": "new"}, {"priority": "low"}, {"due_date": None}, {"description": "x"}):
        etags.append(client.patch(f"/tasks/{task.id}", json=change, headers=headers).headers["ETag"])

    assert len(set(etags)) == len(etags)


# --- DELETE /tasks/{id} -----------------------------------------------------------------------------------------


def test_delete_answers_204_and_the_task_is_gone(client, db, owner, headers):
    task_id, other_id = TaskFactory(owner=owner).id, TaskFactory(owner=owner).id

    response = client.delete(f"/tasks/{task_id}", headers=headers)

    assert response.status_code == 204
    assert response.content == b""
    assert stored(db, task_id) is None
    assert stored(db, other_id) is not None
    assert_error(client.get(f"/tasks/{task_id}", headers=headers), 404)
    assert_error(client.delete(f"/tasks/{task_id}", headers=headers), 404)
    assert listed_ids(client, headers) == [other_id]


# --- missing and malformed ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ITEM_ROUTES)
def test_a_missing_id_is_a_json_404(client, owner, headers, method):
    TaskFactory(owner=owner)

    response = client.request(method, f"/tasks/{MISSING_ID}", json={"title": "t"}, headers=headers)

    assert_error(response, 404)


@pytest.mark.parametrize("method", ITEM_ROUTES)
@pytest.mark.parametrize("task_id", ["0", "-1", "abc", "1.5"])
def test_a_malformed_id_is_a_422(client, headers, method, task_id):
    response = client.request(method, f"/tasks/{task_id}", json={"title": "t"}, headers=headers)

    assert_validation_error(response)


# --- another user's tasks (BOLA) --------------------------------------------------------------------------------


@pytest.fixture
def intruder_headers(auth_headers, db):
    return auth_headers(UserFactory())


@pytest.mark.parametrize("method", ITEM_ROUTES)
def test_another_users_task_looks_exactly_like_a_missing_one(client, db, owner, intruder_headers, method):
    task = full_task(owner)
    before = snapshot(db, task.id)
    body = {"title": "Hijacked", "status": "completed"}

    theirs = client.request(method, f"/tasks/{task.id}", json=body, headers=intruder_headers)
    missing = client.request(method, f"/tasks/{MISSING_ID}", json=body, headers=intruder_headers)

    assert_error(theirs, 404)
    assert theirs.json() == missing.json()
    assert "ETag" not in theirs.headers
    assert snapshot(db, task.id) == before


@pytest.mark.parametrize("method", WRITES)
def test_another_users_task_stays_hidden_behind_if_match(client, db, owner, headers, intruder_headers, method):
    task = full_task(owner)
    etag = client.get(f"/tasks/{task.id}", headers=headers).headers["ETag"]
    before = snapshot(db, task.id)

    for if_match in (etag, "*", '"stale"'):
        response = write(client, method, task.id, intruder_headers, **{"If-Match": if_match})
        assert_error(response, 404)

    assert snapshot(db, task.id) == before


def test_another_users_list_never_shows_my_tasks(client, owner, headers, intruder_headers):
    mine = TaskFactory.create_batch(3, owner=owner, title="secret plan", description="secret")
    theirs = client.post("/tasks", json={"title": "their own"}, headers=intruder_headers).json()

    for params in ({}, {"q": "secret"}, {"status": ["new", "in_progress", "completed"]}, {"sort": "title"}):
        body = list_tasks(client, intruder_headers, **params)
        assert all(item["id"] not in {task.id for task in mine} for item in body["items"])
        assert body["total"] == (0 if "q" in params else 1)
    assert listed_ids(client, intruder_headers) == [theirs["id"]]
    assert sorted(listed_ids(client, headers)) == sorted(task.id for task in mine)


# --- authentication ---------------------------------------------------------------------------------------------


ROUTES = [
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/1"),
    ("PUT", "/tasks/1"),
    ("PATCH", "/tasks/1"),
    ("DELETE", "/tasks/1"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "auth",
    [
        pytest.param({}, id="no token"),
        pytest.param({"Authorization": "Bearer not-a-jwt"}, id="garbage token"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic auth"),
    ],
)
def test_every_tasks_route_needs_a_bearer_token(client, db, method, path, auth):
    task = TaskFactory(title="Untouched")
    before = snapshot(db, task.id)
    path = path.replace("/1", f"/{task.id}")

    response = client.request(method, path, json={"title": "t"}, headers=auth)

    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert snapshot(db, task.id) == before
    assert task_count(db) == 1


def test_totals_follow_every_write(client, db, auth_headers):
    user = UserFactory()
    headers = auth_headers(user)

    def totals():
        queries = ("", "status=new", "status=completed", "priority=high", "status=new&priority=high")
        return {query: client.get(f"/tasks?{query}", headers=headers).json()["total"] for query in queries}

    created = [client.post("/tasks", json={"title": f"t{n}"}, headers=headers).json() for n in range(3)]
    TaskFactory.create_batch(2, owner=user, status=TaskStatus.completed, priority=TaskPriority.high)
    assert totals() == {
        "": 5,
        "status=new": 3,
        "status=completed": 2,
        "priority=high": 2,
        "status=new&priority=high": 0,
    }

    client.patch(f"/tasks/{created[0]['id']}", json={"priority": "high"}, headers=headers)
    client.put(f"/tasks/{created[1]['id']}", json={"title": "done", "status": "completed"}, headers=headers)
    client.delete(f"/tasks/{created[2]['id']}", headers=headers)

    assert totals() == {
        "": 4,
        "status=new": 1,
        "status=completed": 3,
        "priority=high": 3,
        "status=new&priority=high": 1,
    }


def test_a_page_past_the_end_still_counts_the_matches(client, owner, headers):
    TaskFactory.create_batch(3, owner=owner)

    body = client.get("/tasks?offset=10&status=new", headers=headers).json()

    assert body["items"] == []
    assert body["total"] == 3


def test_concurrent_conditional_updates_let_exactly_one_through(app, db, owner):
    task = TaskFactory(owner=owner)
    etag = TaskOut.model_validate(task).etag
    writers = 4
    start = threading.Barrier(writers)

    def attempt(number: int) -> str:
        with app.state.runtime.session_factory() as session:
            start.wait()
            try:
                service.update_task(session, owner.id, task.id, {"title": f"writer {number}"}, etag)
            except PreconditionFailed:
                return "412"
            return "200"

    with ThreadPoolExecutor(max_workers=writers) as pool:
        outcomes = sorted(pool.map(attempt, range(writers)))

    assert outcomes == ["200", "412", "412", "412"]
