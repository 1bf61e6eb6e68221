from pathlib import Path

from alembic import command
from alembic.config import Config

from task_api.config import Settings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"


def migrate(settings: Settings) -> None:
    """Bring the database named by the settings up to the newest migration."""
    config = Config(str(ALEMBIC_INI))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    command.upgrade(config, "head")
