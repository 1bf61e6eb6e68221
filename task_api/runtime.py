from dataclasses import dataclass

from redis import ConnectionPool, Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from task_api.auth.tokens import Tokens
from task_api.cache import create_redis, create_redis_pool
from task_api.config import Settings
from task_api.db import create_db_engine, create_session_factory
from task_api.ratelimit import RateLimiter


@dataclass
class Runtime:
    """What one process holds for every request: settings, pools and the objects built on them."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    redis_pool: ConnectionPool
    redis: Redis
    tokens: Tokens
    limiter: RateLimiter

    @classmethod
    def start(cls, settings: Settings) -> "Runtime":
        engine = create_db_engine(settings)
        redis_pool = create_redis_pool(settings)
        redis = create_redis(redis_pool)
        return cls(
            settings=settings,
            engine=engine,
            session_factory=create_session_factory(engine),
            redis_pool=redis_pool,
            redis=redis,
            tokens=Tokens(settings, redis),
            limiter=RateLimiter(settings, redis),
        )

    def close(self) -> None:
        self.engine.dispose()
        self.redis_pool.disconnect()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
