import ipaddress
from email.utils import parseaddr
from typing import Literal
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from task_api.sentinel import SENTINEL_SCHEME, parse_sentinel_url

# What PostgreSQL's docs, its Docker image and hosts such as Heroku hand out; SQLAlchemy would
# read either as psycopg 3, which is not installed.
BARE_POSTGRES_SCHEMES = ("postgres://", "postgresql://")
REDIS_SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME)
PLACEHOLDER_SECRET = "change-me-development-secret-key-not-for-production"
# Keys anyone can read in this repository: the development default and the one `make docker-check` uses.
PUBLISHED_SECRETS = frozenset({PLACEHOLDER_SECRET, "docker-check-only-secret-key-not-for-use-anywhere"})
MIN_SECRET_BYTES = 32
SMTP_SCHEMES = {"smtp": 25, "smtps": 465}
MAKE_A_KEY = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"


class Settings(BaseSettings):
    """Every knob of the service, read from the environment (or a `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    app_env: Literal["development", "production", "test"] = "development"
    secret_key: str = PLACEHOLDER_SECRET
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "task_api"
    jwt_audience: str = "task_api"
    access_token_expire_minutes: int = Field(default=15, ge=1)
    refresh_token_expire_days: int = Field(default=7, ge=1)
    # a login ends this long after it began, however often refreshed (one second at the least)
    session_max_days: float = Field(default=30, ge=1 / 86_400)
    bcrypt_rounds: int = Field(default=12, ge=4, le=31)

    database_url: str = "sqlite:///task_api.sqlite3"
    threadpool_size: int = Field(default=4, ge=1)  # measured: see gunicorn.conf.py
    db_pool_size: int = Field(default=4, ge=1)
    db_max_overflow: int = Field(default=2, ge=0)
    db_pool_timeout: float = Field(default=5.0, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_connect_timeout: int = Field(default=3, ge=1)
    db_statement_timeout_ms: int = Field(default=5000, ge=0)

    redis_url: str | None = None  # None: an in-process stand-in, for one process only
    redis_socket_timeout: float = Field(default=2.0, gt=0)
    redis_max_connections: int = Field(default=50, ge=1)

    rate_limit: str = "100/minute"
    auth_rate_limit: str = "10/minute"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    cookie_secure: bool | None = None  # None: Secure in production only
    cors_origins: str = ""  # comma-separated origins whose pages may call the API (and post /login's form)

    host: str = "0.0.0.0"  # noqa: S104  (the production server listens on every interface)
    port: int = Field(default=8000, ge=1, le=65535)
    metrics_port: int = Field(default=9000, ge=0, le=65535)  # /metrics answers here only; 0: no metrics
    metrics_host: str = "127.0.0.1"  # where METRICS_PORT listens: this machine only unless widened
    web_concurrency: int | None = Field(default=None, ge=1)
    forwarded_allow_ips: str = ""  # proxies whose X-Forwarded-For is believed; none unless named
    max_requests: int = Field(default=0, ge=0)  # recycle a worker after this many requests; 0: never
    log_format: Literal["json", "text"] | None = None  # None: json in production, text elsewhere
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    admin_password: SecretStr | None = None  # read only by `python -m task_api create-admin`

    smtp_url: str | None = None  # where reminders are mailed; None: written to the log instead
    mail_from: str = "task_api <reminders@localhost>"
    smtp_timeout: float = Field(default=10, gt=0)  # per step of the SMTP conversation
    reminder_sweep_seconds: float = Field(default=1, gt=0, le=5)  # how often beat looks for due reminders
    # how long a claimed reminder stays its worker's; a dead worker's are claimed again after it
    reminder_lease_seconds: float = Field(default=30, gt=0, le=50)
    reminder_retry_seconds: float = Field(default=10, gt=0)  # the first wait after a deferral, doubling to 1 h
    reminder_batch_size: int = Field(default=50, ge=1, le=1000)  # reminders per delivery job
    worker_concurrency: int = Field(default=4, ge=1)  # threads of `python -m task_api worker`
    worker_metrics_port: int = Field(default=9001, ge=0, le=65535)  # the worker's /metrics; 0: none

    @field_validator("database_url")
    @classmethod
    def _installed_driver(cls, url: str) -> str:
        """A bare `postgres://` or `postgresql://` means the pinned psycopg2; an explicit `+driver` stays."""
        for scheme in BARE_POSTGRES_SCHEMES:
            if url.startswith(scheme):
                url = "postgresql+psycopg2://" + url.removeprefix(scheme)
        scheme = url.partition("://")[0]
        try:
            dialect = make_url(url).get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"names {scheme}://, which SQLAlchemy does not know") from None
        except ArgumentError:
            raise ValueError("is not a database URL, such as postgresql://user:password@host:5432/task_api") from None
        try:
            dialect.import_dbapi()
        except ImportError as exc:
            raise ValueError(
                f"names {scheme}://, whose driver is not installed ({exc}): use postgresql:// (psycopg2) or sqlite:///"
            ) from None
        return url

    @field_validator("redis_url")
    @classmethod
    def _known_redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        scheme = url.partition("://")[0]
        if scheme not in REDIS_SCHEMES:
            raise ValueError(f"must start with one of {', '.join(f'{known}://' for known in REDIS_SCHEMES)}")
        if scheme == SENTINEL_SCHEME:
            parse_sentinel_url(url)
        return url

    @field_validator("smtp_url")
    @classmethod
    def _known_smtp_url(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in SMTP_SCHEMES:
            raise ValueError("must start with smtp:// (STARTTLS when offered) or smtps://")
        return url

    @field_validator("mail_from")
    @classmethod
    def _mail_address(cls, value: str) -> str:
        _, address = parseaddr(value)
        if "@" not in address or any(char in value for char in "\r\n"):
            raise ValueError("must be an address, optionally with a name: Tasks <reminders@example.com>")
        return value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        for name, limit in (("RATE_LIMIT", self.rate_limit), ("AUTH_RATE_LIMIT", self.auth_rate_limit)):
            if len(parse_many(limit)) != 1:
                raise ValueError(f"{name} must be one limit, such as 100/minute")
        if self.threadpool_size > self.db_pool_size + self.db_max_overflow:
            raise ValueError(
                "THREADPOOL_SIZE must not exceed DB_POOL_SIZE + DB_MAX_OVERFLOW: every running thread may hold "
                "one connection, and a thread left waiting for one stalls its whole request"
            )
        if self.metrics_port == self.port:
            raise ValueError("METRICS_PORT must differ from PORT: /metrics is kept off the API's port")
        if self.reminder_lease_seconds < 3 * self.smtp_timeout:
            raise ValueError(
                "REMINDER_LEASE_SECONDS must be at least 3 x SMTP_TIMEOUT: a reminder's mail must be sent "
                "well within its lease, or another worker may claim and send it too"
            )
        if len(self.secret_key.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes long: make one with {MAKE_A_KEY}")
        if self.app_env == "production":
            if weakness := self.key_weakness:
                raise ValueError(f"SECRET_KEY {weakness}: set a random one, e.g. {MAKE_A_KEY}")
            if self.redis_url is None:
                raise ValueError("REDIS_URL must name a real Redis in production")
        return self

    @property
    def key_weakness(self) -> str | None:
        """Why SECRET_KEY must not sign tokens a server hands out, if it must not (a short one is
        refused everywhere, by the validator above)."""
        if self.secret_key in PUBLISHED_SECRETS:
            return "is a key published in this repository"
        if len(set(self.secret_key)) == 1:
            return "is one character repeated"
        return None

    @property
    def embedded(self) -> bool:
        """The try-it-out default: a SQLite file and the in-process Redis stand-in."""
        return self.uses_sqlite and self.redis_url is None

    @property
    def secure_cookies(self) -> bool:
        return self.app_env == "production" if self.cookie_secure is None else self.cookie_secure

    @property
    def allowed_origins(self) -> frozenset[str]:
        return frozenset(origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip())

    @property
    def effective_log_format(self) -> str:
        return self.log_format or ("json" if self.app_env == "production" else "text")

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def explain(error: ValidationError) -> str:
    """One line naming each bad setting by its environment variable."""
    return "; ".join(
        f"{'.'.join(map(str, problem['loc'])).upper() or 'settings'}: {problem['msg'].removeprefix('Value error, ')}"
        for problem in error.errors()
    )


def load_settings() -> Settings:
    """The settings from the environment, or an exit with one line instead of a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SystemExit(f"error: {explain(exc)}") from None


def refuse_weak_key(settings: Settings, host: str | None = None) -> None:
    """Exit, in one line, rather than serve tokens signed with a key an attacker may know.

    Only the embedded default bound to a loopback `host` may keep the development key: nothing
    off this machine can reach it.
    """
    if settings.embedded and host is not None and _is_loopback(host):
        return
    if weakness := settings.key_weakness:
        raise SystemExit(f"error: SECRET_KEY {weakness}: set a random one, e.g. {MAKE_A_KEY}")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
