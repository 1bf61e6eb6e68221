from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from task_api.auth.tokens import Tokens
from task_api.cache import create_redis
from task_api.config import Settings
from task_api.db import create_db_engine, create_session_factory
from task_api.ratelimit import RateLimiter


@dataclass
class Runtime:
    """What one process holds for every request: settings, pools and the objects built on them."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    redis: Redis
    tokens: Tokens
    limiter: RateLimiter

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
            limiter=RateLimiter(settings, redis),
        )

    async def close(self) -> None:
        """Close both pools; they reconnect if used again (tests serve one app from many loops)."""
        await self.redis.connection_pool.disconnect()
        self.engine.dispose()


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime
