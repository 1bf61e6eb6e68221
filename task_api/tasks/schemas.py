import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from task_api.fields import Instant, Storable
from task_api.pagination import MAX_OFFSET
from task_api.schemas import InputModel, Page
from task_api.tasks.models import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH, TaskPriority, TaskStatus

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX_LENGTH), Storable]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH), Storable]

REMIND_AT = (
    "When to e-mail the owner a reminder (not before the server's clock, unless unchanged); "
    "null: no reminder. Moving it sends the reminder again at the new time."
)

TaskSort = Literal["created_at", "-created_at", "due_date", "-due_date", "priority", "-priority", "title", "-title"]


class TaskQuery(BaseModel):
    status: list[TaskStatus] = Field(default=[], description="Repeat to match any of several")
    priority: list[TaskPriority] = Field(default=[], description="Repeat to match any of several")
    q: Annotated[str, StringConstraints(min_length=1, max_length=TITLE_MAX_LENGTH), Storable] | None = Field(
        default=None, description="Case-insensitive substring of the title or description"
    )
    due_before: Instant | None = None
    due_after: Instant | None = None
    sort: TaskSort = "-created_at"
    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)


class TaskCreate(InputModel):
    title: Title
    description: Description = ""
    status: TaskStatus = TaskStatus.new
    priority: TaskPriority = TaskPriority.medium
    due_date: Instant | None = None
    remind_at: Instant | None = Field(default=None, description=REMIND_AT)


class TaskReplace(TaskCreate):
    """Full replacement: every omitted field goes back to its default."""


class TaskUpdate(InputModel):
    """Partial update: only the fields sent change; `due_date: null` clears the due date. The
    others may be left out but never sent as null, which their types say and mypy doubts."""

    title: Title = Field(default=None)  # type: ignore[assignment]
    description: Description = Field(default=None)  # type: ignore[assignment]
    status: TaskStatus = Field(default=None)  # type: ignore[assignment]
    priority: TaskPriority = Field(default=None)  # type: ignore[assignment]
    due_date: Instant | None = None
    remind_at: Instant | None = Field(default=None, description=REMIND_AT)


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str
    status: TaskStatus
    priority: TaskPriority
    due_date: datetime | None
    owner_id: int
    created_at: datetime
    updated_at: datetime
    remind_at: datetime | None = Field(description=REMIND_AT)
    reminded_at: datetime | None = Field(
        description="When the mail server accepted the reminder; null until then",
        json_schema_extra={"readOnly": True},
    )

    @property
    def etag(self) -> str:
        return etag_of(self.model_dump_json().encode())


TaskPage = Page[TaskOut]


def etag_of(body: bytes | memoryview) -> str:
    """A strong validator for a representation: it changes whenever any byte of it does."""
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'
