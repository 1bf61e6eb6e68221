"""Task counts kept by triggers, and trigram indexes for `q`

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

`GET /tasks` answers a total with every page. Counting an owner's rows costs time in
proportion to how many they have, so `task_counts` keeps the count per owner, status and
priority, maintained by triggers in the same transaction as every write (bulk loads
included). On PostgreSQL, trigram GIN indexes over (owner_id, title) and
(owner_id, description) serve `q` without reading the owner's other tasks; SQLite has no
pg_trgm and keeps plain indexes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES_TRIGGERS = """
CREATE FUNCTION task_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE task_counts SET n = n - 1
     WHERE owner_id = OLD.owner_id AND status = OLD.status AND priority = OLD.priority;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    INSERT INTO task_counts (owner_id, status, priority, n) VALUES (NEW.owner_id, NEW.status, NEW.priority, 1)
    ON CONFLICT (owner_id, status, priority) DO UPDATE SET n = task_counts.n + 1;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER tasks_counted AFTER INSERT OR DELETE ON tasks
  FOR EACH ROW EXECUTE FUNCTION task_counts_track();
CREATE TRIGGER tasks_recounted AFTER UPDATE OF owner_id, status, priority ON tasks
  FOR EACH ROW WHEN ((OLD.owner_id, OLD.status, OLD.priority) IS DISTINCT FROM (NEW.owner_id, NEW.status, NEW.priority))
  EXECUTE FUNCTION task_counts_track();
"""

SQLITE_TRIGGERS = [
    """CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasks BEGIN
      INSERT INTO task_counts (owner_id, status, priority, n) VALUES (NEW.owner_id, NEW.status, NEW.priority, 1)
      ON CONFLICT (owner_id, status, priority) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasks BEGIN
      UPDATE task_counts SET n = n - 1
       WHERE owner_id = OLD.owner_id AND status = OLD.status AND priority = OLD.priority;
    END""",
    """CREATE TRIGGER tasks_recounted AFTER UPDATE OF owner_id, status, priority ON tasks
      WHEN OLD.owner_id IS NOT NEW.owner_id OR OLD.status IS NOT NEW.status OR OLD.priority IS NOT NEW.priority
    BEGIN
      UPDATE task_counts SET n = n - 1
       WHERE owner_id = OLD.owner_id AND status = OLD.status AND priority = OLD.priority;
      INSERT INTO task_counts (owner_id, status, priority, n) VALUES (NEW.owner_id, NEW.status, NEW.priority, 1)
      ON CONFLICT (owner_id, status, priority) DO UPDATE SET n = n + 1;
    END""",
]


def existing_enum(name: str, *values: str) -> sa.types.TypeEngine[str]:
    """The enum type migration 0001 made (on PostgreSQL it exists already; SQLite stores text)."""
    return sa.Enum(*values, name=name).with_variant(
        postgresql.ENUM(*values, name=name, create_type=False), "postgresql"
    )


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "task_counts",
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("status", existing_enum("task_status", "new", "in_progress", "completed"), nullable=False),
        sa.Column("priority", existing_enum("task_priority", "low", "medium", "high"), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("owner_id", "status", "priority"),
    )
    op.execute(
        "INSERT INTO task_counts (owner_id, status, priority, n)"
        " SELECT owner_id, status, priority, count(*) FROM tasks GROUP BY owner_id, status, priority"
    )
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        for column in ("title", "description"):
            op.create_index(
                f"ix_tasks_owner_{column}_trgm",
                "tasks",
                ["owner_id", column],
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )
    else:
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in ("title", "description"):
            op.drop_index(f"ix_tasks_owner_{column}_trgm", table_name="tasks")
        op.execute("DROP TRIGGER tasks_recounted ON tasks")
        op.execute("DROP TRIGGER tasks_counted ON tasks")
        op.execute("DROP FUNCTION task_counts_track()")
    else:
        for trigger in ("tasks_counted_insert", "tasks_counted_delete", "tasks_recounted"):
            op.execute(f"DROP TRIGGER {trigger}")
    op.drop_table("task_counts")
