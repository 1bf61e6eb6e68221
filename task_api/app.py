from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from task_api.auth.routes import auth_layout
from task_api.auth.routes import router as auth_router
from task_api.config import Settings
from task_api.errors import install_error_handlers
from task_api.gate import DOCS_ASSETS, gate, gate_failures_before_routes, require_gate
from task_api.health import router as health_router
from task_api.logs import configure_logging
from task_api.metrics import MetricsMiddleware
from task_api.middleware import (
    REQUEST_ID_HEADER,
    BodySizeLimitMiddleware,
    JsonCORSMiddleware,
    RequestContextMiddleware,
    TrailingSlashMiddleware,
)
from task_api.ratelimit import RATE_LIMIT_HEADERS
from task_api.reminders.embedded import InProcessReminders
from task_api.runtime import Runtime
from task_api.tasks.routes import router as tasks_router
from task_api.users.routes import router as users_router


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.effective_log_format, settings.log_level)
    runtime = Runtime.start(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threadpool_size
        reminders = InProcessReminders(runtime.session_factory, settings) if settings.embedded else None
        if reminders:
            reminders.start()
        yield
        if reminders:
            await anyio.to_thread.run_sync(reminders.stop)
        runtime.close()

    app = FastAPIOffline(  # Swagger UI and ReDoc from assets the app serves itself, no CDN
        title="task_api",
        version="1.0.0",
        description="User accounts and their tasks, behind JWT auth whose logout really revokes.",
        lifespan=lifespan,
        redirect_slashes=False,  # TrailingSlashMiddleware answers /tasks/ itself: no 307 to follow
        static_url=DOCS_ASSETS,
    )
    app.state.runtime = runtime
    limited = [Depends(gate)]  # first of each route's dependencies: a 429 comes before any database work
    app.include_router(health_router)
    app.include_router(auth_router, dependencies=limited)
    app.include_router(auth_layout, dependencies=limited)
    app.include_router(users_router, dependencies=limited)
    app.include_router(tasks_router, dependencies=limited)
    require_gate(app)
    install_error_handlers(app)
    gate_failures_before_routes(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.metrics_port:
        app.add_middleware(MetricsMiddleware, port=settings.metrics_port)
    app.add_middleware(TrailingSlashMiddleware)  # outside the metrics, which then see the route it reaches
    if settings.allowed_origins:
        app.add_middleware(
            JsonCORSMiddleware,
            allow_origins=sorted(settings.allowed_origins),
            allow_credentials=True,  # the refresh cookie
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=[*RATE_LIMIT_HEADERS, "Retry-After", "ETag", "Location", REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestContextMiddleware)
    return app
