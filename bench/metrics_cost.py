"""What the metrics cost each request: `python -m bench.metrics_cost`, run by bench.run.

Times MetricsMiddleware around an app that answers at once, against that app alone, with the
samples in memory-mapped files as under gunicorn, so the difference is the middleware's own
work per request. It runs in a process of its own: prometheus_client picks where samples go
when it is first imported.
"""

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

REQUESTS = 100_000
ROUNDS = 5

Message = dict[str, Any]


class Route:
    path = "/tasks/{task_id}"


ROUTE = Route()


async def answer(scope: dict[str, Any], receive: Callable[[], Awaitable[Message]], send: Callable) -> None:
    scope["route"] = ROUTE  # as Starlette's router leaves it
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def send(_: Message) -> None:
    return None


async def seconds_per_request(app: Callable[..., Awaitable[None]]) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            scope = {"type": "http", "method": "GET", "path": "/tasks/1", "server": ("127.0.0.1", 8000)}
            await app(scope, receive, send)
        best = min(best, (time.perf_counter() - started) / REQUESTS)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        from task_api.metrics import MetricsMiddleware  # noqa: PLC0415  (only once the directory is set)

        bare = asyncio.run(seconds_per_request(answer))
        measured = asyncio.run(seconds_per_request(MetricsMiddleware(answer, port=9000)))
    print(json.dumps({"requests": REQUESTS, "rounds": ROUNDS, "cost_us": round((measured - bare) * 1e6, 2)}))


if __name__ == "__main__":
    main()
