from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from task_api.config import Settings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"


def migrate(settings: Settings) -> None:
    """Bring the database named by the settings up to the newest migration."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")


def create_database(settings: Settings) -> bool:
    """Create the PostgreSQL database the settings name if it does not exist (through the
    server's `postgres` database); whether it did. A SQLite file is created when first opened."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql" or not url.database:
        return False
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        with server.connect() as connection:
            if connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database}):
                return False
            connection.exec_driver_sql(f"CREATE DATABASE {connection.dialect.identifier_preparer.quote(url.database)}")
            return True
    finally:
        server.dispose()
