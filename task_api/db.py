import select
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry
from starlette.concurrency import run_in_threadpool

from task_api.config import Settings
from task_api.metrics import DB_CHECKED_OUT

COUNTED = "task_api_counted"  # in a pool entry's info while the metrics count it as checked out


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite keeps no offset of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime}


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_db_engine(settings: Settings) -> Engine:
    if settings.uses_sqlite:
        engine = create_engine(
            settings.database_url,
            isolation_level="AUTOCOMMIT",
            connect_args={"check_same_thread": False, "timeout": settings.db_pool_timeout},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        _count_checkouts(engine)
        return engine
    engine = create_engine(
        settings.database_url,
        isolation_level="AUTOCOMMIT",  # reads need no BEGIN/COMMIT round trips; writes open one
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        # No `options` startup parameter: PgBouncer refuses it. The statement timeout and UTC are
        # the database's own defaults, set by every migration (migrations/env.py).
        connect_args={"connect_timeout": settings.db_connect_timeout, "application_name": "task_api"},
    )
    event.listen(engine, "checkout", _discard_if_closed_by_server)
    _count_checkouts(engine)  # after the discard, which makes the pool retry the checkout
    return engine


def _count_checkouts(engine: Engine) -> None:
    """Checked-out connections, for the metrics. A checkout that fails still sends `checkin`,
    but no `checkout`: only a connection counted in is counted out."""
    event.listen(engine, "checkout", _counted_out)
    event.listen(engine, "checkin", _counted_in)


def _counted_out(_: DBAPIConnection, record: ConnectionPoolEntry, *__: object) -> None:
    record.info[COUNTED] = True
    DB_CHECKED_OUT.inc()


def _counted_in(_: DBAPIConnection | None, record: ConnectionPoolEntry) -> None:
    if record.info.pop(COUNTED, False):
        DB_CHECKED_OUT.dec()


def _discard_if_closed_by_server(dbapi_connection: DBAPIConnection, *_: object) -> None:
    """The pre-ping, without its round trip.

    An idle connection the server has ended (a restart, pg_terminate_backend, a crash) has its
    goodbye or EOF waiting on the socket, so a zero-timeout select finds it; the pool then
    replaces the connection before the request uses it. A silent network loss is left to the
    connect and statement timeouts, as a ping would wait on it too.
    """
    readable = select.select([dbapi_connection.fileno()], [], [], 0)[0]
    if readable:
        raise DisconnectionError("the server closed this connection while it was idle")


def _sqlite_pragmas(connection: DBAPIConnection, _: object) -> None:
    """Foreign keys on (for ON DELETE CASCADE), and WAL so readers do not wait for the writer."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def create_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One Session per request. Opening one does no I/O (it connects on first use), so this runs
    on the event loop; closing one that still holds a transaction (a failed write) takes a thread."""
    session = request.app.state.runtime.session_factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


@contextmanager
def writing(session: Session) -> Iterator[None]:
    """A transaction, for a write whose statements must stand or fall together.

    Connections run in autocommit, so a read or a one-statement write costs only its own
    round trip. Here the transaction is opened by hand: PostgreSQL's plain BEGIN, and on
    SQLite BEGIN IMMEDIATE, which takes the write lock before the first read so two
    conditional updates cannot both read the old row (SQLite has no SELECT ... FOR UPDATE).
    """
    connection = session.connection()
    connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.dialect.name == "sqlite" else "BEGIN")
    try:
        yield
        session.flush()
        connection.exec_driver_sql("COMMIT")
    except BaseException:
        with suppress(DBAPIError):  # the failed statement may already have ended it, or the connection
            connection.exec_driver_sql("ROLLBACK")
        session.rollback()
        raise
    session.commit()


def end_step(session: Session) -> None:
    """End the session's transaction now, before this threadpool step returns.

    FastAPI runs each sync dependency, the endpoint and the response validation as
    separate threadpool steps; a connection kept across them would wait for a thread while
    holding a connection, and a burst could leave every thread waiting for a connection
    that only a waiting request can free. Ending each transaction inside its step keeps
    the arithmetic in gunicorn.conf.py true. Reads and one-statement writes run in
    autocommit, so this sends nothing to the database; loaded objects stay usable.
    """
    session.commit()
