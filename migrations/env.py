import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.exc import ProgrammingError

from task_api import models  # noqa: F401  (maps every table)
from task_api.config import Settings
from task_api.db import Base

INSUFFICIENT_PRIVILEGE = "42501"
config = context.config
logger = logging.getLogger("alembic.env")
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """The trigram indexes exist on PostgreSQL only (pg_trgm): elsewhere the models' claim to them is moot."""
    return not (type_ == "index" and name is not None and name.endswith("_trgm") and not _on_postgres())


def _on_postgres() -> bool:
    return database_url().startswith("postgresql")


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            compare_type=True,
            include_object=include_object,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        on_postgres = connection.dialect.name == "postgresql"
        with context.begin_transaction():
            if on_postgres:
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")  # a migration may take long
            context.run_migrations()
            if on_postgres:
                set_session_defaults(connection)
    engine.dispose()


def set_session_defaults(connection: Connection) -> None:
    """The statement timeout and UTC, as defaults of the database itself.

    The app sets no session state when it connects: behind PgBouncer in transaction mode a
    connection is shared between clients, and PgBouncer refuses the `options` startup
    parameter. Every new server session takes these defaults instead, whoever connects and
    however. Changing them needs the database's owner: a migration run by another role keeps
    the schema changes and warns that these defaults are left as they were.
    """
    name = connection.exec_driver_sql("SELECT current_database()").scalar_one()
    database = connection.dialect.identifier_preparer.quote(name)
    timeout_ms = int(Settings().db_statement_timeout_ms)
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f"ALTER DATABASE {database} SET statement_timeout = {timeout_ms}")
            connection.exec_driver_sql(f"ALTER DATABASE {database} SET timezone = 'UTC'")
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) != INSUFFICIENT_PRIVILEGE:
            raise
        logger.warning(
            "statement_timeout and timezone are not the database's defaults: only its owner can set them "
            "(ALTER DATABASE %s SET statement_timeout = %d; ALTER DATABASE %s SET timezone = 'UTC')",
            database,
            timeout_ms,
            database,
        )


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
