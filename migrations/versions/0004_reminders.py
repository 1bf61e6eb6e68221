"""Due-date reminders: `remind_at`, `reminded_at` and the state the sweep keeps

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Every new column is nullable or has a constant default, so on PostgreSQL adding them rewrites
nothing. The index covers armed reminders alone (`reminder_next_at IS NOT NULL`), so it stays as
small as the number of reminders not yet sent; building it reads the whole table once, while
writes to `tasks` wait (a second or two per million tasks).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARMED = sa.text("reminder_next_at IS NOT NULL")


def upgrade() -> None:
    for name in ("remind_at", "reminded_at", "reminder_next_at"):
        op.add_column("tasks", sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.add_column("tasks", sa.Column("reminder_attempt", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_tasks_reminder_next_at", "tasks", ["reminder_next_at"], postgresql_where=ARMED, sqlite_where=ARMED
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_reminder_next_at", table_name="tasks")
    # a plain DROP COLUMN on SQLite too (3.35+): a batch rebuild of `tasks` would lose its triggers
    for name in ("reminder_attempt", "reminder_next_at", "reminded_at", "remind_at"):
        op.drop_column("tasks", name)
