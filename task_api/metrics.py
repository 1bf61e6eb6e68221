"""Prometheus metrics, and the port they are served on.

Under gunicorn every worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR (set by
gunicorn.conf.py before this module is imported), and a scrape, served by whichever worker
accepts it, adds up all of them. Without that directory (`python -m task_api serve`, tests)
the samples live in the process.

/metrics answers only on METRICS_PORT, which gunicorn binds beside PORT; on the API's port it
is an unknown path. No Service or Ingress of the chart exposes the metrics port, so Prometheus
reaches it from inside the cluster and nothing outside does.
"""

import os
import time

import anyio.to_thread
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "<unmatched>"  # a path no route knows: its raw text would be a label per scanner probe

REQUESTS = Counter(
    "task_api_requests_total", "Requests answered, by route template and status", ["method", "route", "status"]
)
LATENCY = Histogram(
    "task_api_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by route template and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge("task_api_requests_in_flight", "Requests being served now", multiprocess_mode="livesum")
DB_CHECKED_OUT = Gauge(
    "task_api_db_connections_checked_out", "Database connections in use by requests", multiprocess_mode="livesum"
)
RATE_LIMITED = Counter("task_api_rate_limited_total", "Requests refused with a 429, by budget", ["budget"])
DEPENDENCY_ERRORS = Counter("task_api_dependency_errors_total", "Failed calls to PostgreSQL or Redis", ["dependency"])
REMINDERS_SENT = Counter("task_api_reminders_sent_total", "Reminder mails the mail server accepted")
REMINDERS_FAILED = Counter(
    "task_api_reminders_failed_total",
    "Reminder mails not sent: deferred (4xx or unreachable, tried again later), refused (5xx, dropped) "
    "or expired (deferred 30 times, about a day; dropped)",
    ["outcome"],
)
REMINDER_LAG = Histogram(
    "task_api_reminder_lag_seconds",
    "Time from a reminder's remind_at to the mail server accepting it",
    buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)


def exposition(accept: str) -> tuple[bytes, str]:
    """Every sample, in the format the scraper accepts, and its content type: all workers'
    samples under gunicorn, else this process's."""
    render, content_type = choose_encoder(accept)
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return render(REGISTRY), content_type
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return render(registry), content_type


class MetricsMiddleware:
    """Counts and times every request by its route template, and serves /metrics on `port` alone.

    Pure ASGI and in memory (a sample is a write to a memory-mapped file), so it costs the
    request path a few microseconds; `make bench` measures it.
    """

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.port = port
        self._series: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}  # saves .labels()' lock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if (scope.get("server") or (None, None))[1] == self.port:
            await self._scrape(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            IN_FLIGHT.dec()
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            labels = (method, getattr(scope.get("route"), "path", UNMATCHED), str(status))
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
            series[0].inc()
            series[1].observe(time.perf_counter() - started)

    async def _scrape(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/metrics" or scope["method"] not in {"GET", "HEAD"}:
            response: Response = JSONResponse({"detail": "Not Found"}, status_code=404)
        else:
            accept = Headers(scope=scope).get("accept", "")
            body, content_type = await anyio.to_thread.run_sync(exposition, accept)  # reads every worker's files
            response = Response(body, headers={"Content-Type": content_type})
        await response(scope, receive, send)
