from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from task_api.config import Settings

DUPLICATE_DATABASE = "42P04"
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"


def migrate(settings: Settings) -> None:
    """Bring the database named by the settings up to the newest migration."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def create_database(settings: Settings) -> bool:
    """Create the PostgreSQL database the settings name if it does not exist; whether it did.

    It connects to the database first, and only when the server says there is none does it
    create one, through the server's `postgres` database. A SQLite file is created when first
    opened.
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        return False
    target = create_engine(url, poolclass=pool.NullPool)
    try:
        with target.connect():
            return False
    except OperationalError as exc:
        if f'database "{url.database}" does not exist' not in str(exc.orig):
            raise
    finally:
        target.dispose()
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with server.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {connection.dialect.identifier_preparer.quote(url.database)}")
            return True
    except ProgrammingError as exc:
        if getattr(exc.orig, "pgcode", None) == DUPLICATE_DATABASE:  # another run created it meanwhile
            return False
        raise
    finally:
        server.dispose()
