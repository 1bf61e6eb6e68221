import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from task_api.db import Base, utcnow
from task_api.users.models import User

TITLE_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 10_000


class TaskStatus(enum.StrEnum):
    new = "new"
    in_progress = "in_progress"
    completed = "completed"


class TaskPriority(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        # serves "this owner's tasks, newest first" by a backward scan, with no sort step
        Index("ix_tasks_owner_created", "owner_id", "created_at", "id"),
        # serve `q` (ILIKE '%...%') within one owner's tasks; PostgreSQL only (pg_trgm, btree_gin)
        *(
            Index(
                f"ix_tasks_owner_{column}_trgm",
                "owner_id",
                column,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )
            for column in ("title", "description")
        ),
        # the sweep's "armed reminders due by now", oldest first; only armed ones are indexed
        Index(
            "ix_tasks_reminder_next_at",
            "reminder_next_at",
            postgresql_where=text("reminder_next_at IS NOT NULL"),
            sqlite_where=text("reminder_next_at IS NOT NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[TaskStatus] = mapped_column(
        Enum(TaskStatus, name="task_status"), default=TaskStatus.new, server_default=TaskStatus.new.value
    )
    priority: Mapped[TaskPriority] = mapped_column(
        Enum(TaskPriority, name="task_priority"),
        default=TaskPriority.medium,
        server_default=TaskPriority.medium.value,
    )
    due_date: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(
        default=utcnow, onupdate=utcnow, server_default=text("CURRENT_TIMESTAMP")
    )

    remind_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]  # when the mail server accepted the reminder
    # The reminder's state, never shown to clients (task_api/reminders/claims.py): when a sweep
    # should next look at it (null: nothing to send), and how often it has been claimed since
    # `remind_at` was last set.
    reminder_next_at: Mapped[datetime | None]
    reminder_attempt: Mapped[int] = mapped_column(default=0, server_default="0")

    owner: Mapped[User] = relationship()


class TaskCount(Base):
    """How many tasks an owner has per status and priority: kept by database triggers (migration
    0002) in the same transaction as every write to `tasks`; the app only reads it."""

    __tablename__ = "task_counts"

    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[TaskStatus] = mapped_column(Enum(TaskStatus, name="task_status"), primary_key=True)
    priority: Mapped[TaskPriority] = mapped_column(Enum(TaskPriority, name="task_priority"), primary_key=True)
    n: Mapped[int]
