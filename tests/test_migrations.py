import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from task_api.db import create_db_engine
from tests.conftest import ON_SQLITE, alembic_config

FULLWIDTH_ALICE = "\uff41\uff4c\uff49\uff43\uff45@example.com"


def test_the_migrated_schema_matches_the_models(database_url):
    command.check(alembic_config(database_url))


@pytest.mark.postgres_only
def test_migrations_go_down_to_nothing_and_up_again(empty_database):
    config = alembic_config(empty_database)
    engine = create_engine(empty_database)
    try:
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
            assert connection.scalar(text("SELECT count(*) FROM pg_type WHERE typname LIKE 'task_%'")) == 0
        command.upgrade(config, "head")
        command.check(config)
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_status_and_priority_are_enums_and_tasks_cascade(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            types = dict(
                connection.execute(
                    text(
                        "SELECT column_name, udt_name FROM information_schema.columns"
                        " WHERE table_name = 'tasks' AND column_name IN ('status', 'priority')"
                    )
                ).all()
            )
            on_delete = connection.scalar(
                text("SELECT confdeltype FROM pg_constraint WHERE conrelid = 'tasks'::regclass AND contype = 'f'")
            )
    finally:
        engine.dispose()
    assert types == {"status": "task_status", "priority": "task_priority"}
    assert on_delete == "c"


@pytest.mark.postgres_only
def test_newest_first_listing_is_served_by_an_index_without_a_sort(db):
    # Only plain index scans are left to the planner, which would still add a Sort if the index
    # could not give this order; with a few rows per owner it would rather sort a bitmap scan's.
    db.execute(text("SET LOCAL enable_seqscan = off"))
    db.execute(text("SET LOCAL enable_bitmapscan = off"))
    plan = "\n".join(
        db.scalars(text("EXPLAIN SELECT * FROM tasks WHERE owner_id = 1 ORDER BY created_at DESC, id DESC LIMIT 20"))
    )
    db.rollback()

    assert "ix_tasks_owner_created" in plan
    assert "Sort" not in plan


@pytest.mark.postgres_only
def test_every_session_gets_the_statement_timeout_and_utc_without_startup_options(settings):
    engine = create_db_engine(settings)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar_one() == "5s"
            assert connection.exec_driver_sql("SHOW timezone").scalar_one() == "UTC"
            with pytest.raises(OperationalError, match="statement timeout"):
                connection.exec_driver_sql("SELECT pg_sleep(6)")
    finally:
        engine.dispose()


@pytest.mark.postgres_only
def test_a_role_that_does_not_own_the_database_still_migrates_it(empty_database, caplog):
    role = f"migrator_{uuid.uuid4().hex[:8]}"
    owner = create_engine(empty_database, isolation_level="AUTOCOMMIT")
    database = make_url(empty_database).database
    with owner.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT CREATE ON DATABASE "{database}" TO "{role}"'))
        connection.execute(text(f'GRANT ALL ON SCHEMA public TO "{role}"'))
    try:
        command.upgrade(alembic_config(make_url(empty_database).set(username=role).render_as_string(False)), "head")
        with owner.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            timeout = connection.exec_driver_sql("SHOW statement_timeout").scalar_one()
    finally:
        with owner.connect() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
        owner.dispose()

    assert {"users", "tasks", "alembic_version"} <= tables
    assert timeout == "0"  # left as it was
    assert "only its owner can set them" in caplog.text


@pytest.fixture
def blank_database(request, tmp_path):
    """A database with nothing in it, on the server the suite runs on (a new file on SQLite)."""
    if ON_SQLITE:
        return f"sqlite:///{tmp_path / 'blank.sqlite3'}"
    return request.getfixturevalue("empty_database")


def migrate_to_0002_with_users(database_url, rows):
    command.upgrade(alembic_config(database_url), "0002")
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO users (id, email, password_hash) VALUES (:id, :email, 'not a hash')"),
                [{"id": user_id, "email": email} for user_id, email in rows],
            )
    finally:
        engine.dispose()


def stored_users_and_version(database_url):
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = [tuple(row) for row in connection.execute(text("SELECT id, email FROM users ORDER BY id"))]
            return rows, connection.scalar(text("SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


def test_stored_addresses_are_normalised_to_nfkc_lower_case(blank_database):
    migrate_to_0002_with_users(
        blank_database,
        [
            (1, "alice@example.com"),
            (2, "\uff22\uff4f\uff42@example.com"),
            (3, "Carol@Example.com"),
            (4, "\ufb01@example.com"),
        ],
    )

    command.upgrade(alembic_config(blank_database), "head")

    rows, _ = stored_users_and_version(blank_database)
    assert rows == [(1, "alice@example.com"), (2, "bob@example.com"), (3, "carol@example.com"), (4, "fi@example.com")]


def test_accounts_whose_addresses_would_become_one_stop_the_migration_and_nothing_changes(blank_database):
    rows = [(1, "alice@example.com"), (2, "Carol@Example.com"), (3, FULLWIDTH_ALICE), (4, "ALICE@example.com")]
    migrate_to_0002_with_users(blank_database, rows)

    with pytest.raises(RuntimeError) as refused:
        command.upgrade(alembic_config(blank_database), "head")

    assert stored_users_and_version(blank_database) == (rows, "0002")
    message = str(refused.value)
    assert (
        "alice@example.com: user 1 ('alice@example.com'), user 3 ('\\uff41\\uff4c\\uff49\\uff43\\uff45@example.com'),"
        " user 4 ('ALICE@example.com')"
    ) in message
    assert "carol" not in message.lower()
    assert "Merge each group into one account, or give all but one of its accounts another address" in message
    assert "Nothing was changed" in message


def test_the_reminders_migration_goes_down_to_0003_and_up_again_keeping_tasks(blank_database):
    config = alembic_config(blank_database)
    engine = create_engine(blank_database)
    try:
        command.upgrade(config, "head")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO users (id, email, password_hash) VALUES (1, 'a@example.com', 'x')"))
            connection.execute(
                text("INSERT INTO tasks (owner_id, title, remind_at) VALUES (1, 'Kept', '2030-01-01 00:00:00+00:00')")
            )

        command.downgrade(config, "0003")
        with engine.connect() as connection:
            columns = {column["name"] for column in inspect(connection).get_columns("tasks")}
            assert not columns & {"remind_at", "reminded_at", "reminder_next_at", "reminder_attempt"}
            assert connection.scalar(text("SELECT title FROM tasks")) == "Kept"

        command.upgrade(config, "head")
        command.check(config)
        with engine.begin() as connection:
            assert connection.execute(text("SELECT title, remind_at, reminder_attempt FROM tasks")).all() == [
                ("Kept", None, 0)
            ]
            connection.execute(text("INSERT INTO tasks (owner_id, title) VALUES (1, 'Counted')"))
            # the task counts' triggers survived the round trip
            assert connection.scalar(text("SELECT sum(n) FROM task_counts WHERE owner_id = 1")) == 2
    finally:
        engine.dispose()
