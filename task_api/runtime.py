from dataclasses import dataclass

from redis import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from task_api.auth.tokens import Tokens
from task_api.config import Settings
from task_api.db import create_db_engine, create_session_factory
from task_api.ratelimit import RateLimits
from task_api.store import create_redis


@dataclass
class Runtime:
    """What one process holds for every request: settings, pools and the objects built on them."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    redis: Redis
    tokens: Tokens
    rate_limits: RateLimits

    @classmethod
    def start(cls, settings: Settings) -> "Runtime":
        engine = create_db_engine(settings)
        redis = create_redis(settings)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            redis=redis,
            tokens=Tokens(settings, redis),
            rate_limits=RateLimits(settings, redis),
        )

    def after_fork(self) -> None:
        """Drop any connection inherited from the parent process (none is opened before the fork)."""
        self.engine.dispose(close=False)
        self.redis.connection_pool.reset()

    def close(self) -> None:
        """Close both pools; they reconnect if used again (tests serve one app many times)."""
        self.redis.connection_pool.disconnect()
        self.engine.dispose()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
