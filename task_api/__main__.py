"""Command line: `python -m task_api serve | migrate [--create-database] | create-admin EMAIL |
worker | beat`."""

import argparse
import getpass
import logging
import sys

import uvicorn
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from task_api import models  # noqa: F401  (maps every table)
from task_api.app import create_app
from task_api.config import Settings, load_settings, refuse_weak_key
from task_api.db import create_db_engine, create_session_factory
from task_api.errors import Conflict, Forbidden
from task_api.fields import Email
from task_api.logs import configure_logging
from task_api.migrate import create_database, migrate
from task_api.users import service
from task_api.users.schemas import AdminUserCreate
from task_api.worker import BoundedHttpToolsProtocol


def create_admin(settings: Settings, email: str, password: str | None) -> str:
    """Create an admin, or promote the account that already has this e-mail when the password is
    that account's own; returns what was done."""
    email = TypeAdapter(Email).validate_python(email)
    engine = create_db_engine(settings)
    try:
        with create_session_factory(engine)() as session:
            user = service.get_user_by_email(session, email)
            password = password or _ask_password(email, exists=user is not None)
            data = AdminUserCreate(email=email, password=password, is_admin=True)
            if user is None:
                user = service.create_user(session, data, settings.bcrypt_rounds)
                return f"created admin {user.email} (id {user.id})"
            if service.promote_to_admin(session, user, data.password, settings.bcrypt_rounds):
                return f"{user.email} is now an admin"
            return f"{user.email} is already an admin"
    except (Conflict, Forbidden) as exc:  # Conflict: someone registered the address meanwhile
        raise SystemExit(f"error: {exc.detail}") from None
    finally:
        engine.dispose()


NO_PASSWORD = "error: no password given: set ADMIN_PASSWORD or run this in a terminal"


def _ask_password(email: str, exists: bool) -> str:
    """An existing account's own password, asked once; a new account's, asked twice."""
    if not sys.stdin.isatty():
        raise SystemExit(NO_PASSWORD)
    try:
        if exists:
            return getpass.getpass(f"{email} is already registered; its password: ")
        password = getpass.getpass(f"Password for the new admin {email}: ")
        repeated = getpass.getpass("Repeat it: ")
    except (EOFError, KeyboardInterrupt):
        raise SystemExit(NO_PASSWORD) from None
    if password != repeated:
        raise SystemExit("error: the passwords do not match")
    return password


def serve_here(settings: Settings, host: str, port: int) -> None:
    """The API in this one process. The metrics port is gunicorn's, so /metrics is not served
    here, and a port equal to METRICS_PORT must not be taken for it."""
    app = create_app(settings.model_copy(update={"metrics_port": 0}))
    uvicorn.run(
        app,
        host=host,
        port=port,
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips,
        http=BoundedHttpToolsProtocol,  # the header section capped, as under gunicorn
    )


def run_celery(settings: Settings, command: str) -> None:
    """A Celery worker or beat with this service's settings and log format; both stop cleanly
    on SIGTERM (a worker finishes what it holds, and hands back what it has not started)."""
    if command == "worker" and settings.worker_concurrency > settings.db_pool_size + settings.db_max_overflow:
        raise SystemExit(
            "error: WORKER_CONCURRENCY must not exceed DB_POOL_SIZE + DB_MAX_OVERFLOW: "
            "each of its threads may hold a connection"
        )
    configure_logging(settings.effective_log_format, settings.log_level)
    if settings.log_level != "DEBUG":  # a line per sweep, every second, says nothing the metrics do not
        for chatty in ("celery.beat", "celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    from task_api.reminders import jobs  # noqa: PLC0415  (Celery is loaded by these two commands alone)

    if command == "worker":
        jobs.app.worker_main(["worker", f"--loglevel={settings.log_level}", "--without-gossip", "--without-mingle"])
    else:
        jobs.app.start(["beat", f"--loglevel={settings.log_level}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m task_api")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate, then run the API in one process (the embedded default)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    migrate_command = commands.add_parser("migrate", help="bring the database up to the newest migration")
    migrate_command.add_argument(
        "--create-database", action="store_true", help="first create the PostgreSQL database if it does not exist"
    )
    admin = commands.add_parser(
        "create-admin", help="create an admin, or promote an existing user (password from ADMIN_PASSWORD or a prompt)"
    )
    admin.add_argument("email")
    commands.add_parser("worker", help="a Celery worker: sweeps for due reminders and mails them (SMTP_URL)")
    commands.add_parser("beat", help="Celery beat, which starts the sweeps: run exactly one")
    args = parser.parse_args(argv)

    settings = load_settings()
    if args.command == "serve":
        refuse_weak_key(settings, args.host)
    if args.command in {"worker", "beat"}:
        run_celery(settings, args.command)
        return 0
    try:
        if args.command == "create-admin":
            password = settings.admin_password.get_secret_value() if settings.admin_password else None
            print(create_admin(settings, args.email, password))
        else:
            if getattr(args, "create_database", False) and create_database(settings):
                print(f"created the database {make_url(settings.database_url).database}")
            migrate(settings)
            if args.command == "serve":
                serve_here(settings, args.host, args.port)
    except ValidationError as exc:
        messages = "; ".join(f"{'.'.join(map(str, error['loc'])) or 'input'}: {error['msg']}" for error in exc.errors())
        print(f"error: {messages}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"error: cannot reach the database: {exc.orig}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a migration that refuses to run over the data it found
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
