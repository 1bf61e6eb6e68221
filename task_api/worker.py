"""gunicorn's uvicorn worker: a bounded request header section, and a shutdown that drops
no request.

httptools has no limit on a request's header section, and its cost grows faster than the
section (the parser joins a header that arrives over many reads one piece at a time): four
clients sending megabytes of headers blocked a worker past its timeout. Here the section is
counted as it arrives, before the parser sees it, and one over MAX_HEADER_BYTES is refused.

When a worker stops (recycled after MAX_REQUESTS, a reload, a scale-in), uvicorn closes
its idle keep-alive connections at once. A client may have sent its next request on such
a connection already, and the close resets it: the request fails although the server was
shutting down gracefully. Here an idle connection instead answers its next request with
`Connection: close`, and a connection that stays idle closes at the keep-alive timeout,
as it would have anyway.
"""

import json
import uuid
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn_worker import UvicornWorker

MAX_HEADER_BYTES = 64 * 1024
HEADER_END = b"\r\n\r\n"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses a request whose request line and headers are over MAX_HEADER_BYTES with a 431
    and `Connection: close`, once the requests before it on the connection are answered."""

    header_bytes = 0  # of the header section being received
    in_body = False  # from the end of a request's headers to the end of its body
    tail = b""  # the end of the last read, where a blank line may have begun
    refused = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.in_body:  # a request pipelined behind the body in this read is counted from the next read
            super().data_received(data)
        elif data.endswith(HEADER_END) and self.header_bytes + len(data) <= MAX_HEADER_BYTES:
            self.header_bytes += len(data)  # whole requests, or the rest of one: none is left half-counted
            super().data_received(data)
        else:
            self._receive_in_parts(data)

    def _receive_in_parts(self, data: bytes) -> None:
        """Feed the parser up to the end of each header section, counting it, so that what
        follows in the same read (a body, the next request) is not counted with it."""
        start = 0
        while not self.in_body and start < len(data):
            end = self._end_of_header_section(data, start)
            self.header_bytes += end - start
            if self.header_bytes > MAX_HEADER_BYTES:
                self._refuse()
                return
            super().data_received(data[start:end])
            if self.transport.is_closing():
                return
            start = end
        self.tail = data[-3:]
        if start < len(data):
            super().data_received(data[start:])

    def _end_of_header_section(self, data: bytes, start: int) -> int:
        """Past the first blank line from start (one begun in the last read included), or
        len(data): never past the end of the section, and too early only costs another turn."""
        if start == 0:
            found = (self.tail + data[:3]).find(HEADER_END)
            if found >= 0:
                return found + len(HEADER_END) - len(self.tail)
        found = data.find(HEADER_END, start)
        return len(data) if found < 0 else found + len(HEADER_END)

    def on_headers_complete(self) -> None:
        self.in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_body = False
        self.header_bytes = 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.refused and self.cycle.response_complete:
            self._answer_too_large()

    def _refuse(self) -> None:
        self.logger.warning("Refused a request whose header section is over %d bytes", MAX_HEADER_BYTES)
        self.refused = True
        if self.cycle is None or self.cycle.response_complete:
            self._answer_too_large()

    def _answer_too_large(self) -> None:
        self._answer_and_close(431, f"Request header section is over {MAX_HEADER_BYTES} bytes")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, as JSON like every other."""
        self._answer_and_close(400, msg)

    def _answer_and_close(self, status: int, detail: str) -> None:
        """An answer from below the app, which never saw the request: JSON, a request id of its
        own, and the connection closed."""
        if self.transport.is_closing():
            return
        body = json.dumps({"detail": detail}).encode()
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", uuid.uuid4().hex.encode()),
            (b"connection", b"close"),
        ]
        lines = [name + b": " + value + b"\r\n" for name, value in headers]
        self.transport.write(b"".join([STATUS_LINE[status], *lines, b"\r\n", body]))
        self.transport.close()


class DrainingHttpToolsProtocol(BoundedHttpToolsProtocol):
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
