"""Logging: one line per request, JSON in production, the request id on every line.

Records are formatted where they are made, then queued to a listener thread, so neither
the event loop nor a worker thread ever waits on a slow stderr.
"""

import atexit
import json
import logging
import logging.handlers
import queue
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

REQUEST_FIELDS = ("method", "path", "status", "duration_ms", "user_id")
# C0, DEL and C1, and the separators that Python's splitlines takes for line ends
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_listener: logging.handlers.QueueListener | None = None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        entry.update({field: getattr(record, field) for field in REQUEST_FIELDS if hasattr(record, field)})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """One line per record: control characters from a request (a path with %0a) are escaped
    as \\n, \\x1b..., so no client can forge a line. A traceback follows on lines of its own."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  (overrides logging's)
        return CONTROL_CHARACTERS.sub(lambda match: ascii(match[0])[1:-1], super().formatMessage(record))


def configure_logging(log_format: str, level: str) -> None:
    """Route every log record through one queue to stderr; safe to call again (tests build many apps)."""
    global _listener  # noqa: PLW0603  (one listener per process)
    if _listener is None:
        atexit.register(_stop_listener)
    else:
        _listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(records)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the app logs each request itself
    _listener = logging.handlers.QueueListener(records, logging.StreamHandler(sys.stderr))
    _listener.start()


def _stop_listener() -> None:
    if _listener is not None:
        _listener.stop()
