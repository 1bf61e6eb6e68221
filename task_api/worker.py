"""gunicorn's uvicorn worker, with a shutdown that drops no request.

When a worker stops (recycled after MAX_REQUESTS, a reload, a scale-in), uvicorn closes
its idle keep-alive connections at once. A client may have sent its next request on such
a connection already, and the close resets it: the request fails although the server was
shutting down gracefully. Here an idle connection instead answers its next request with
`Connection: close`, and a connection that stays idle closes at the keep-alive timeout,
as it would have anyway.
"""

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    draining = False

    def shutdown(self) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self.draining = True
        else:
            self.cycle.keep_alive = False

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False


class DrainingUvicornWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {"loop": "auto", "http": DrainingHttpToolsProtocol}
